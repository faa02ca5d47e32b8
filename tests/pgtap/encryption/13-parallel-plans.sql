-- Decrypting and looking up keep working where the planner would run a query
-- in parallel (large tables): key caching uses set_config(), which parallel
-- mode forbids, so the key functions are PARALLEL UNSAFE and such queries
-- run serially instead of failing.
begin;
select plan(3);

select set_config('app.master_key', repeat('0c', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('parallel')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into patients (mrn, given_name, family_name, ssn)
select 'PA-' || g, 'Par', 'Allel', 'ssn-' || g from generate_series(1, 200) g;
set local parallel_setup_cost = 0;
set local parallel_tuple_cost = 0;
set local min_parallel_table_scan_size = 0;
-- force_parallel_mode was renamed debug_parallel_query in PostgreSQL 16.
select set_config(case when current_setting('server_version_num')::integer >= 160000
                       then 'debug_parallel_query' else 'force_parallel_mode' end, 'on', true);

select is((select count(ssn)::int from patients_decrypted), 200, 'a full decrypting scan works with parallel plans forced');
select is((select mrn from patients where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', 'ssn-42'))),
    'PA-42', 'a blind-index lookup works with parallel plans forced');
select is((select count(*)::int from patients where clinicdb.decrypt_value(ssn_ciphertext, 'public.patients', 'ssn', id) like 'ssn-%'),
    200, 'decrypt_value works with parallel plans forced');

select * from finish();
rollback;
