-- Undo the Citus-aware hint: _key_problem_hint() as 0005 defined it (the
-- other functions of master_key.sql are unchanged by that migration).
create or replace function clinicdb._key_problem_hint()
returns text
language sql
immutable
parallel safe
return 'the application sets the master key per transaction with '
       'set_config(''app.master_key'', $1, true) as a bind parameter (clinicdb.keys.master_key_settings()); '
       'operators set CLINICDB_MASTER_KEY or CLINICDB_MASTER_KEY_FILE; see docs/encryption.md';
