-- 0002.tenancy-core: The clinicdb schema: clinics, staff mapping, current_clinic_id(), the one tenant policy,
-- protect_table(), check_isolation() and the staff functions.
-- depends: 0001.roles
--
-- Frozen: the SQL below is what this migration runs, copied from sql/schema/clinicdb.sql,
-- sql/schema/clinics.sql, sql/schema/staff_members.sql, sql/functions/current_clinic_id.sql,
-- sql/functions/touch_row.sql, sql/policies/tenant_policies.sql, sql/functions/protect_table.sql,
-- sql/functions/check_isolation.sql, sql/functions/staff.sql, sql/functions/clinics.sql,
-- sql/schema/protect_core.sql when it was written. migrations/migrations.lock pins it: change sql/ and
-- add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/schema/clinicdb.sql ----
-- The clinicdb schema: the layer's own functions and registries. Owned by
-- clinicdb_owner. Functions are not executable by PUBLIC by default here:
-- each one is granted to the roles that need it, next to its definition.
create schema if not exists clinicdb authorization clinicdb_owner;
comment on schema clinicdb is 'clinicdb: tenant isolation, audit and key management for a multi-clinic database.';

grant usage on schema clinicdb to clinicdb_app, clinicdb_readonly, clinicdb_staff, clinicdb_auditor;

alter default privileges for role clinicdb_owner revoke execute on functions from public;
alter default privileges for role clinicdb_owner in schema clinicdb revoke execute on functions from public;

-- Application tables the owner creates later are usable by the application
-- roles without a grant per table. TRUNCATE, REFERENCES and TRIGGER are
-- deliberately absent: RLS does not cover them.
alter default privileges for role clinicdb_owner in schema public
    grant select, insert, update, delete on tables to clinicdb_app, clinicdb_staff;
alter default privileges for role clinicdb_owner in schema public
    grant select on tables to clinicdb_readonly;

-- Columns holding protected health information, so audit, encryption and
-- reviews can find them. Filled by the schema that declares them.
create table if not exists clinicdb.phi_columns (
    table_name regclass not null,
    column_name name not null,
    note text not null default '',
    primary key (table_name, column_name)
);
comment on table clinicdb.phi_columns is 'clinicdb: columns that hold protected health information (PHI).';
grant select on clinicdb.phi_columns to clinicdb_app, clinicdb_readonly, clinicdb_staff, clinicdb_auditor;
-- ---- sql/schema/clinics.sql ----
-- The tenants. Every tenant table references clinics (id). A clinic row is
-- itself tenant data (name, contact), so clinics carries a clinic_id too --
-- generated as a copy of id -- and is protected by the very same policy as
-- every other tenant table: an application transaction sees only its clinic.
-- Clinics are created by operators through clinicdb.create_clinic().
create table if not exists public.clinics (
    id uuid primary key default gen_random_uuid(),
    clinic_id uuid generated always as (id) stored not null,
    name text not null check (length(btrim(name)) > 0),
    timezone text not null default 'UTC',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    unique (clinic_id, id)
);
alter table public.clinics owner to clinicdb_owner;
-- Operators create and retire clinics (create_clinic, deleted_at); the app and
-- staff only edit their own row. Without this, a hostile staff login could
-- delete its clinic's row and, by cascade, every colleague's staff mapping.
revoke insert, delete, truncate on public.clinics from clinicdb_app, clinicdb_staff;
comment on table public.clinics is 'clinicdb: the tenants; each row is one clinic.';
comment on column public.clinics.clinic_id is 'Always equal to id, so the standard tenant policy applies unchanged.';
-- ---- sql/schema/staff_members.sql ----
-- Maps human psql logins (members of clinicdb_staff) to the clinic(s) they
-- work for. current_clinic_id() reads it for staff instead of app.clinic_id,
-- which a staff session can set to anything. Maintained only through
-- clinicdb.grant_staff() / clinicdb.revoke_staff().
create table if not exists clinicdb.staff_members (
    role_name name not null,
    -- The role's oid at grant time: a later role that reuses the name is a
    -- different person and must not inherit the mapping (fails closed).
    role_oid oid not null,
    clinic_id uuid not null references public.clinics (id) on delete cascade,
    granted_at timestamptz not null default now(),
    granted_by name not null default session_user,
    primary key (role_name, clinic_id)
);
comment on table clinicdb.staff_members is
    'clinicdb: which clinic each staff login may act for. A renamed role loses its mapping (fails closed).';

-- A staff login may read its own mapping (current_clinic_id needs it) and
-- nothing else: other logins' names and clinics are not its business. Not
-- forced, so the owner and DBAs see every row.
alter table clinicdb.staff_members enable row level security;
drop policy if exists staff_members_own on clinicdb.staff_members;
create policy staff_members_own on clinicdb.staff_members
    for select using (role_name = current_user);
grant select on clinicdb.staff_members to clinicdb_staff;
-- ---- sql/functions/current_clinic_id.sql ----
-- clinicdb.current_clinic_id(): the clinic in force for this transaction, the
-- one input of every tenant policy (sql/policies/tenant_policies.sql).
--
-- Who decides the clinic depends on who is asking:
--   * staff (members of clinicdb_staff): their login's mapping in
--     clinicdb.staff_members. app.clinic_id is ignored -- a human in psql can
--     set any GUC -- except to pick one clinic among several they are mapped to.
--     Staff is checked first, so a role that is both staff and app is staff.
--   * the application (clinicdb_app, clinicdb_readonly): app.clinic_id, which
--     the driver sets per transaction with set_config(..., true).
--   * anyone else (owner, auditor, unknown roles): NULL, which every policy
--     turns into "no rows".
-- An empty app.clinic_id is what a transaction-local setting leaves behind on
-- a pooled connection after commit: it means "no clinic", not an error. A
-- malformed one is an error naming the setting, never a silent empty result.
--
-- current_user (not session_user) is the identity: SET ROLE to a role a login
-- really holds changes it, and for a staff login the only other role it holds
-- is the clinicdb_staff group, which has no mapping and so sees nothing.
--
-- Why SQL-standard bodies (begin atomic) and no `set search_path` clause:
-- every policy evaluates this once per statement, so its cost is paid by every
-- query of every clinic. A begin-atomic body is parsed and bound to object
-- OIDs when it is created, so the caller's search_path cannot redirect any
-- name in it (the protection a pinned search_path gives), and without a SET
-- clause the planner inlines it into the policy's InitPlan: no function call
-- at all. Measured: the plpgsql version with `set search_path` cost ~75 us per
-- statement, 14% of a point read's throughput (bench/bench_isolation.py).
-- Not LEAKPROOF: it can raise on a malformed setting, and with no arguments it
-- is never pushed below a security qual anyway.

-- Errors live in plpgsql helpers that only run on the failing branch.
create or replace function clinicdb._invalid_clinic_setting(p_value text)
returns uuid
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
    raise exception 'app.clinic_id is not a clinic uuid: %', left(p_value, 64)
        using errcode = 'invalid_parameter_value',
              hint = 'set it per transaction: select set_config(''app.clinic_id'', ''<clinic uuid>'', true)';
end
$$;
comment on function clinicdb._invalid_clinic_setting(text) is
    'clinicdb: raises the error for a malformed app.clinic_id (used by current_clinic_id()).';
grant execute on function clinicdb._invalid_clinic_setting(text) to public;

create or replace function clinicdb._no_clinic_in_force()
returns uuid
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
    raise exception 'no clinic is in force for this transaction'
        using errcode = 'insufficient_privilege',
              hint = 'the application sets it per transaction with '
                     'set_config(''app.clinic_id'', ''<clinic uuid>'', true); '
                     'a staff login must be mapped with clinicdb.grant_staff()';
end
$$;
comment on function clinicdb._no_clinic_in_force() is
    'clinicdb: raises the error for a write with no clinic in force (used by require_clinic_id()).';
grant execute on function clinicdb._no_clinic_in_force() to public;

-- The staff branch: the login's mapped clinic, or, when mapped to several,
-- the one app.clinic_id names if it is among them. Reads staff_members
-- under its own policy (a login sees only its own rows).
create or replace function clinicdb._staff_clinic_id()
returns uuid
language sql
stable
parallel safe
begin atomic
    select case
               when count(*) = 1 then (array_agg(sm.clinic_id))[1]
               else (array_agg(sm.clinic_id)
                         filter (where sm.clinic_id::text = current_setting('app.clinic_id', true)))[1]
           end
      from clinicdb.staff_members sm
     where sm.role_name = current_user
       -- Same name is not enough: a dropped login's mapping is not inherited
       -- by a new role that reuses its name (the oid differs).
       and sm.role_oid = (select r.oid from pg_roles r where r.rolname = current_user);
end;
comment on function clinicdb._staff_clinic_id() is
    'clinicdb: the clinic a staff login acts for (used by current_clinic_id()).';
grant execute on function clinicdb._staff_clinic_id() to public;

create or replace function clinicdb.current_clinic_id()
returns uuid
language sql
stable
parallel safe
begin atomic
    select case
        when pg_has_role(current_user, 'clinicdb_staff', 'MEMBER') then clinicdb._staff_clinic_id()
        when pg_has_role(current_user, 'clinicdb_app', 'MEMBER')
          or pg_has_role(current_user, 'clinicdb_readonly', 'MEMBER') then
            case
                when coalesce(current_setting('app.clinic_id', true), '') = '' then null
                when current_setting('app.clinic_id', true)
                     ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
                    then current_setting('app.clinic_id', true)::uuid
                else clinicdb._invalid_clinic_setting(current_setting('app.clinic_id', true))
            end
    end;
end;
comment on function clinicdb.current_clinic_id() is
    'clinicdb: the clinic in force for this transaction (app.clinic_id for the app, the login''s mapping for staff), or NULL.';
grant execute on function clinicdb.current_clinic_id() to public;

-- clinicdb.require_clinic_id(): the same, but a missing clinic is an error
-- that says what to do. Writes use it (insert/update/delete policies and the
-- clinic_id default), so a write with no clinic fails loudly instead of
-- silently doing nothing or landing nowhere.
create or replace function clinicdb.require_clinic_id()
returns uuid
language sql
stable
parallel safe
begin atomic
    select coalesce(clinicdb.current_clinic_id(), clinicdb._no_clinic_in_force());
end;
comment on function clinicdb.require_clinic_id() is
    'clinicdb: current_clinic_id(), raising an error with a hint when no clinic is in force.';
grant execute on function clinicdb.require_clinic_id() to public;
-- ---- sql/functions/touch_row.sql ----
-- clinicdb.touch_row(): before-update trigger on tenant tables.
-- updated_at is set by the database (clock time, so two updates in one
-- transaction still differ), and clinic_id never changes: a row moves
-- between clinics only by copy, never in place, even for roles the policies
-- do not bind (owner, superuser).
create or replace function clinicdb.touch_row()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    -- NEW.clinic_id is NULL here when clinic_id is a generated column (as on
    -- clinics): BEFORE triggers run before it is computed. Such a row's clinic
    -- follows its key, which the update policy's WITH CHECK and the foreign
    -- keys guard; a NULL written into a plain clinic_id fails NOT NULL.
    if new.clinic_id is not null and new.clinic_id is distinct from old.clinic_id then
        raise exception 'clinic_id of a % row cannot change', tg_table_name
            using errcode = 'check_violation',
                  hint = 'insert a copy under the other clinic and soft-delete this one';
    end if;
    new.updated_at := clock_timestamp();
    return new;
end
$$;
comment on function clinicdb.touch_row() is
    'clinicdb: keeps updated_at current and clinic_id unchanged on update.';
grant execute on function clinicdb.touch_row() to public;
-- ---- sql/policies/tenant_policies.sql ----
-- THE tenant policy: the one definition every tenant table gets.
--
-- protect_table() creates these four policies from this table's rows,
-- `clinicdb sql policies` prints what protect_table would run, and
-- clinicdb.check_isolation() compares each table's live policies with a
-- reference table protected from these same rows. Change the rule here, once.
--
-- Invariants:
--   * select: a row is visible only while its clinic is in force; with no
--     clinic in force, current_clinic_id() is NULL and nothing is visible.
--   * insert/update/delete: require_clinic_id() raises a clear error when no
--     clinic is in force, so a write never silently does nothing.
--   * update: WITH CHECK too, so a row can never be moved to another clinic.
--   * Each call is wrapped in (select ...): PostgreSQL evaluates it once per
--     statement (an InitPlan), and `clinic_id = $initplan` can use the
--     (clinic_id, ...) indexes. A bare call would run once per row.
create table if not exists clinicdb.tenant_policies (
    command text primary key check (command in ('select', 'insert', 'update', 'delete')),
    policy_name name not null unique,
    using_expr text,
    check_expr text
);
comment on table clinicdb.tenant_policies is
    'clinicdb: the single definition of the tenant policy, one row per command.';

insert into clinicdb.tenant_policies (command, policy_name, using_expr, check_expr) values
    ('select', 'clinicdb_tenant_select',
        'clinic_id = (select clinicdb.current_clinic_id())', null),
    ('insert', 'clinicdb_tenant_insert',
        null, 'clinic_id = (select clinicdb.require_clinic_id())'),
    ('update', 'clinicdb_tenant_update',
        'clinic_id = (select clinicdb.require_clinic_id())',
        'clinic_id = (select clinicdb.require_clinic_id())'),
    ('delete', 'clinicdb_tenant_delete',
        'clinic_id = (select clinicdb.require_clinic_id())', null)
on conflict (command) do update
    set policy_name = excluded.policy_name,
        using_expr = excluded.using_expr,
        check_expr = excluded.check_expr;
-- ---- sql/functions/protect_table.sql ----
-- clinicdb.protect_table(regclass): make a table with a clinic_id column
-- tenant-isolated. Idempotent: safe to run again after a change to the
-- standard policy, which it then re-applies.
--
-- clinicdb.protect_table_sql(regclass) returns the exact statements, so a DBA
-- can review them (`clinicdb sql policies TABLE`); protect_table runs those
-- same statements and nothing else, then records the table in the registry.

create table if not exists clinicdb.protected_tables (
    table_name regclass primary key,
    protected_at timestamptz not null default now(),
    protected_by name not null default session_user
);
comment on table clinicdb.protected_tables is 'clinicdb: tables protect_table() has made tenant-isolated.';
grant select on clinicdb.protected_tables to clinicdb_auditor;

create or replace function clinicdb.protect_table_sql(p_table regclass)
returns setof text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_col record;
    v_policy record;
    v_role text;
    v_partition text;
begin
    select a.attnotnull, a.attgenerated, format_type(a.atttypid, a.atttypmod) as type_name
      into v_col
      from pg_attribute a
     where a.attrelid = p_table and a.attname = 'clinic_id' and not a.attisdropped;
    if not found then
        raise exception 'table % has no clinic_id column', p_table
            using errcode = 'undefined_column',
                  hint = 'add one first: alter table ... add column clinic_id uuid not null references clinics (id)';
    end if;
    if v_col.type_name <> 'uuid' then
        raise exception 'table %: clinic_id is %, not uuid', p_table, v_col.type_name
            using errcode = 'datatype_mismatch',
                  hint = 'clinic ids are uuids; alter the column type to uuid';
    end if;
    if (select c.relkind from pg_class c where c.oid = p_table) not in ('r', 'p') then
        raise exception '% is not a table', p_table
            using errcode = 'wrong_object_type',
                  hint = 'protect the underlying table; views should use security_invoker';
    end if;

    -- Inserts need not name the clinic; with none in force the default raises.
    if v_col.attgenerated = '' then
        return next format('alter table %s alter column clinic_id set default clinicdb.require_clinic_id()', p_table);
    end if;
    if not v_col.attnotnull then
        return next format('alter table %s alter column clinic_id set not null', p_table);
    end if;

    -- Forced: the owner is subject to the policies too; only superusers and
    -- BYPASSRLS roles (which the layer never creates) are not.
    return next format('alter table %s enable row level security', p_table);
    return next format('alter table %s force row level security', p_table);

    for v_policy in select * from clinicdb.tenant_policies order by command loop
        return next format('drop policy if exists %I on %s', v_policy.policy_name, p_table);
        return next format('create policy %I on %s as permissive for %s to public%s%s',
            v_policy.policy_name, p_table, v_policy.command,
            coalesce(' using (' || v_policy.using_expr || ')', ''),
            coalesce(' with check (' || v_policy.check_expr || ')', ''));
    end loop;

    -- RLS does not cover TRUNCATE (wipes every clinic), REFERENCES (a foreign
    -- key from a table you own probes other clinics' keys) or TRIGGER.
    foreach v_role in array array['public', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor'] loop
        return next format('revoke truncate, references, trigger on %s from %s', p_table, v_role);
    end loop;

    -- Partitions are tables of their own: a query naming a partition directly
    -- is checked against the PARTITION's policies, not the parent's. Without
    -- this, a protected partitioned table hands every clinic's rows to anyone
    -- who selects from one of its partitions (they get the default grants).
    -- Partitions created later are reported by check_isolation() until
    -- protect_table runs again (on the parent or on them).
    for v_partition in
        select i.inhrelid::regclass::text from pg_inherits i where i.inhparent = p_table order by 1
    loop
        if (select c.relkind from pg_class c where c.oid = p_table) = 'p' then
            return next format('select clinicdb.protect_table(%L)', v_partition);
        end if;
    end loop;

    -- updated_at is kept by the database, not trusted from the client. A
    -- partition gets the trigger from its partitioned table (PostgreSQL
    -- clones row triggers onto partitions), and cannot drop that clone.
    if exists (select 1 from pg_attribute where attrelid = p_table and attname = 'updated_at' and not attisdropped)
       and not (select c.relispartition from pg_class c where c.oid = p_table) then
        return next format('drop trigger if exists clinicdb_touch_row on %s', p_table);
        return next format('create trigger clinicdb_touch_row before update on %s '
                           'for each row execute function clinicdb.touch_row()', p_table);
    end if;
end
$$;
comment on function clinicdb.protect_table_sql(regclass) is
    'clinicdb: the statements protect_table() would run for a table, for review.';
grant execute on function clinicdb.protect_table_sql(regclass) to clinicdb_owner, clinicdb_auditor;

create or replace function clinicdb.protect_table(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_stmt text;
    v_extra text;
begin
    for v_stmt in select * from clinicdb.protect_table_sql(p_table) loop
        execute v_stmt;
    end loop;

    -- A permissive policy of someone else's is OR-ed with ours and widens
    -- access; clinicdb.check_isolation() reports it as a finding.
    select string_agg(polname::text, ', ') into v_extra
      from pg_policy
     where polrelid = p_table and polpermissive
       and polname not in (select policy_name from clinicdb.tenant_policies);
    if v_extra is not null then
        raise warning 'table % has other permissive policies (%), which widen the tenant policy', p_table, v_extra
            using hint = 'drop them, or make them restrictive (as restrictive)';
    end if;

    -- Later layers (audit) attach their triggers when they are installed
    -- (to a partitioned table, whose row triggers partitions inherit).
    if to_regprocedure('clinicdb.attach_audit(regclass)') is not null
       and not (select c.relispartition from pg_class c where c.oid = p_table) then
        execute 'select clinicdb.attach_audit($1)' using p_table;
    end if;

    insert into clinicdb.protected_tables (table_name) values (p_table)
    on conflict (table_name) do update set protected_at = now(), protected_by = session_user;
end
$$;
comment on function clinicdb.protect_table(regclass) is
    'clinicdb: make a table with a clinic_id column tenant-isolated (forced RLS, the standard policies). Idempotent.';
grant execute on function clinicdb.protect_table(regclass) to clinicdb_owner;
-- ---- sql/functions/check_isolation.sql ----
-- clinicdb.check_isolation(): prove, in a live database, that every table
-- with a clinic_id column in the application schemas is protected, and that
-- nothing beside the policies opens a way around them. One row per finding;
-- no rows means protected. `clinicdb check` prints these and exits 1 on any.
--
-- The standard policies are compared with those of clinicdb.policy_reference,
-- a table protected from the same clinicdb.tenant_policies rows, through
-- pg_get_expr: a policy edited by hand on any table shows up as a finding.

create table if not exists clinicdb.policy_reference (clinic_id uuid not null);
comment on table clinicdb.policy_reference is
    'clinicdb: never holds rows; carries the standard tenant policies so check_isolation() can compare against them.';
revoke all on clinicdb.policy_reference from public;

create or replace function clinicdb.check_isolation(p_schemas text[] default null)
returns table (table_name text, finding text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_schemas text[];
begin
    -- Application schemas: every non-system schema except the layer's own
    -- (its tables have their own tests) unless the caller names them.
    select coalesce(p_schemas, array_agg(n.nspname::text)) into v_schemas
      from pg_namespace n
     where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast', 'clinicdb', 'clinicdb_tap')
       and n.nspname not like 'pg\_temp\_%' and n.nspname not like 'pg\_toast\_temp\_%';

    return query
    with tenant_tables as (
        -- Names are always schema-qualified, whatever the caller's search_path.
        select c.oid as relid, format('%I.%I', n.nspname, c.relname) as name, c.relrowsecurity, c.relforcerowsecurity,
               c.relowner, c.relkind, a.attnotnull
          from pg_class c
          join pg_namespace n on n.oid = c.relnamespace
          join pg_attribute a on a.attrelid = c.oid and a.attname = 'clinic_id' and not a.attisdropped
         -- Partitions included: a query that names a partition directly is
         -- checked against the partition's own policies, not its parent's.
         where n.nspname = any (v_schemas)
           and c.relkind in ('r', 'p')
    ),
    reference as (
        select p.polname, p.polcmd, p.polpermissive, p.polroles,
               pg_get_expr(p.polqual, p.polrelid) as qual,
               pg_get_expr(p.polwithcheck, p.polrelid) as withcheck
          from pg_policy p
         where p.polrelid = 'clinicdb.policy_reference'::regclass
    ),
    findings as (
        select t.name, 'row level security is not enabled'::text as finding
          from tenant_tables t where not t.relrowsecurity
        union all
        select t.name, 'row level security is not forced (the owner bypasses it)'
          from tenant_tables t where not t.relforcerowsecurity
        union all
        select t.name, 'clinic_id allows NULL'
          from tenant_tables t where not t.attnotnull
        union all
        select t.name, 'not registered by clinicdb.protect_table()'
          from tenant_tables t
         where not exists (select 1 from clinicdb.protected_tables pt where pt.table_name = t.relid)
        union all
        select t.name, format('standard policy %s is missing', r.polname)
          from tenant_tables t cross join reference r
         where not exists (select 1 from pg_policy p where p.polrelid = t.relid and p.polname = r.polname)
        union all
        select t.name, format('policy %s differs from the standard definition', p.polname)
          from tenant_tables t
          join pg_policy p on p.polrelid = t.relid
          join reference r on r.polname = p.polname
         where p.polcmd <> r.polcmd or p.polpermissive <> r.polpermissive or p.polroles <> r.polroles
            or pg_get_expr(p.polqual, p.polrelid) is distinct from r.qual
            or pg_get_expr(p.polwithcheck, p.polrelid) is distinct from r.withcheck
        union all
        select t.name, format('extra permissive policy %s widens the tenant policy', p.polname)
          from tenant_tables t
          join pg_policy p on p.polrelid = t.relid
         where p.polpermissive and p.polname not in (select r.polname from reference r)
        union all
        select t.name, format('owned by %s, which holds an application or staff role', pg_get_userbyid(t.relowner))
          from tenant_tables t
         -- An owner can disable RLS; it must not be a role the app or staff
         -- can act as. (A superuser counts as a member of every role, but no
         -- application role can become one: that is checked below.)
         where not (select r.rolsuper from pg_roles r where r.oid = t.relowner)
           and (pg_has_role(t.relowner, 'clinicdb_app', 'MEMBER')
                or pg_has_role(t.relowner, 'clinicdb_readonly', 'MEMBER')
                or pg_has_role(t.relowner, 'clinicdb_staff', 'MEMBER'))
        union all
        -- A foreign key between tenant tables that does not carry clinic_id
        -- lets a row point at another clinic's row. Referential checks run
        -- below row level security, so inserting such a row also confirms
        -- that the other clinic's key exists, and ON DELETE/UPDATE actions
        -- reach across clinics. The clinic_id -> clinics (id) key is fine.
        select t.name, format('foreign key %s references %s without clinic_id: a row can point at another clinic''s row',
                              con.conname, con.confrelid::regclass)
          from tenant_tables t
          join pg_constraint con on con.conrelid = t.relid and con.contype = 'f' and con.conparentid = 0
          join pg_attribute la on la.attrelid = t.relid and la.attname = 'clinic_id' and not la.attisdropped
          join pg_attribute ra on ra.attrelid = con.confrelid and ra.attname = 'clinic_id' and not ra.attisdropped
         where con.conkey <> array[la.attnum]
           and not exists (select 1 from unnest(con.conkey, con.confkey) k(l, r) where k.l = la.attnum and k.r = ra.attnum)
        union all
        -- A unique (or exclusion) index without clinic_id is checked across
        -- every clinic: inserting a value another clinic already has fails,
        -- which tells the inserter that value exists (an SSN, an e-mail).
        -- Keys made only of uuid columns (random ids) are left out: probing
        -- them needs the id already (docs: residual risks).
        select t.name, format('unique index %s leaves clinic_id out: a value another clinic has is refused, which reveals it',
                              i.indexrelid::regclass)
          from tenant_tables t
          join pg_index i on i.indrelid = t.relid and (i.indisunique or i.indisexclusion)
          join pg_attribute la on la.attrelid = t.relid and la.attname = 'clinic_id' and not la.attisdropped
         where not (la.attnum = any (i.indkey::int2[]))
           and (i.indexprs is not null
                or exists (select 1 from unnest(i.indkey::int2[]) k(attnum)
                             join pg_attribute a on a.attrelid = t.relid and a.attnum = k.attnum
                            where a.atttypid <> 'uuid'::regtype))
        union all
        -- TRUNCATE, REFERENCES and TRIGGER are not covered by RLS.
        select t.name, format('%s holds %s, which row level security does not cover',
                              case when acl.grantee = 0 then 'public' else pg_get_userbyid(acl.grantee) end,
                              acl.privilege_type)
          from tenant_tables t
          cross join lateral aclexplode((select c.relacl from pg_class c where c.oid = t.relid)) acl
         where acl.privilege_type in ('TRUNCATE', 'REFERENCES', 'TRIGGER')
           and acl.grantee <> t.relowner
        union all
        -- A view that is not security_invoker reads the table with its
        -- owner's rights; if that owner bypasses RLS, so does every reader.
        -- A materialized view stores whatever its refresher could see.
        select t.name, format('%s %s reads it %s',
                              case v.relkind when 'm' then 'materialized view' else 'view' end,
                              (select format('%I.%I', vn.nspname, v.relname) from pg_namespace vn where vn.oid = v.relnamespace),
                              case v.relkind when 'm' then 'and stores rows outside the policy'
                                   else 'without security_invoker' end)
          from tenant_tables t
          join pg_depend d on d.refobjid = t.relid and d.classid = 'pg_rewrite'::regclass
          join pg_rewrite rw on rw.oid = d.objid
          join pg_class v on v.oid = rw.ev_class and v.oid <> t.relid
         where v.relkind = 'm'
            or (v.relkind = 'v' and not coalesce('security_invoker=true' = any (v.reloptions)
                                                  or 'security_invoker=on' = any (v.reloptions), false))
    )
    select distinct f.name, f.finding from findings f
    union all
    -- The application path must never be able to skip the policies.
    select r.rolname::text, 'role holds an application or staff role and bypasses row level security'
      from pg_roles r
     where (r.rolsuper or r.rolbypassrls)
       and r.rolname not in ('clinicdb_owner')
       and (exists (select 1 from pg_auth_members m join pg_roles g on g.oid = m.roleid
                     where m.member = r.oid
                       and g.rolname in ('clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor')))
    union all
    select r.rolname::text, 'clinicdb group role is SUPERUSER or BYPASSRLS'
      from pg_roles r
     where r.rolname in ('clinicdb_owner', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor')
       and (r.rolsuper or r.rolbypassrls)
    union all
    -- CREATEROLE can grant membership in any role that is not a superuser:
    -- clinicdb_owner, clinicdb_app, another staff login. Not on this path.
    -- REPLICATION lets a login stream the WAL or take a base backup: every
    -- clinic's rows, below any policy.
    select r.rolname::text, case when r.rolcreaterole
                                 then 'role on the application path has CREATEROLE and can grant itself any role'
                                 else 'role on the application path has REPLICATION and can stream every clinic''s data'
                            end
      from pg_roles r
     where (r.rolcreaterole or r.rolreplication) and not r.rolsuper
       and (pg_has_role(r.oid, 'clinicdb_app', 'MEMBER') or pg_has_role(r.oid, 'clinicdb_readonly', 'MEMBER')
            or pg_has_role(r.oid, 'clinicdb_staff', 'MEMBER') or pg_has_role(r.oid, 'clinicdb_auditor', 'MEMBER'))
    union all
    -- SET ROLE escapes: a role on the application path (the app, readonly,
    -- staff, auditor groups and their members) that also holds -- directly or
    -- through other roles -- a role with another way in. SET ROLE needs only
    -- membership, so holding is enough, whatever INHERIT says. grant_staff
    -- refuses these at grant time; this catches a GRANT made afterwards.
    select h.member_name::text, format('can SET ROLE to %s, which %s', h.role_name, h.why)
      from (
        select m.rolname as member_name, g.rolname as role_name,
               case
                   when g.rolsuper or g.rolbypassrls then 'bypasses row level security'
                   when g.rolcreaterole then 'has CREATEROLE and can grant itself any role, clinicdb_owner included'
                   -- Predefined roles whose rights sit below row level security.
                   when g.rolname in ('pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program')
                       then 'reads or writes the server''s files (table files included) or runs programs as the server'
                   when g.rolname in ('pg_read_all_stats', 'pg_monitor')
                       then 'shows the text of every session''s queries, other clinics'' values included'
                   when g.rolname = 'pg_write_all_data'
                       then 'writes every table, the layer''s registries included'
                   when g.rolname = 'clinicdb_owner'
                     or exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                                 where c.relowner = g.oid and (n.nspname = 'clinicdb' or n.nspname = any (v_schemas)))
                     or exists (select 1 from pg_namespace n where n.nspowner = g.oid and n.nspname = 'clinicdb')
                     or exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                                 where p.proowner = g.oid and n.nspname = 'clinicdb')
                       then 'owns tables or functions of the layer and can turn its protection off'
                   when pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER')
                    and g.rolname in ('clinicdb_app', 'clinicdb_readonly')
                       then 'lets a staff login choose any clinic with app.clinic_id'
                   when pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER') and g.rolname = 'clinicdb_auditor'
                       then 'reads the audit data of every clinic'
                   when pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER') and g.rolname <> 'clinicdb_staff'
                    and pg_has_role(g.oid, 'clinicdb_staff', 'MEMBER')
                       then 'is another staff login, mapped to its own clinics'
                   when pg_has_role(m.oid, 'clinicdb_auditor', 'MEMBER')
                    and (g.rolname in ('clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff')
                         or pg_has_role(g.oid, 'clinicdb_staff', 'MEMBER'))
                       then 'gives the auditor the rows of a clinic'
               end as why
          from (
            -- Every (member, role held) pair, through any chain of grants.
            with recursive held(member, roleid) as (
                select am.member, am.roleid from pg_auth_members am
                union
                select held.member, am.roleid from held join pg_auth_members am on am.member = held.roleid
            )
            select held.member, held.roleid from held
          ) pairs
          join pg_roles m on m.oid = pairs.member
          join pg_roles g on g.oid = pairs.roleid
         where not m.rolsuper and m.oid <> g.oid
           and (pg_has_role(m.oid, 'clinicdb_app', 'MEMBER') or pg_has_role(m.oid, 'clinicdb_readonly', 'MEMBER')
                or pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER') or pg_has_role(m.oid, 'clinicdb_auditor', 'MEMBER'))
      ) h
     where h.why is not null
    union all
    -- SECURITY DEFINER functions the application path may call run as their
    -- owner: an owner that bypasses RLS hands its rows to every caller, and a
    -- body resolved at run time through a search_path that does not end in
    -- pg_temp (pg_temp is searched FIRST for tables when not named) can be
    -- pointed at the caller's temporary objects. SQL-standard bodies
    -- (begin atomic) are bound at creation and need no pinned path.
    select f.signature, f.why
      from (
        select p.oid::regprocedure::text as signature,
               case
                   when o.rolsuper or o.rolbypassrls
                       then format('SECURITY DEFINER function owned by %s, which bypasses row level security, '
                                   'is executable by the application or staff', o.rolname)
                   when p.prosqlbody is null
                    and not exists (select 1 from unnest(p.proconfig) c
                                     where c ~ '^search_path=' and c ~ 'pg_temp"?$')
                       then 'SECURITY DEFINER function without a pinned search_path ending in pg_temp '
                            'is executable by the application or staff'
               end as why
          from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
          join pg_roles o on o.oid = p.proowner
         where p.prosecdef
           and n.nspname not in ('pg_catalog', 'information_schema')
           and (has_function_privilege('clinicdb_app', p.oid, 'EXECUTE')
                or has_function_privilege('clinicdb_readonly', p.oid, 'EXECUTE')
                or has_function_privilege('clinicdb_staff', p.oid, 'EXECUTE')
                or has_function_privilege('clinicdb_auditor', p.oid, 'EXECUTE'))
      ) f
     where f.why is not null
    order by 1, 2;

    -- Mappings left behind by a dropped role or a revoked membership grant
    -- nothing (current_clinic_id matches name and oid) but are clutter that
    -- hides who may act where; report them. Only callers that
    -- can read every mapping (the owner, DBAs) can check; others skip it.
    if has_table_privilege('clinicdb.staff_members', 'select')
       and not exists (select 1 from pg_class where oid = 'clinicdb.staff_members'::regclass and relforcerowsecurity)
       and (pg_has_role('clinicdb_owner', 'MEMBER')
            or (select rolsuper or rolbypassrls from pg_roles where rolname = current_user)) then
        return query
        select sm.role_name::text,
               case when r.oid is null
                    then 'staff mapping of a role that no longer exists (or was recreated): run clinicdb.revoke_staff'
                    else 'staff mapping of a role that is not in clinicdb_staff: granting the group would revive it'
               end
          from (select distinct s.role_name, s.role_oid from clinicdb.staff_members s) sm
          left join pg_roles r on r.rolname = sm.role_name and r.oid = sm.role_oid
         where r.oid is null or not pg_has_role(r.oid, 'clinicdb_staff', 'MEMBER')
         order by 1;
    end if;
end
$$;
comment on function clinicdb.check_isolation(text[]) is
    'clinicdb: findings that break tenant isolation in the application schemas (tables named schema.table); no rows means every clinic_id table is protected.';
grant execute on function clinicdb.check_isolation(text[]) to clinicdb_owner, clinicdb_auditor;
-- ---- sql/functions/staff.sql ----
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
-- a new role of that name, and check_isolation() reports them meanwhile.
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
    if not exists (select 1 from public.clinics where id = p_clinic) then
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
-- ---- sql/functions/clinics.sql ----
-- Operators create clinics; the application cannot (clinics is a tenant
-- table and the app only ever sees the clinic in force). SECURITY INVOKER and
-- granted to nobody: a DBA (a role that bypasses RLS) runs it.
create or replace function clinicdb.create_clinic(p_name text, p_id uuid default null, p_timezone text default 'UTC')
returns uuid
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id uuid := coalesce(p_id, gen_random_uuid());
begin
    if p_name is null or length(btrim(p_name)) = 0 then
        raise exception 'a clinic needs a name' using errcode = 'invalid_parameter_value';
    end if;
    insert into public.clinics (id, name, timezone) values (v_id, btrim(p_name), p_timezone)
    on conflict (id) do nothing;
    return v_id;
end
$$;
comment on function clinicdb.create_clinic(text, uuid, text) is
    'clinicdb: create a clinic (tenant) and return its id. For operators (DBAs); granted to no application role.';
revoke execute on function clinicdb.create_clinic(text, uuid, text) from public;
-- ---- sql/schema/protect_core.sql ----
-- The layer's own tenant tables get the standard protection like any other:
-- policy_reference carries the policies check_isolation() compares against,
-- clinics is where each clinic sees only itself.
select clinicdb.protect_table('clinicdb.policy_reference');
select clinicdb.protect_table('public.clinics');
reset role;
