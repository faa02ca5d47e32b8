-- What rests in the tables is ciphertext with its key version: the owner's
-- (a superuser's) raw read of a row shows no plaintext, and nothing can put
-- plaintext into an encrypted column's storage.
begin;
select plan(7);

select set_config('app.master_key', repeat('2e', 32), true);
select set_config('test.clinic', clinicdb.create_clinic('at rest', '00000000-0000-4000-8000-0000000003cc')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into patients (id, mrn, given_name, family_name, ssn, phone)
values ('00000000-0000-4000-8000-000000000301', 'AR-1', 'Alan', 'Turing', '987-65-4321', '+44 161 496 0000');
insert into medical_records (patient_id, notes)
values ('00000000-0000-4000-8000-000000000301', 'Diagnosis: seasonal allergic rhinitis');
select clinicdb_tap.clear_authentication();

select ok((select p::text from public.patients p where mrn = 'AR-1') not like '%987-65-4321%'
          and (select p::text from public.patients p where mrn = 'AR-1') not like '%496 0000%',
    'the raw patients row holds neither the SSN nor the phone in plaintext');
select ok((select encode(p.ssn_ciphertext, 'escape') || encode(p.phone_ciphertext, 'escape')
             from public.patients p where mrn = 'AR-1') not like '%987-65-4321%',
    'the ciphertext bytes do not contain the plaintext');
select ok((select string_agg(m::text, '') from public.medical_records m
            where patient_id = '00000000-0000-4000-8000-000000000301') not like '%rhinitis%',
    'the raw medical_records row holds no plaintext note');
select is((select row(ssn, phone)::text from public.patients where mrn = 'AR-1'), '(,)',
    'the write slots ssn and phone are NULL at rest');
select is((select clinicdb.key_version(ssn_ciphertext) from public.patients where mrn = 'AR-1'), 1,
    'each stored value carries its key version');
set local session_replication_role = replica;  -- triggers off: a DBA bypassing the write path
select throws_ok(
    $$insert into public.patients (clinic_id, mrn, given_name, family_name, ssn)
      values (current_setting('test.clinic')::uuid, 'AR-2', 'X', 'Y', '111-11-1111')$$,
    '23514', null, 'even with triggers disabled, plaintext cannot be stored in an encrypted column');
set local session_replication_role = origin;
copy public.patients (clinic_id, mrn, given_name, family_name, ssn) from stdin;
00000000-0000-4000-8000-0000000003cc	AR-3	Copy	Path	555-55-5555
\.
select ok((select ssn is null and clinicdb.key_version(ssn_ciphertext) = 1 from public.patients where mrn = 'AR-3'),
    'COPY goes through the same write path: the SSN is stored encrypted');

select * from finish();
rollback;
