-- Values sealed by clinicdb.encrypt_value() in a statement of their own (how
-- a Citus application writes encrypted columns, on the coordinator) are the
-- trigger's format: the views, decrypt_value() and decrypt_values() read
-- them, their blind index finds them, and they stay bound to row, column and
-- clinic. Without a key nothing is sealed.
begin;
select plan(14);

select set_config('app.master_key', repeat('2b', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('sealed apart')::text, true);
select set_config('test.other', clinicdb_tap.create_clinic('sealed apart, other')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb.rotate_clinic_key(current_setting('test.other')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);

-- Written by the application itself: ciphertext and blind index, no plaintext.
insert into patients (id, mrn, given_name, family_name, ssn_ciphertext, ssn_blind_index, phone_ciphertext)
values ('00000000-0000-4000-8000-000000001701', 'SV-1', 'Ada', 'Lovelace',
        clinicdb.encrypt_value('public.patients', 'ssn', '00000000-0000-4000-8000-000000001701', '123-45-6789'),
        clinicdb.write_blind_index('public.patients', 'ssn', '123-45-6789'),
        clinicdb.encrypt_value('public.patients', 'phone', '00000000-0000-4000-8000-000000001701', '+44 20 7946 0018'));
-- Written through the trigger, for comparison.
insert into patients (id, mrn, given_name, family_name, ssn)
values ('00000000-0000-4000-8000-000000001702', 'SV-2', 'Grace', 'Hopper', '123-45-6789');

select is((select ssn from patients_decrypted where mrn = 'SV-1'), '123-45-6789',
    'a value sealed by encrypt_value reads back through the decrypting view');
select is((select phone from patients_decrypted where mrn = 'SV-1'), '+44 20 7946 0018',
    'every encrypted column can be sealed apart');
select is((select clinicdb.decrypt_value(ssn_ciphertext, 'public.patients', 'ssn', id) from patients where mrn = 'SV-1'),
    '123-45-6789', 'decrypt_value reads it');
select is((select ssn_blind_index from patients where mrn = 'SV-1'), (select ssn_blind_index from patients where mrn = 'SV-2'),
    'write_blind_index stores what the trigger stores for the same plaintext');
select is((select array_agg(mrn order by mrn) from patients
            where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '123-45-6789'))),
    array['SV-1', 'SV-2']::text[], 'a blind index lookup finds rows sealed either way');
select is((select clinicdb.key_version(ssn_ciphertext) from patients where mrn = 'SV-1'),
    (select clinicdb.key_version(ssn_ciphertext) from patients where mrn = 'SV-2'),
    'it seals under the active key version, as the trigger does');
select isnt((select ssn_ciphertext from patients where mrn = 'SV-1'), (select ssn_ciphertext from patients where mrn = 'SV-2'),
    'the same plaintext seals to different values (fresh IV, other row)');

-- Many values, one keyring: what a Citus application runs on the coordinator.
select is(clinicdb.decrypt_values(
        (select array_agg(ssn_ciphertext order by mrn) from patients where mrn in ('SV-1', 'SV-2')) || null::bytea,
        'public.patients', 'ssn',
        (select array_agg(id order by mrn) from patients where mrn in ('SV-1', 'SV-2')) || '00000000-0000-4000-8000-000000001709'::uuid),
    array['123-45-6789', '123-45-6789', null]::text[], 'decrypt_values decrypts in order, NULL stays NULL');

-- Bound to its row: a wrong row key fails its integrity check on read.
select throws_ok($$select clinicdb.decrypt_value(ssn_ciphertext, 'public.patients', 'ssn', '00000000-0000-4000-8000-000000001702')
                    from patients where mrn = 'SV-1'$$,
    'XX001', null, 'a value sealed for one row fails its integrity check as another row''s');
select throws_ok($$select clinicdb.encrypt_value('public.patients', 'ssn', null, 'x')$$,
    '22004', null, 'sealing without a row key is refused');
select throws_ok($$select clinicdb.encrypt_value('public.patients', 'given_name', gen_random_uuid(), 'x')$$,
    '42704', 'public.patients.given_name is not an encrypted column', 'a column that is not encrypted is refused by name');

-- Another clinic's keys cannot read it.
select set_config('test.sealed', (select ssn_ciphertext::text from patients where mrn = 'SV-1'), true);
select clinicdb_tap.authenticate_as_app(current_setting('test.other')::uuid);
select throws_ok($$select clinicdb.decrypt_value(current_setting('test.sealed')::bytea, 'public.patients', 'ssn',
                                                 '00000000-0000-4000-8000-000000001701')$$,
    'XX001', null, 'a value sealed for one clinic fails its integrity check under another clinic''s keys');

-- No key in force: nothing is sealed.
select set_config('app.master_key', '', true);
select set_config('clinicdb.write_keys', '', true);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
select throws_ok($$select clinicdb.encrypt_value('public.patients', 'ssn', gen_random_uuid(), '123-45-6789')$$,
    '42501', null, 'without a master key or keyring encrypt_value raises, never returns plaintext or NULL');

-- A read-only login reads, never seals.
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid, 'clinicdb_readonly');
select throws_ok($$select clinicdb.encrypt_value('public.patients', 'ssn', gen_random_uuid(), '123-45-6789')$$,
    '42501', null, 'the readonly role cannot call encrypt_value');

select * from finish();
rollback;
