-- Staff identity on Citus (docs/security-review.md, "Citus", C3).
--
-- On a single node _staff_clinic_id() matches a mapping by role name and by
-- the role's oid recorded at grant time (F3): a new role that reuses a
-- dropped login's name is someone else. On Citus every node gives a role its
-- own oid, so a shard's policy cannot use that check, and matching by name
-- alone let a login recreated by hand inherit the dropped one's clinic.
--
-- The identity there is a marker that grant_staff() puts on the role itself,
--     alter role <login> in database <this database> set clinicdb.staff_grant = '<role_oid>'
-- <role_oid> being the mapping's staff_members.role_oid (the coordinator's oid
-- of the role when it was granted). A mapping counts only for a login whose
-- own marker, in this node's catalog, names that oid. Why it holds:
--   * Citus propagates ALTER ROLE ... SET to every node in the grant's
--     transaction (and with the role to a node added later), and DROP ROLE
--     deletes the role's settings on every node: a role recreated by hand
--     under the old name has no marker, so the old mapping gives it nothing.
--   * No login can write a marker, its own included: clinicdb.staff_grant is
--     a placeholder (no module defines it), and PostgreSQL stores a
--     placeholder in pg_db_role_setting only for a superuser or a role
--     granted SET on that parameter; `alter role current_user set ...` is
--     refused like any other. A login holding that grant could forge its
--     marker, so its marker proves nothing (it maps to no clinic).
--   * The value is no secret (pg_db_role_setting is readable by everyone); it
--     ties the marker to one role: a login renamed onto a dropped login's
--     name carries its own oid, not the oid of the stale mapping.
--   * It is read from the catalog, never with current_setting(): the
--     session's value is whatever the login SETs.
-- Scoped to the database (IN DATABASE) so that revoking staff in one
-- clinicdb database does not unmark the login in another of the cluster.

-- The marker: set (p_mark) or removed for p_role in this database. Does
-- nothing without the citus extension (a single node keeps the oid check)
-- or when the role is gone. SECURITY INVOKER: only a superuser, or a role
-- granted SET on clinicdb.staff_grant, can write it, which is the point.
create or replace function clinicdb._citus_mark_staff(p_role name, p_mark boolean)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_oid oid;
begin
    if not exists (select 1 from pg_extension where extname = 'citus') then
        return;
    end if;
    select r.oid into v_oid from pg_roles r where r.rolname = p_role;
    if v_oid is null then
        return;
    end if;
    -- Nothing to remove: a non-superuser may revoke a mapping that was never marked.
    if not p_mark and not exists (select 1 from pg_db_role_setting s, unnest(s.setconfig) c(item)
                                   where s.setrole = v_oid
                                     and s.setdatabase = (select d.oid from pg_database d
                                                           where d.datname = current_database())
                                     and starts_with(c.item, 'clinicdb.staff_grant=')) then
        return;
    end if;
    if not (select r.rolsuper from pg_roles r where r.rolname = current_user)
       and not has_parameter_privilege(current_user, 'clinicdb.staff_grant', 'SET') then
        raise exception 'on Citus, granting and revoking staff needs a superuser'
            using errcode = 'insufficient_privilege',
                  hint = 'the login is marked on every node with alter role ... set clinicdb.staff_grant, '
                         'which PostgreSQL allows a superuser only (docs/security-review.md, C3)';
    end if;
    if p_mark then
        execute format('alter role %I in database %I set clinicdb.staff_grant = %L',
                       p_role, current_database(), v_oid::text);
    else
        execute format('alter role %I in database %I reset clinicdb.staff_grant', p_role, current_database());
    end if;
end
$$;
comment on function clinicdb._citus_mark_staff(name, boolean) is
    'clinicdb: on Citus, marks (or unmarks) a staff login on every node with its grant (used by grant_staff() and revoke_staff()).';
-- Runs with the caller's rights: grant_staff()'s callers need it, and it
-- writes nothing they could not write themselves.
grant execute on function clinicdb._citus_mark_staff(name, boolean) to public;

-- The staff branch of current_clinic_id() on Citus (citus_distribute() makes
-- _staff_clinic_id() call it): the login's mapped clinic, or, when mapped to
-- several, the one app.clinic_id names among them; only mappings whose
-- recorded oid is the login's marker on this node count.
create or replace function clinicdb._citus_staff_clinic_id()
returns uuid
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    v_marker text;
begin
    -- Citus evaluates every function call of a distributed query on the
    -- coordinator, the branches current_clinic_id() does not take included:
    -- for anyone not staff this answers NULL instead of reading a table
    -- they may not read.
    if not pg_has_role(current_user, 'clinicdb_staff', 'MEMBER') then
        return null;
    end if;
    -- A login that may write its own marker proves nothing by having one.
    if has_parameter_privilege(current_user, 'clinicdb.staff_grant', 'SET') then
        return null;
    end if;
    select substr(c.item, length('clinicdb.staff_grant=') + 1) into v_marker
      from pg_db_role_setting s, unnest(s.setconfig) c(item)
     where s.setrole = (select r.oid from pg_roles r where r.rolname = current_user)
       and s.setdatabase = (select d.oid from pg_database d where d.datname = current_database())
       and starts_with(c.item, 'clinicdb.staff_grant=');
    if v_marker is null then
        return null;
    end if;
    -- As _staff_clinic_id(), keyed by role name (the same on every node) and
    -- the grant the marker names.
    return (select case
                       when count(*) = 1 then (array_agg(sm.clinic_id))[1]
                       else (array_agg(sm.clinic_id)
                               filter (where sm.clinic_id::text = current_setting('app.clinic_id', true)))[1]
                   end
              from clinicdb.staff_members sm
             where sm.role_name = current_user
               and sm.role_oid::text = v_marker);
end
$$;
comment on function clinicdb._citus_staff_clinic_id() is
    'clinicdb: on Citus, the clinic a staff login is mapped to: by role name and the grant marked on the login (OIDs differ per node).';
revoke execute on function clinicdb._citus_staff_clinic_id() from public;

-- clinicdb.citus_mark_staff(): the upgrade path. Called by `clinicdb
-- migrate` after citus_protect_logs(), as a superuser with DDL propagation
-- on (the default); idempotent.
--   1. Sends the coordinator's definitions of the functions above and of
--      grant_staff()/revoke_staff() to every node: the migration replaced
--      them on the coordinator only (propagation is off there), and
--      citus_distribute()'s create_distributed_function() does not send a
--      function that is already distributed again, so a worker's shards
--      would keep matching staff by name alone.
--   2. Marks every staff login whose mapping is still its own (the role
--      exists on the coordinator with the recorded oid and is in
--      clinicdb_staff), on every node: mappings granted before the marker
--      existed keep working. A stale mapping (its role dropped, or recreated
--      by hand) is never marked, so it stays dead; `clinicdb check` reports
--      it. Run again after adding a node.
-- With p_undo, removes every marker in this database instead.
create or replace procedure clinicdb.citus_mark_staff(p_undo boolean default false)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_role name;
    v_function regprocedure;
begin
    if not exists (select 1 from pg_extension where extname = 'citus') then
        raise exception 'the citus extension is not installed in this database'
            using errcode = 'feature_not_supported';
    end if;
    -- Every statement below must reach every node.
    set local citus.enable_ddl_propagation = on;
    if p_undo then
        for v_role in
            select r.rolname from pg_roles r
             where exists (select 1 from pg_db_role_setting s, unnest(s.setconfig) c(item)
                            where s.setrole = r.oid
                              and s.setdatabase = (select d.oid from pg_database d
                                                    where d.datname = current_database())
                              and starts_with(c.item, 'clinicdb.staff_grant='))
             order by 1
        loop
            perform clinicdb._citus_mark_staff(v_role, false);
        end loop;
        return;
    end if;
    foreach v_function in array array['clinicdb._citus_staff_clinic_id()'::regprocedure,
                                      'clinicdb._citus_mark_staff(name, boolean)'::regprocedure,
                                      'clinicdb.grant_staff(name, uuid)'::regprocedure,
                                      'clinicdb.revoke_staff(name, uuid)'::regprocedure] loop
        -- create or replace of a distributed function: Citus runs it on every node (owner and grants kept).
        execute pg_get_functiondef(v_function);
    end loop;
    for v_role in
        select distinct r.rolname
          from clinicdb.staff_members sm
          join pg_roles r on r.rolname = sm.role_name and r.oid = sm.role_oid
         where pg_has_role(r.oid, 'clinicdb_staff', 'MEMBER')
         order by 1
    loop
        perform clinicdb._citus_mark_staff(v_role, true);
    end loop;
end
$$;
comment on procedure clinicdb.citus_mark_staff(boolean) is
    'clinicdb: on Citus, marks every staff login whose mapping is its own on every node (run by migrate; again after adding a node).';
revoke execute on procedure clinicdb.citus_mark_staff(boolean) from public;
