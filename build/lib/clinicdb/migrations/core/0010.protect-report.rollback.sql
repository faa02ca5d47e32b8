-- 0010.protect-report: undo 0010.protect-report.
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/protect_report.rollback.sql when it was written. migrations/migrations.lock pins it:
-- change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/protect_report.rollback.sql ----
-- Undo sql/functions/protect_report.sql.
drop function if exists clinicdb.adopt_table_sql(regclass);
drop function if exists clinicdb.protect_report(regclass);
reset role;
