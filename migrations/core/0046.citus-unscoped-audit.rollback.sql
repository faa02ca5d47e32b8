-- 0046.citus-unscoped-audit: undo 0046.citus-unscoped-audit.
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/citus_unscoped_audit.rollback.sql when it was written. migrations/migrations.lock pins
-- it: change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/citus_unscoped_audit.rollback.sql ----
-- Undo sql/functions/citus_unscoped_audit.sql: on a Citus coordinator, put
-- back the single-node bodies of the trail read, the truncate capture and
-- prune_audit(), and drop clinicdb.audit_log_unscoped -- only while it is
-- empty: its rows have no clinic, so they cannot go back into the
-- distributed trail, and the undo refuses rather than lose one. Then drop
-- the procedure.
do $$
begin
    -- Nested: the procedure refuses where citus is not installed.
    if to_regprocedure('clinicdb.citus_unscoped_audit(boolean)') is not null
       and exists (select 1 from pg_extension where extname = 'citus') then
        call clinicdb.citus_unscoped_audit(true);
    end if;
end
$$;
drop procedure if exists clinicdb.citus_unscoped_audit(boolean);
drop function if exists clinicdb._citus_unscoped_rewrites();
reset role;
