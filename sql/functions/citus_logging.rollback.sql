-- Undo sql/functions/citus_logging.sql: on a Citus coordinator, reset the
-- logging settings citus_protect_logs() set on every node (the
-- coordinator's parameter settings stay: they are 0005's); then drop the
-- procedure. Run as the migrating superuser.
do $$
begin
    -- Nested: pg_dist_node exists only where citus is installed.
    if to_regprocedure('clinicdb.citus_protect_logs(boolean)') is not null
       and exists (select 1 from pg_extension where extname = 'citus') then
        if exists (select 1 from pg_catalog.pg_dist_node where groupid <> 0) then
            call clinicdb.citus_protect_logs(true);
        end if;
    end if;
end
$$;
drop procedure if exists clinicdb.citus_protect_logs(boolean);
