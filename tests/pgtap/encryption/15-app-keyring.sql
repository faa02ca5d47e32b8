-- The application's keyring (app.clinic_keyring, exported once with the
-- master key): lookups and reads without the master key and without
-- unwrapping, checked against clinicdb.key_epoch so that rotation and
-- shredding take effect at the next statement; another clinic's keyring
-- finds nothing; a malformed one is refused without being echoed.
begin;
select plan(21);

select set_config('test.epoch', (select epoch::text from clinicdb.key_epoch), true);
select set_config('app.master_key', repeat('7f', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('keyring a')::text, true);
select set_config('test.other', clinicdb_tap.create_clinic('keyring b')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb.rotate_clinic_key(current_setting('test.other')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.other')::uuid);
insert into patients (mrn, given_name, family_name, ssn) values ('KB-1', 'Bo', 'Other', '555-55-5555');
select set_config('test.other_ring', clinicdb.export_keyring(), true);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into patients (mrn, given_name, family_name, ssn)
select 'KR-' || g, 'Pat', 'Number ' || g, case when g = 7 then '555-55-5555' else format('%s-%s-%s', 100 + g % 800, 10 + g % 89, 1000 + g) end
  from generate_series(1, 500) g;
select set_config('test.ring', clinicdb.export_keyring(), true);
select clinicdb_tap.clear_authentication();
analyze public.patients;

-- From here on the application sends its keyring, never the master key.
select set_config('app.master_key', '', true);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
select set_config('app.clinic_keyring', current_setting('test.ring'), true);

select ok(current_setting('test.ring') like current_setting('test.clinic') || '/%/1/%',
    'export_keyring() gives the clinic in force''s keyring, its key epoch and its active version');
select is((select mrn || ' ' || ssn from patients_decrypted
            where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '555-55-5555'))),
    'KR-7 555-55-5555', 'with the keyring and no master key, a blind-index lookup finds the row and decrypts it');
select ok(exists (select 1 from clinicdb_tap.plan_nodes($$select mrn, ssn from patients_decrypted
                    where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '555-55-5555'))$$) p
                  where p.index_name = 'patients_ssn_blind_index_idx'
                    and p.index_cond like '%clinic_id = %' and p.index_cond like '%ssn_blind_index = ANY%'),
    'the keyring lookup is answered by the (clinic_id, ssn_blind_index) index');
select is((select mrn from patients_decrypted
            where ssn_blind_index = clinicdb._blind_index_value('555-55-5555',
                      int4send(octet_length('public.patients.ssn')) || convert_to('public.patients.ssn', 'UTF8'),
                      (clinicdb._keyring_keys(current_setting('test.ring'), 6))[1])),
    'KR-7', 'a blind index computed from the keyring''s idx key (as the application does) finds the row');
select is((select count(*)::int from patients_decrypted
            where ssn_blind_index = clinicdb._blind_index_value('555-55-5555',
                      int4send(octet_length('public.patients.ssn')) || convert_to('public.patients.ssn', 'UTF8'),
                      (clinicdb._keyring_keys(current_setting('test.other_ring'), 6))[1])),
    0, 'the same SSN under another clinic''s blind-index key matches nothing');

select is((select count(*)::int from clinicdb._statement_keyring() where enc_keys is not null and problem is null), 1,
    'the views join exactly one keyring row: the supplied one');
select set_config('app.clinic_keyring', current_setting('test.other_ring'), true);
select is((select count(*)::int || ' ' || min(problem) from clinicdb._statement_keyring()),
    '1 no master key is in force for this transaction (app.master_key is not set)',
    'with another clinic''s keyring the views join one keyring row, the master key path''s, which says what is missing');
select throws_ok($$select ssn from patients_decrypted where mrn = 'KR-7'$$, '42501', null,
    'another clinic''s keyring is ignored: without this clinic''s keys nothing decrypts');
select set_config('app.clinic_keyring', current_setting('test.clinic') || '/1/1/zz' || repeat('ab', 31) || '//', true);
select throws_matching($$select ssn from patients_decrypted where mrn = 'KR-7'$$,
    '^app\.clinic_keyring is not a clinicdb keyring \(\d+ characters\)$',
    'a malformed keyring is refused with its length only, never its content');

-- An operator rotates the clinic's key: the cached keyring is stale at once.
select set_config('app.clinic_keyring', current_setting('test.ring'), true);
select clinicdb_tap.clear_authentication();
select set_config('app.master_key', repeat('7f', 32), true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select set_config('app.master_key', '', true);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
select throws_ok($$select ssn from patients_decrypted where mrn = 'KR-7'$$, '55K01', null,
    'after a rotation the cached keyring is refused as stale (55K01) at the next statement');
select throws_ok($$select clinicdb.blind_index('public.patients', 'ssn', '555-55-5555')$$, '55K01', null,
    'a stale keyring computes no blind index either (a lookup never misses the new version''s rows)');

-- The application reloads it (with the master key) and carries on without.
select set_config('app.master_key', repeat('7f', 32), true);
select set_config('test.ring', clinicdb.export_keyring(), true);
select set_config('app.master_key', '', true);
select set_config('app.clinic_keyring', current_setting('test.ring'), true);
select is(cardinality(clinicdb.blind_index('public.patients', 'ssn', '555-55-5555')), 2,
    'the reloaded keyring looks a value up under both live key versions');
select is((select mrn || ' ' || ssn from patients_decrypted
            where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '555-55-5555'))),
    'KR-7 555-55-5555', 'a row still on the old key version is found and decrypted until it is re-encrypted');
insert into patients (mrn, given_name, family_name, ssn) values ('KR-new', 'New', 'Patient', '555-00-0001');
select is((select clinicdb.key_version(p.ssn_ciphertext) || ' ' || d.ssn from patients p join patients_decrypted d using (id)
            where p.mrn = 'KR-new'),
    '2 555-00-0001', 'a write with only the keyring is encrypted under the active version and reads back');

-- An operator shreds the clinic: the keyring is refused, and cannot be loaded again.
select clinicdb_tap.clear_authentication();
select clinicdb.shred_clinic_keys(current_setting('test.clinic')::uuid, 'pgTAP');
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
select throws_ok($$select ssn from patients_decrypted where mrn = 'KR-7'$$, '55K01', null,
    'after a shred the cached keyring is refused at the next statement');
select set_config('app.master_key', repeat('7f', 32), true);
select throws_ok($$select clinicdb.export_keyring()$$, '55000', null,
    'a shredded clinic''s keyring cannot be exported again');
select set_config('app.clinic_keyring', '', true);
select clinicdb_tap.authenticate_as_app(null);
select is((select count(*)::int || ' ' || min(problem) from clinicdb._statement_keyring()),
    '1 no clinic is in force for this transaction', 'with no clinic in force the views still join one keyring row');
select clinicdb_tap.clear_authentication();

select ok((select epoch from clinicdb.key_epoch) >= current_setting('test.epoch')::bigint + 4,
    'every rotation and shred bumps the key epoch');
select ok(has_function_privilege('clinicdb_app', 'clinicdb.export_keyring()', 'EXECUTE')
          and not has_function_privilege('clinicdb_readonly', 'clinicdb.export_keyring()', 'EXECUTE')
          and not has_function_privilege('clinicdb_staff', 'clinicdb.export_keyring()', 'EXECUTE')
          and not has_function_privilege('clinicdb_auditor', 'clinicdb.export_keyring()', 'EXECUTE'),
    'only the application role may export a keyring');
select ok((select bool_and(has_function_privilege(r, f, 'EXECUTE'))
             from unnest(array['clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff']) r,
                  unnest(array['clinicdb._statement_keyring()', 'clinicdb._keyring_is_for(text, text)',
                               'clinicdb._keyring_keys(text, integer)', 'clinicdb._stale_keyring(uuid)',
                               'clinicdb._malformed_keyring(integer)']) f)
          and not exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                           where n.nspname = 'clinicdb' and p.prosecdef
                             and p.proname in ('export_keyring', '_statement_keyring', '_keyring_is_for',
                                               '_keyring_keys', '_stale_keyring', '_malformed_keyring')),
    'the views'' keyring helpers run for every reading role, none with its owner''s rights');
select ok(has_table_privilege('clinicdb_app', 'clinicdb.key_epoch', 'SELECT')
          and not has_table_privilege('clinicdb_app', 'clinicdb.key_epoch', 'UPDATE')
          and not has_table_privilege('clinicdb_staff', 'clinicdb.key_epoch', 'UPDATE'),
    'the app reads the key epoch but cannot move it (only key changes do)');

select * from finish();
rollback;
