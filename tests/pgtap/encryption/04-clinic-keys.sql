-- Each clinic has its own keys: another clinic's key cannot decrypt a value,
-- and the same SSN has unrelated blind indexes in two clinics.
begin;
select plan(5);

select set_config('app.master_key', repeat('3d', 32), true);
select set_config('test.a', clinicdb_tap.create_clinic('keys A')::text, true);
select set_config('test.b', clinicdb_tap.create_clinic('keys B')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.a')::uuid);
select clinicdb.rotate_clinic_key(current_setting('test.b')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.a')::uuid);
insert into patients (id, mrn, given_name, family_name, ssn)
values ('00000000-0000-4000-8000-000000000401', 'K-1', 'Ann', 'A', '123-45-6789');
select clinicdb_tap.authenticate_as_app(current_setting('test.b')::uuid);
insert into patients (id, mrn, given_name, family_name, ssn)
values ('00000000-0000-4000-8000-000000000402', 'K-1', 'Bob', 'B', '123-45-6789');
select clinicdb_tap.clear_authentication();

select isnt((select wrapped_key from clinicdb.clinic_keys where clinic_id = current_setting('test.a')::uuid),
            (select wrapped_key from clinicdb.clinic_keys where clinic_id = current_setting('test.b')::uuid),
    'two clinics get different data keys');
-- Clinic B's keys applied to clinic A's value, with A's own row binding.
select throws_ok(
    $$select clinicdb._open(p.ssn_ciphertext, clinicdb._aad('public.patients.ssn', p.id), 'public.patients.ssn',
                            k.clinic_id, k.enc_keys, k.mac_keys, k.problem)
        from public.patients p, clinicdb._clinic_keyring(current_setting('test.b')::uuid) k
       where p.id = '00000000-0000-4000-8000-000000000401'$$,
    'XX001', 'cannot decrypt public.patients.ssn: the value failed its integrity check',
    'another clinic''s key cannot decrypt a value: it fails the integrity check, never returns garbage');
-- A DBA copies clinic A's ciphertext into clinic B's row.
update public.patients set ssn_ciphertext = (select ssn_ciphertext from public.patients
                                              where id = '00000000-0000-4000-8000-000000000401')
 where id = '00000000-0000-4000-8000-000000000402';
select clinicdb_tap.authenticate_as_app(current_setting('test.b')::uuid);
select throws_ok($$select ssn from patients_decrypted$$, 'XX001', null,
    'a value copied from another clinic''s row cannot be read in this clinic');
select is((select count(*)::int from patients_decrypted where ssn_blind_index is not null and clinic_id <> current_setting('test.b')::uuid), 0,
    'the app of clinic B sees none of clinic A''s rows through the view');
select clinicdb_tap.clear_authentication();
select isnt((select ssn_blind_index from public.patients where id = '00000000-0000-4000-8000-000000000401'),
            (select ssn_blind_index from public.patients where id = '00000000-0000-4000-8000-000000000402'),
    'the same SSN has different blind indexes in two clinics (no cross-clinic linkage)');

select * from finish();
rollback;
