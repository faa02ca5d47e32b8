-- clinicdb.citus_propagate_logins(): on a Citus coordinator, every role
-- that belongs to the layer's roles exists on every node (issue #16).
-- Called by `clinicdb migrate` right after clinicdb.citus_distribute(), as a
-- superuser; idempotent; changes nothing on a single node.
--
-- Why: Citus creates on the workers the roles it has seen created (CREATE
-- ROLE with propagation on) and the roles distributed objects depend on.
-- A database that ran on a single node before Citus came has logins that
-- Citus never saw: the application's login, staff logins, an auditor's. The
-- layer's group roles reach the workers with the tables (they own them or
-- hold their grants); the logins do not, so Citus's own connections to the
-- workers as the app's login fail ("role ... does not exist"), and every
-- GRANT, ALTER ROLE ... SET or staff marker naming such a login fails or
-- stays on the coordinator.
--
-- How: Citus carries a distributed object's owner to every node with its
-- attributes, password verifier and memberships (the memberships' groups
-- first), and from then on treats the role as its own (ALTER, GRANT and DROP
-- propagate, and a node added later receives it). So each such role is made,
-- for an instant, the owner of a one-line function that is distributed and
-- dropped again in the same transaction; nothing else is left behind. The
-- roles are the members, direct or not, of clinicdb_owner, clinicdb_app,
-- clinicdb_readonly, clinicdb_auditor and clinicdb_staff; superusers exist on
-- every node already.
create or replace procedure clinicdb.citus_propagate_logins(p_undo boolean default false)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_role regrole;
begin
    -- Nothing to undo: a role Citus knows stays known (dropping it is a DBA's decision).
    if p_undo or not exists (select 1 from pg_extension where extname = 'citus') then
        return;
    end if;
    for v_role in
        with recursive members(oid) as (
            select r.oid from pg_roles r
             where r.rolname in ('clinicdb_owner', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_auditor',
                                 'clinicdb_staff')
            union
            select m.member from pg_auth_members m join members g on g.oid = m.roleid
        )
        select m.oid::regrole from members m join pg_roles r on r.oid = m.oid
         where not r.rolsuper
           and not exists (select 1 from pg_dist_object d
                            where d.classid = 'pg_authid'::regclass and d.objid = m.oid)
         order by r.rolname
    loop
        perform set_config('citus.enable_ddl_propagation', 'off', true);
        create function clinicdb._citus_login_carrier() returns integer language sql immutable return 1;
        execute format('alter function clinicdb._citus_login_carrier() owner to %s', v_role);
        perform set_config('citus.enable_ddl_propagation', 'on', true);
        -- Dynamic: a name cast in a static statement would keep the first carrier's oid.
        execute 'select create_distributed_function($1)' using 'clinicdb._citus_login_carrier()'::text::regprocedure;
        drop function clinicdb._citus_login_carrier();
    end loop;
end
$$;
comment on procedure clinicdb.citus_propagate_logins(boolean) is
    'clinicdb: on a Citus coordinator, create every member of the layer''s roles (logins made before Citus) on every node (docs/citus.md).';
revoke execute on procedure clinicdb.citus_propagate_logins(boolean) from public;
