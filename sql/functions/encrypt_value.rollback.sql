-- Undo encrypt_value.sql: the functions go; no row, key or audit entry
-- depends on them (values they wrote stay readable through the views and
-- decrypt_value(), whose format they share).
drop function if exists clinicdb.seal_values(regclass, uuid, name[], text[]);
drop function if exists clinicdb.decrypt_values(bytea[], regclass, name, uuid[]);
drop function if exists clinicdb.write_blind_index(regclass, name, text);
drop function if exists clinicdb.encrypt_value(regclass, name, uuid, text);
drop function if exists clinicdb._encrypted_column(regclass, name);
drop function if exists clinicdb._write_keys_in_force(regclass);
