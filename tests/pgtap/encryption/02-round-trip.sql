-- Every encrypted reference column round-trips: the app writes plaintext into
-- the table and reads the same plaintext back from the decrypting view.
begin;
select plan(9);

select set_config('app.master_key', repeat('1f', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('round trip')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);

insert into patients (id, mrn, given_name, family_name, ssn, phone)
values ('00000000-0000-4000-8000-000000000201', 'RT-1', 'Ada', 'Lovelace', '123-45-6789', '+44 20 7946 0018');
insert into medical_records (id, patient_id, notes)
values ('00000000-0000-4000-8000-000000000202', '00000000-0000-4000-8000-000000000201',
        'Allergic to penicillin. Naïve façade ✓ — 日本語');

select is((select ssn from patients_decrypted where mrn = 'RT-1'), '123-45-6789', 'patients.ssn round-trips');
select is((select phone from patients_decrypted where mrn = 'RT-1'), '+44 20 7946 0018', 'patients.phone round-trips');
select is((select notes from medical_records_decrypted where id = '00000000-0000-4000-8000-000000000202'),
    'Allergic to penicillin. Naïve façade ✓ — 日本語', 'medical_records.notes round-trips, Unicode included');

update patients set phone = '+1 555 0199' where mrn = 'RT-1';
select is((select phone from patients_decrypted where mrn = 'RT-1'), '+1 555 0199', 'an update writes the new plaintext');
select is((select ssn from patients_decrypted where mrn = 'RT-1'), '123-45-6789',
    'an update that does not name a column leaves its value as it was');
update patients set phone_ciphertext = null where mrn = 'RT-1';
select is((select phone from patients_decrypted where mrn = 'RT-1'), null, 'setting the ciphertext to NULL clears a value');

update medical_records set notes = repeat('long note ', 2000) where id = '00000000-0000-4000-8000-000000000202';
select is((select notes from medical_records_decrypted where id = '00000000-0000-4000-8000-000000000202'),
    repeat('long note ', 2000), 'a 20,000-character note round-trips');
insert into patients (mrn, given_name, family_name, ssn) values ('RT-2', 'Empty', 'String', '');
select is((select ssn from patients_decrypted where mrn = 'RT-2'), '', 'an empty string stays an empty string, not NULL');
select is((select count(*)::int from patients_decrypted where ssn is null and mrn = 'RT-1'), 0,
    'the view never turns a stored value into NULL');

select * from finish();
rollback;
