-- 0045.citus-function-sync: undo 0045.citus-function-sync.
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/citus_function_sync.rollback.sql when it was written. migrations/migrations.lock pins
-- it: change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/citus_function_sync.rollback.sql ----
-- Undo citus_function_sync.sql. The definitions it sent stay on the
-- workers: they are the coordinator's, which this rollback does not change.
-- citus_findings() keeps this version, which skips the drift check once
-- _citus_function_drift() is gone (it asks for it by name first).
drop procedure if exists clinicdb.citus_sync_functions(boolean);
drop function if exists clinicdb._citus_function_drift();
reset role;
