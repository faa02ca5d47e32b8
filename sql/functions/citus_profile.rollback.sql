-- Undo sql/functions/citus_profile.sql on a database that was never
-- distributed. On a distributed one, _staff_clinic_id() calls
-- _citus_staff_clinic_id(), so the drop below refuses: undistributing is a
-- DBA's decision (undistribute_table keeps every row; docs/citus.md).
drop procedure if exists clinicdb.citus_distribute();
drop function if exists clinicdb._citus_staff_clinic_id();
