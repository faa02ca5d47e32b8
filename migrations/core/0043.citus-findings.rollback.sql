-- 0043.citus-findings: undo 0043.citus-findings.
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/citus_findings.rollback.sql when it was written. migrations/migrations.lock pins it:
-- change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/citus_findings.rollback.sql ----
-- Undo citus_findings.sql: the function reads only; nothing depends on it.
drop function if exists clinicdb.citus_findings();
reset role;
