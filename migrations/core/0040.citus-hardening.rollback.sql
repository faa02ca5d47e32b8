-- 0040.citus-hardening: undo 0040.citus-hardening.
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/citus_hardening.rollback.sql when it was written. migrations/migrations.lock pins it:
-- change sql/ and add a new migration instead of editing this file.

-- ---- sql/functions/citus_hardening.rollback.sql ----
-- Undo sql/functions/citus_hardening.sql: on a Citus coordinator where
-- citus_harden() ran, give PUBLIC back Citus's internal functions on every
-- node and the app and staff their update right on clinicdb.clinics; then
-- drop the procedure. Run as the migrating superuser (the functions belong
-- to the citus extension's owner).
do $$
begin
    -- Nested: pg_dist_partition exists only where citus is installed.
    if to_regprocedure('clinicdb.citus_harden(boolean)') is not null
       and exists (select 1 from pg_extension where extname = 'citus') then
        if exists (select 1 from pg_catalog.pg_dist_partition
                    where logicalrelid = 'clinicdb.clinics'::regclass) then
            call clinicdb.citus_harden(true);
        end if;
    end if;
end
$$;
drop procedure if exists clinicdb.citus_harden(boolean);
