-- Reads of PHI are recorded by clinicdb.log_access(table, ids, purpose):
-- one 'access' row per id in the same trail, with the clinic in force and
-- the caller's context, which the caller cannot choose.
begin;
select plan(15);

select clinicdb_tap.create_clinic('Audit Reads') as clinic \gset
select clinicdb_tap.seed_reference(:'clinic') as patient \gset
select clinicdb_tap.create_clinic('Audit Reads Other') as other_clinic \gset
select clinicdb_tap.seed_reference(:'other_clinic') as other_patient \gset
select clinicdb_tap.create_staff_login('audit_reader_staff', :'clinic');

select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'dr-who', true), set_config('app.request_id', 'r-1', true);
select is(clinicdb.log_access('public.patients', array[:'patient']::uuid[], 'treatment'), 1,
          'log_access returns how many rows it logged');
select is(clinicdb.log_access('patients', array[:'patient', :'patient']::text[], 'billing'), 2,
          'ids may be given as text; each id is one row');
select clinicdb_tap.clear_authentication();

select results_eq(
    $$select table_name, row_id, action, purpose, app_user, request_id, clinic_id
        from clinicdb.audit_log where app_user = 'dr-who' order by id$$,
    format($$values ('public.patients', %1$L, 'access', 'treatment', 'dr-who', 'r-1', %2$L::uuid),
                    ('public.patients', %1$L, 'access', 'billing', 'dr-who', 'r-1', %2$L::uuid),
                    ('public.patients', %1$L, 'access', 'billing', 'dr-who', 'r-1', %2$L::uuid)$$,
           :'patient', :'clinic'),
    'each access row names the table, the row, the purpose, the user, the request and the clinic');
select is((select count(*)::int from clinicdb.audit_log where app_user = 'dr-who' and txid = txid_current()), 3,
          'access rows are written in the reading transaction');

select clinicdb_tap.authenticate_as('audit_reader_staff');
select is(clinicdb.log_access('public.patients', array[:'patient']::uuid[], 'front desk check-in'), 1,
          'staff in psql log their reads the same way');
select clinicdb_tap.clear_authentication();
select is((select clinic_id from clinicdb.audit_log where session_role = session_user and acting_role = 'audit_reader_staff'),
          :'clinic'::uuid, 'a staff access row belongs to the staff member''s clinic');

-- Refusals, each with an error that says what to do.
select clinicdb_tap.authenticate_as_app(:'clinic');
select throws_ok($$select clinicdb.log_access('public.patients', array['x']::text[], '  ')$$,
                 '22023', 'log_access needs a purpose', 'a read without a purpose is refused');
select throws_ok($$select clinicdb.log_access('public.patients', array['x']::text[], null)$$,
                 '22023', 'log_access needs a purpose', 'a NULL purpose is refused');
select throws_ok($$select clinicdb.log_access('clinicdb.audit_seals', array['1']::text[], 'x')$$,
                 '42501', null, 'a table the caller cannot read is refused');
select clinicdb_tap.authenticate_as_app(null);
select throws_ok($$select clinicdb.log_access('public.patients', array['x']::text[], 'treatment')$$,
                 '42501', 'no clinic is in force for this transaction', 'with no clinic in force nothing is logged');
select clinicdb_tap.authenticate_as('clinicdb_auditor');
select throws_ok($$select clinicdb.log_access('public.patients', array['x']::text[], 'treatment')$$,
                 '42501', null, 'the auditor (who reads no PHI) has no log_access');
select clinicdb_tap.authenticate_as('audit_reader_staff');
select throws_ok(format($$select clinicdb.log_access('public.patients', array[%L, %L]::uuid[], 'treatment')$$,
                        :'patient', :'other_patient'),
                 '42501', '1 of 2 ids are not rows of public.patients you can see: nothing was logged',
                 'staff cannot write another clinic''s row id into their access log');
select throws_ok($$select clinicdb.log_access('public.patients', array[gen_random_uuid()], 'treatment')$$,
                 '42501', '1 of 1 ids are not rows of public.patients you can see: nothing was logged',
                 'an id that names no row is refused');
select throws_ok($$select nextval('clinicdb.audit_log_id_seq')$$, '42501',
                 'permission denied for sequence audit_log_id_seq',
                 'staff cannot draw from the audit id sequence (an activity counter across clinics)');
select clinicdb_tap.clear_authentication();
select is((select count(*)::int from clinicdb.audit_log where purpose = 'treatment' and app_user is distinct from 'dr-who'), 0,
          'refused calls wrote nothing');

select * from finish();
rollback;
