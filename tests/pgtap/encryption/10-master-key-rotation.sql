-- Master key rotation re-wraps the data keys without touching a row: every
-- stored value is byte-for-byte the same, the new key reads them, the old
-- key no longer does.
begin;
select plan(6);

select set_config('app.master_key', repeat('a1', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('master rotation')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into patients (mrn, given_name, family_name, ssn) values ('MR-1', 'Rewrap', 'Me', '456-45-6456');
select clinicdb_tap.clear_authentication();
create temporary table before on commit drop as
    select md5(string_agg(coalesce(encode(ssn_ciphertext, 'hex'), '') || coalesce(encode(phone_ciphertext, 'hex'), ''),
                          ',' order by id)) as digest, max(xmin::text::bigint) as last_xmin
      from public.patients;

select set_config('app.new_master_key', repeat('b2', 32), true);
select cmp_ok(clinicdb.rewrap_clinic_keys(), '>=', 1, 'every live data key is re-wrapped');
select is((select md5(string_agg(coalesce(encode(ssn_ciphertext, 'hex'), '') || coalesce(encode(phone_ciphertext, 'hex'), ''),
                                 ',' order by id)) from public.patients),
          (select digest from before), 'no stored value changed');
select is((select count(distinct master_key_id)::int from clinicdb.clinic_keys where state <> 'shredded'), 1,
    'all keys are wrapped by the one new master key');

select set_config('app.master_key', repeat('b2', 32), true);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
select is((select ssn from patients_decrypted where mrn = 'MR-1'), '456-45-6456', 'the new master key reads the values');
select set_config('app.master_key', repeat('a1', 32), true);
select throws_ok($$select ssn from patients_decrypted where mrn = 'MR-1'$$, '28000', null,
    'the old master key no longer opens anything');
select clinicdb_tap.clear_authentication();
select throws_ok($$select clinicdb.rewrap_clinic_keys() from (select set_config('app.new_master_key', repeat('c3', 32), true)) s$$,
    '28000', null, 'a rewrap with anything but the current master key is refused, changing nothing');

select * from finish();
rollback;
