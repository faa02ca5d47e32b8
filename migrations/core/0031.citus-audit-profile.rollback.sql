-- 0031.citus-audit-profile: undo 0031.citus-audit-profile.
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/citus_audit.rollback.sql when it was written. migrations/migrations.lock pins it:
-- change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/citus_audit.rollback.sql ----
-- Undo sql/functions/citus_audit.sql: put back the single-node bodies of the
-- sealing and verification functions (when the profile was applied), then
-- drop what it added. No audit row or seal is touched.
do $$
begin
    if to_regprocedure('clinicdb.citus_audit_profile(boolean)') is not null then
        call clinicdb.citus_audit_profile(true);
    end if;
end
$$;
drop procedure if exists clinicdb.citus_audit_profile(boolean);
drop function if exists clinicdb._citus_audit_rewrites();
drop function if exists clinicdb._citus_audit_horizon();
drop function if exists clinicdb._citus_audit_trail();
reset role;
