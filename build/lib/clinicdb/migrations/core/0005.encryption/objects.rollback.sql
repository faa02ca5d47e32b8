-- 0005.encryption, rollback, second part: drop the key tables and encryption functions.
-- Frozen: copied from sql/schema/encryption.rollback.sql when the migration was written; migrations.lock pins it.

set local role clinicdb_owner;
-- ---- sql/schema/encryption.rollback.sql ----
-- Undo sql/schema/encryption.sql and the encryption functions. pgcrypto is
-- left installed: other layers may use it, and it holds no data (it goes
-- with the clinicdb schema when migration 0002 is rolled back).
do $$
begin
    if to_regclass('clinicdb.audit_settings') is not null then
        delete from clinicdb.audit_settings where table_name = 'clinicdb.clinic_keys'::regclass;
    end if;
end
$$;
delete from clinicdb.protected_tables where table_name = 'clinicdb.clinic_keys'::regclass;
drop function if exists clinicdb.key_usage();
drop function if exists clinicdb.reencrypt_remaining(regclass);
drop function if exists clinicdb.reencrypt_batch(regclass, uuid, integer);
drop function if exists clinicdb.decrypt_column(regclass, name);
drop function if exists clinicdb.encrypt_column(regclass, name, boolean, name);
drop function if exists clinicdb.encryption_sql(regclass);
drop function if exists clinicdb._label_prefix_literal(text);
drop function if exists clinicdb.decrypt_value(bytea, regclass, name, uuid);
drop function if exists clinicdb.blind_index(regclass, name, text);
drop function if exists clinicdb._blind_index_value(text, bytea, bytea);
drop function if exists clinicdb._seal_tag(bytea, bytea, bytea);
drop function if exists clinicdb._seal_body(text, integer, bytea, bytea);
drop function if exists clinicdb._open(bytea, bytea, text, uuid, bytea[], bytea[], text);
drop function if exists clinicdb._cannot_open(text, bytea, uuid, text);
drop function if exists clinicdb._aad(text, uuid);
drop function if exists clinicdb.key_version(bytea);
drop function if exists clinicdb.rewrap_clinic_keys();
drop function if exists clinicdb.shred_clinic_keys(uuid, text);
drop function if exists clinicdb.rotate_clinic_key(uuid);
drop function if exists clinicdb._require_operator(text);
drop function if exists clinicdb._load_write_keys(uuid, text);
drop function if exists clinicdb.export_keyring();
drop function if exists clinicdb._statement_keyring();
drop function if exists clinicdb._stale_keyring(uuid);
drop function if exists clinicdb._keyring_keys(text, integer);
drop function if exists clinicdb._keyring_is_for(text, text);
drop function if exists clinicdb._malformed_keyring(integer);
drop function if exists clinicdb._keyring_in_force();
drop function if exists clinicdb._clinic_keyring(uuid);
drop type if exists clinicdb.keyring;
drop function if exists clinicdb._unwrap_key(bytea, bytea, uuid, integer);
drop function if exists clinicdb._wrap_key(bytea, bytea, uuid, integer);
drop function if exists clinicdb.master_key_id();
drop function if exists clinicdb._master_key_id(bytea);
drop function if exists clinicdb._require_master_key(text);
drop function if exists clinicdb._master_key_or_null(text);
drop function if exists clinicdb._key_problem_hint();
drop function if exists clinicdb._random_bytes(integer);
drop function if exists clinicdb._aes_decrypt(bytea, bytea, bytea);
drop function if exists clinicdb._aes_encrypt(bytea, bytea, bytea);
drop function if exists clinicdb._hmac(bytea, bytea);
drop table if exists clinicdb.reencrypt_progress, clinicdb.encrypted_columns, clinicdb.key_events, clinicdb.key_epoch,
    clinicdb.clinic_keys;
reset role;
