-- 0001.roles: undo 0001.roles.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/schema/roles.rollback.sql when it
-- was written. migrations/migrations.lock pins it: change sql/ and add a new migration instead of
-- editing this file.

-- ---- sql/schema/roles.rollback.sql ----
-- Undo roles.sql in this database. The roles themselves are cluster-wide:
-- they are dropped only when nothing in any other database still needs them.
revoke create, usage on schema public from clinicdb_owner;
-- PostgreSQL's default, which roles.sql took back from PUBLIC.
do $$
begin
    execute format('grant temporary on database %I to public', current_database());
end
$$;
grant execute on function pg_catalog.lo_creat(integer) to public;
grant execute on function pg_catalog.lo_create(oid) to public;
grant execute on function pg_catalog.lo_from_bytea(oid, bytea) to public;
do $$
declare
    v_role text;
begin
    foreach v_role in array array[
        'clinicdb_auditor', 'clinicdb_staff', 'clinicdb_readonly', 'clinicdb_app', 'clinicdb_owner'
    ] loop
        if exists (select 1 from pg_roles where rolname = v_role) then
            execute format('drop owned by %I', v_role);
            begin
                execute format('drop role %I', v_role);
            exception when dependent_objects_still_exist then
                raise notice 'role % is still used in another database; kept', v_role;
            end;
        end if;
    end loop;
end
$$;
