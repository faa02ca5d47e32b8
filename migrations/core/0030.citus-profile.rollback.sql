-- 0030.citus-profile: undo 0030.citus-profile.
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/citus_profile.rollback.sql when it was written. migrations/migrations.lock pins it:
-- change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/citus_profile.rollback.sql ----
-- Undo sql/functions/citus_profile.sql on a database that was never
-- distributed. On a distributed one, current_clinic_id(), require_clinic_id()
-- and _staff_clinic_id() call the _citus_ functions, so the drops below
-- refuse: undistributing is a DBA's decision (undistribute_table keeps every
-- row; docs/citus.md).
drop procedure if exists clinicdb.citus_distribute();
drop function if exists clinicdb.audit_capture_row();
drop function if exists clinicdb._citus_require_clinic_id();
drop function if exists clinicdb._citus_current_clinic_id();
drop function if exists clinicdb._citus_staff_clinic_id();
reset role;
