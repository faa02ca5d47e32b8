-- 0030.citus-profile: undo 0030.citus-profile.
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/citus_profile.rollback.sql when it was written. migrations/migrations.lock pins it:
-- change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/citus_profile.rollback.sql ----
-- Undo sql/functions/citus_profile.sql on a database that was never
-- distributed. On a distributed one, _staff_clinic_id() calls
-- _citus_staff_clinic_id(), so the drop below refuses: undistributing is a
-- DBA's decision (undistribute_table keeps every row; docs/citus.md).
drop procedure if exists clinicdb.citus_distribute();
drop function if exists clinicdb._citus_staff_clinic_id();
reset role;
