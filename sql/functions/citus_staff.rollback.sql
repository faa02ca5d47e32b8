-- Undo sql/functions/citus_staff.sql (migration 0044): the staff functions
-- as 0030 and 0006 left them (Citus matches staff by role name only again,
-- docs/security-review.md C3), every marker removed, the marking functions
-- dropped. No row changes. Run as the migrating superuser: only a superuser
-- can remove the markers (create or replace keeps each function's owner).
do $$
begin
    -- Nested: the markers exist only where citus is installed; the reset
    -- propagates to every node.
    if to_regprocedure('clinicdb.citus_mark_staff(boolean)') is not null
       and exists (select 1 from pg_extension where extname = 'citus') then
        call clinicdb.citus_mark_staff(true);
    end if;
end
$$;

-- The previous versions (0006's grant_staff and revoke_staff, 0030's
-- _citus_staff_clinic_id), unchanged.
create or replace function clinicdb.grant_staff(p_role name, p_clinic uuid)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_role record;
begin
    select rolname, rolsuper, rolbypassrls, rolcreaterole, rolreplication, rolcanlogin
      into v_role from pg_roles where rolname = p_role;
    if not found then
        raise exception 'role % does not exist', p_role
            using errcode = 'undefined_object', hint = 'create the login first: create role ... login';
    end if;
    -- REPLICATION streams the WAL: every clinic's rows, below any policy.
    if v_role.rolsuper or v_role.rolbypassrls or v_role.rolreplication then
        raise exception 'role % bypasses row level security and cannot be staff', p_role
            using errcode = 'insufficient_privilege', hint = 'use a login without SUPERUSER, BYPASSRLS or REPLICATION';
    end if;
    -- CREATEROLE grants membership in any non-superuser role: the login could
    -- grant itself clinicdb_readonly (any clinic) or clinicdb_owner.
    if v_role.rolcreaterole then
        raise exception 'role % has CREATEROLE and could grant itself any role; it cannot be staff', p_role
            using errcode = 'insufficient_privilege', hint = 'alter role ... nocreaterole, or use a separate login';
    end if;
    if p_role in ('clinicdb_staff', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_owner', 'clinicdb_auditor')
       or pg_has_role(p_role, 'clinicdb_app', 'MEMBER')
       or pg_has_role(p_role, 'clinicdb_readonly', 'MEMBER')
       or pg_has_role(p_role, 'clinicdb_owner', 'MEMBER')
       or pg_has_role(p_role, 'clinicdb_auditor', 'MEMBER') then
        raise exception 'role % is a clinicdb group or holds one; staff must be a plain login', p_role
            using errcode = 'insufficient_privilege', hint = 'create a separate login for the person';
    end if;
    -- SET ROLE needs only membership: a login that holds a role bypassing RLS,
    -- a CREATEROLE role or another staff login could act as it, whatever its
    -- own mapping says.
    if exists (select 1 from pg_roles g
                where g.rolname <> p_role and g.rolname <> 'clinicdb_staff'
                  and pg_has_role(p_role, g.oid, 'MEMBER')
                  and (g.rolsuper or g.rolbypassrls or g.rolcreaterole or pg_has_role(g.oid, 'clinicdb_staff', 'MEMBER'))) then
        raise exception 'role % can SET ROLE to a role that bypasses row level security, has CREATEROLE '
                        'or is another staff login', p_role
            using errcode = 'insufficient_privilege', hint = 'revoke those roles from it, or create a separate login';
    end if;
    if not exists (select 1 from clinicdb.clinics where id = p_clinic) then
        raise exception 'clinic % does not exist', p_clinic
            using errcode = 'foreign_key_violation', hint = 'list clinics with: clinicdb clinic list';
    end if;
    if not v_role.rolcanlogin then
        raise warning 'role % cannot log in; the mapping applies once it can', p_role;
    end if;
    -- Mappings of this name that are not this role (another oid), or left
    -- behind by a revoked membership, belong to someone else: start clean.
    if not pg_has_role(p_role, 'clinicdb_staff', 'MEMBER')
       or exists (select 1 from clinicdb.staff_members sm
                   where sm.role_name = p_role and sm.role_oid <> (select oid from pg_roles where rolname = p_role)) then
        delete from clinicdb.staff_members where role_name = p_role;
        if found then
            raise warning 'removed stale staff mappings of %, left by an earlier role of that name', p_role;
        end if;
    end if;
    execute format('grant clinicdb_staff to %I', p_role);
    insert into clinicdb.staff_members (role_name, role_oid, clinic_id)
    values (p_role, (select oid from pg_roles where rolname = p_role), p_clinic)
    on conflict (role_name, clinic_id) do update set role_oid = excluded.role_oid;
end
$$;
comment on function clinicdb.grant_staff(name, uuid) is
    'clinicdb: let a psql login act for one clinic (adds it to clinicdb_staff).';
revoke execute on function clinicdb.grant_staff(name, uuid) from public;

create or replace function clinicdb.revoke_staff(p_role name, p_clinic uuid default null)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_removed integer;
begin
    delete from clinicdb.staff_members
     where role_name = p_role and (p_clinic is null or clinic_id = p_clinic);
    get diagnostics v_removed = row_count;
    if not exists (select 1 from clinicdb.staff_members where role_name = p_role)
       and exists (select 1 from pg_roles where rolname = p_role)
       and pg_has_role(p_role, 'clinicdb_staff', 'MEMBER') then
        execute format('revoke clinicdb_staff from %I', p_role);
    end if;
    return v_removed;
end
$$;
comment on function clinicdb.revoke_staff(name, uuid) is
    'clinicdb: remove a staff login''s mapping to one clinic (or all, when clinic is null); returns mappings removed.';
revoke execute on function clinicdb.revoke_staff(name, uuid) from public;

create or replace function clinicdb._citus_staff_clinic_id()
returns uuid
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Citus evaluates every function call of a distributed query on the
    -- coordinator, the branches current_clinic_id() does not take included:
    -- for anyone not staff this answers NULL instead of reading a table
    -- they may not read.
    if not pg_has_role(current_user, 'clinicdb_staff', 'MEMBER') then
        return null;
    end if;
    -- As _staff_clinic_id(), keyed by role name (the same on every node).
    return (select case
                       when count(*) = 1 then (array_agg(sm.clinic_id))[1]
                       else (array_agg(sm.clinic_id)
                               filter (where sm.clinic_id::text = current_setting('app.clinic_id', true)))[1]
                   end
              from clinicdb.staff_members sm
             where sm.role_name = current_user);
end
$$;
comment on function clinicdb._citus_staff_clinic_id() is
    'clinicdb: on Citus, the clinic a staff login is mapped to, by role name (OIDs differ per node).';
revoke execute on function clinicdb._citus_staff_clinic_id() from public;

drop procedure if exists clinicdb.citus_mark_staff(boolean);
drop function if exists clinicdb._citus_mark_staff(name, boolean);

-- On a distributed database citus_distribute() had rewritten grant_staff()
-- for Citus, opened _citus_staff_clinic_id() to PUBLIC and let it read its
-- node's copy of staff_members; the definitions above undid that on the
-- coordinator (and the revoke on every node: this runs with DDL propagation
-- on). Run it again (idempotent), then send the coordinator's definitions
-- and grant to every node (Citus does not send an already distributed
-- function again).
do $$
declare
    v_function regprocedure;
begin
    -- Nested: pg_dist_partition exists only where citus is installed.
    if exists (select 1 from pg_extension where extname = 'citus') then
        if exists (select 1 from pg_catalog.pg_dist_partition
                    where logicalrelid = 'clinicdb.staff_members'::regclass) then
            call clinicdb.citus_distribute();
            set local citus.enable_ddl_propagation = on;
            foreach v_function in array array['clinicdb._citus_staff_clinic_id()'::regprocedure,
                                              'clinicdb.grant_staff(name, uuid)'::regprocedure,
                                              'clinicdb.revoke_staff(name, uuid)'::regprocedure] loop
                execute pg_get_functiondef(v_function);
            end loop;
            -- The revoke above reached every node; citus_distribute()'s grant only the coordinator.
            grant execute on function clinicdb._citus_staff_clinic_id() to public;
        end if;
    end if;
end
$$;
