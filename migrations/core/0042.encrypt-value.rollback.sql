-- 0042.encrypt-value: undo 0042.encrypt-value.
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/encrypt_value.rollback.sql when it was written. migrations/migrations.lock pins it:
-- change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/encrypt_value.rollback.sql ----
-- Undo encrypt_value.sql: the functions go; no row, key or audit entry
-- depends on them (values they wrote stay readable through the views and
-- decrypt_value(), whose format they share).
drop function if exists clinicdb.seal_values(regclass, uuid, name[], text[]);
drop function if exists clinicdb.decrypt_values(bytea[], regclass, name, uuid[]);
drop function if exists clinicdb.write_blind_index(regclass, name, text);
drop function if exists clinicdb.encrypt_value(regclass, name, uuid, text);
drop function if exists clinicdb._encrypted_column(regclass, name);
drop function if exists clinicdb._write_keys_in_force(regclass);
reset role;
