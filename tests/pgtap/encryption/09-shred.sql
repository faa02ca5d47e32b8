-- Crypto-shredding: after shred, the clinic's values are unreadable (with an
-- error that says so) and take no new PHI; other clinics are untouched; the
-- event is recorded without key material.
begin;
select plan(8);

select set_config('app.master_key', repeat('9d', 32), true);
select set_config('test.gone', clinicdb_tap.create_clinic('leaving clinic')::text, true);
select set_config('test.kept', clinicdb_tap.create_clinic('staying clinic')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.gone')::uuid);
select clinicdb.rotate_clinic_key(current_setting('test.kept')::uuid);
select clinicdb.rotate_clinic_key(current_setting('test.gone')::uuid);  -- two versions, both to be shredded
select clinicdb_tap.authenticate_as_app(current_setting('test.gone')::uuid);
insert into patients (mrn, given_name, family_name, ssn) values ('SH-1', 'Gone', 'Soon', '123-12-1234');
select clinicdb_tap.authenticate_as_app(current_setting('test.kept')::uuid);
insert into patients (mrn, given_name, family_name, ssn) values ('SH-1', 'Kept', 'Safe', '321-21-4321');
select clinicdb_tap.clear_authentication();

select is(clinicdb.shred_clinic_keys(current_setting('test.gone')::uuid, 'contract ended'), 2,
    'shredding destroys every key version of the clinic');
select is((select count(*)::int from clinicdb.clinic_keys
            where clinic_id = current_setting('test.gone')::uuid and (wrapped_key is not null or state <> 'shredded')), 0,
    'no wrapped key of the shredded clinic remains');
select set_config('clinicdb.keyring', '', true);  -- a new transaction would not have it cached
select clinicdb_tap.authenticate_as_app(current_setting('test.gone')::uuid);
select throws_like($$select ssn from patients_decrypted$$,
    'cannot decrypt public.patients.ssn: the keys of clinic % were shredded',
    'the shredded clinic''s values are unreadable, and the error says why');
select throws_ok($$insert into patients (mrn, given_name, family_name, ssn) values ('SH-2', 'New', 'Data', '1')$$,
    '55000', null, 'a shredded clinic takes no new PHI');
select clinicdb_tap.authenticate_as_app(current_setting('test.kept')::uuid);
select is((select ssn from patients_decrypted where mrn = 'SH-1'), '321-21-4321',
    'another clinic''s values are untouched');
select clinicdb_tap.clear_authentication();
select is((select detail ->> 'versions_shredded' from clinicdb.key_events
            where event = 'shred' and clinic_id = current_setting('test.gone')::uuid), '2',
    'the shredding is recorded in clinicdb.key_events');
select ok((select string_agg(e::text, '') from clinicdb.key_events e) not like '%' || repeat('9d', 32) || '%',
    'the key event log holds no master key');
select ok(not exists (select 1 from clinicdb.key_events where detail::text ~ '\\x[0-9a-f]{64}'),
    'the key event log holds no key material');

select * from finish();
rollback;
