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
