-- Staff logins: humans in psql, each scoped to its clinic.
--
-- grant_staff makes a login a member of clinicdb_staff and maps it to a
-- clinic; revoke_staff removes a mapping and, with the last one, the
-- membership. Both run with the caller's rights (SECURITY INVOKER): granting
-- role membership needs CREATEROLE or ADMIN on clinicdb_staff, and the layer
-- does not lend that to anyone.
--
-- Refused: roles that bypass RLS (superuser, BYPASSRLS) -- their mapping would
-- be a lie -- and members of the app/readonly/owner/auditor groups, whose
-- other path to data (app.clinic_id, ownership, audit reads) a staff mapping
-- must not sit beside; likewise CREATEROLE logins (they can grant themselves
-- any role) and logins that hold (and so can SET ROLE to) a role bypassing
-- RLS, a CREATEROLE role or another staff login. clinicdb.check_isolation()
-- reports such grants made after the fact.
--
-- Mappings are keyed by role name. A role dropped without revoke_staff leaves
-- its mapping behind; grant_staff removes such stale mappings before mapping
-- a new role of that name, and check_isolation() reports them meanwhile. A
-- new role of the old name never matches them: on a single node the oid
-- recorded here differs; on Citus it lacks the old login's marker
-- (sql/functions/citus_staff.sql), which only a superuser can write, so
-- there granting and revoking staff needs a superuser.
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
    -- On Citus the oid above means nothing on the workers: the login carries
    -- the grant as a marker only a superuser can write (citus_staff.sql).
    perform clinicdb._citus_mark_staff(p_role, true);
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
    if not exists (select 1 from clinicdb.staff_members where role_name = p_role) then
        perform clinicdb._citus_mark_staff(p_role, false);
    end if;
    return v_removed;
end
$$;
comment on function clinicdb.revoke_staff(name, uuid) is
    'clinicdb: remove a staff login''s mapping to one clinic (or all, when clinic is null); returns mappings removed.';
revoke execute on function clinicdb.revoke_staff(name, uuid) from public;
