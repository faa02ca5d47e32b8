-- A staff psql login sees its clinic's ciphertext but decrypts nothing
-- without the master key; given the key, it decrypts its own clinic only.
begin;
select plan(3);

select set_config('app.master_key', repeat('f6', 32), true);
select set_config('test.own', clinicdb_tap.create_clinic('staff own')::text, true);
select set_config('test.other', clinicdb_tap.create_clinic('staff other')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.own')::uuid);
select clinicdb.rotate_clinic_key(current_setting('test.other')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.own')::uuid);
insert into patients (mrn, given_name, family_name, ssn) values ('ST-1', 'Own', 'Clinic', '101-01-1001');
select clinicdb_tap.authenticate_as_app(current_setting('test.other')::uuid);
insert into patients (mrn, given_name, family_name, ssn) values ('ST-2', 'Other', 'Clinic', '202-02-2002');
select clinicdb_tap.clear_authentication();
select clinicdb_tap.create_staff_login('enc_staff_nurse', current_setting('test.own')::uuid);

select set_config('app.master_key', '', true);
select clinicdb_tap.authenticate_as('enc_staff_nurse');
select throws_ok($$select ssn from patients_decrypted$$, '42501', null,
    'a staff login without the master key cannot decrypt');
select set_config('app.master_key', repeat('f6', 32), true);
select set_config('app.clinic_id', current_setting('test.other'), true);  -- a staff login cannot pick another clinic
select is((select array_agg(ssn) from patients_decrypted), array['101-01-1001'],
    'a staff login given the key decrypts its own clinic''s values only');
select is((select count(*)::int from patients_decrypted where mrn = 'ST-2'), 0,
    'setting app.clinic_id does not open another clinic to a staff login');
select clinicdb_tap.clear_authentication();

select * from finish();
rollback;
