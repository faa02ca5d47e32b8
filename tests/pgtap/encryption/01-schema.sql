-- The encryption layer's objects: pgcrypto, the registry of encrypted
-- reference columns, security_invoker views, no widening of isolation, no key
-- material reachable by the app, parameters never logged.
begin;
select plan(15);

select has_extension('pgcrypto', 'pgcrypto is installed');
select set_eq(
    $$select table_name::text || '.' || column_name || ':' || blind_index from clinicdb.encrypted_columns$$,
    array['patients.ssn:true', 'patients.phone:false', 'medical_records.notes:false'],
    'patients.ssn (with a blind index), patients.phone and medical_records.notes are declared encrypted');
select ok((select 'security_invoker=true' = any (reloptions) from pg_class where oid = 'public.patients_decrypted'::regclass),
    'patients_decrypted is a security_invoker view');
select ok((select 'security_invoker=true' = any (reloptions) from pg_class where oid = 'public.medical_records_decrypted'::regclass),
    'medical_records_decrypted is a security_invoker view');
select clinicdb_tap.is_tenant_isolated('public.patients', 'patients stays tenant-isolated with its decrypting view');
select clinicdb_tap.is_tenant_isolated('public.medical_records', 'medical_records stays tenant-isolated with its decrypting view');
select set_eq(
    $$select conrelid::regclass::text || ': ' || pg_get_constraintdef(oid) from pg_constraint
       where contype = 'c' and conname like '%\_plaintext\_never\_stored' and convalidated$$,
    array['patients: CHECK ((ssn IS NULL))', 'patients: CHECK ((phone IS NULL))', 'medical_records: CHECK ((notes IS NULL))'],
    'a validated CHECK constraint on each encrypted column''s write slot proves no plaintext is stored');
select set_eq(
    $$select attrelid::regclass::text || '.' || attname || ' ' || format_type(atttypid, atttypmod) from pg_attribute
       where attrelid in ('public.patients'::regclass, 'public.medical_records'::regclass)
         and attname ~ '_(ciphertext|blind_index)$' and not attisdropped$$,
    array['patients.ssn_ciphertext bytea', 'patients.ssn_blind_index bytea', 'patients.phone_ciphertext bytea',
          'medical_records.notes_ciphertext bytea'],
    'ciphertexts and the blind index are bytea columns beside their write slots, and only where declared');
select ok(not has_table_privilege('clinicdb_app', 'clinicdb.clinic_keys', 'INSERT')
          and not has_table_privilege('clinicdb_app', 'clinicdb.clinic_keys', 'UPDATE')
          and not has_table_privilege('clinicdb_app', 'clinicdb.clinic_keys', 'DELETE'),
    'the app cannot write, replace or delete wrapped keys');
select ok(not has_table_privilege('clinicdb_app', 'clinicdb.key_events', 'SELECT')
          and not has_table_privilege('clinicdb_staff', 'clinicdb.key_events', 'SELECT'),
    'the app and staff cannot read the key event log');
select ok(not has_function_privilege('clinicdb_app', 'clinicdb.rotate_clinic_key(uuid)', 'EXECUTE')
          and not has_function_privilege('clinicdb_app', 'clinicdb.shred_clinic_keys(uuid, text)', 'EXECUTE')
          and not has_function_privilege('clinicdb_app', 'clinicdb.rewrap_clinic_keys()', 'EXECUTE'),
    'rotate, shred and rewrap are operators'' functions, not the app''s');
select ok(not has_table_privilege('clinicdb_auditor', 'public.patients_decrypted', 'SELECT'),
    'the auditor cannot read the decrypting view');
select ok(not has_table_privilege('clinicdb_app', 'public.patients_decrypted', 'INSERT'),
    'the decrypting view is read-only (writes go to the table''s write slot)');
select is((select count(*)::int from pg_db_role_setting s join pg_database d on d.oid = s.setdatabase
            where d.datname = current_database() and s.setrole = 0
              and s.setconfig @> array['log_parameter_max_length=0', 'log_parameter_max_length_on_error=0']),
    1, 'the database never logs bind parameters (keys, PHI), even under log_statement = all');
select is((select count(*)::int from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname = 'clinicdb' and p.prosecdef
              and p.proname in ('_clinic_keyring', '_load_write_keys', 'blind_index', 'decrypt_value', '_open',
                                'rotate_clinic_key', 'shred_clinic_keys', 'rewrap_clinic_keys', 'encrypt_column')),
    0, 'no encryption function runs with its owner''s rights (SECURITY DEFINER)');

select * from finish();
rollback;
