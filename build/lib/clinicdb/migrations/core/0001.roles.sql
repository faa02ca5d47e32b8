-- 0001.roles: The five clinicdb group roles (cluster-wide) and the owner's rights in this database.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/schema/roles.sql when it was
-- written. migrations/migrations.lock pins it: change sql/ and add a new migration instead of editing
-- this file.

-- ---- sql/schema/roles.sql ----
-- The five group roles of CONTRACT.md. They are NOLOGIN groups: deployments
-- create their own login roles and grant membership (the dev cluster creates
-- clinicdb_app_user and friends). Roles are cluster-wide, so creation is
-- guarded and attributes are reasserted on every run: a role someone
-- created earlier by hand with BYPASSRLS is corrected, not trusted.
do $$
declare
    v_role text;
begin
    foreach v_role in array array[
        'clinicdb_owner', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor'
    ] loop
        if not exists (select 1 from pg_roles where rolname = v_role) then
            execute format('create role %I nologin', v_role);
        end if;
        -- Nobody in the layer may skip row level security or act as a superuser.
        execute format(
            'alter role %I nologin nosuperuser nobypassrls nocreatedb nocreaterole noreplication',
            v_role
        );
    end loop;
end
$$;

comment on role clinicdb_owner is
    'clinicdb: owns the layer''s schema objects; migrations act as it. Subject to forced RLS.';
comment on role clinicdb_app is
    'clinicdb: the application; sets app.clinic_id per transaction. Never owner, never BYPASSRLS.';
comment on role clinicdb_readonly is
    'clinicdb: read-only application access (replicas, analytics), still scoped to one clinic.';
comment on role clinicdb_staff is
    'clinicdb: human psql logins, each mapped to its clinic by clinicdb.grant_staff().';
comment on role clinicdb_auditor is
    'clinicdb: reads audit trails across clinics; no access to PHI tables.';

-- The owner builds the schema; it needs to create in this database and in public.
do $$
begin
    execute format('grant create, connect, temporary on database %I to clinicdb_owner', current_database());
    execute format(
        'grant connect on database %I to clinicdb_app, clinicdb_readonly, clinicdb_staff, clinicdb_auditor',
        current_database()
    );
    -- Temporary objects are the one thing a staff login could otherwise
    -- create. In the implicit pg_temp schema, searched FIRST for tables and
    -- types unless a search_path names it last, they can shadow what a
    -- function with a careless search_path (or an operator's ad-hoc script in
    -- that session) refers to, and they are storage outside any clinic.
    -- PostgreSQL grants TEMP to PUBLIC by default: take it back, and give it
    -- to the application only (drivers may stage bulk loads in temp tables).
    -- Readonly runs on hot standbys, which allow no temp tables anyway.
    execute format('revoke temporary on database %I from public', current_database());
    execute format('grant temporary on database %I to clinicdb_app', current_database());
end
$$;
grant create, usage on schema public to clinicdb_owner;

-- Large objects live outside every table, so outside every clinic: no row
-- level security, no audit, readable by anyone their creator grants them to
-- (GRANT SELECT ON LARGE OBJECT ... TO PUBLIC). Any role may create them by
-- default; in a clinicdb database nobody on the application path may. PHI
-- belongs in bytea columns of tenant tables. (lo_import from a server file is
-- superuser-only already.) Per database: pg_proc ACLs are database-local.
revoke execute on function pg_catalog.lo_creat(integer) from public;
revoke execute on function pg_catalog.lo_create(oid) from public;
revoke execute on function pg_catalog.lo_from_bytea(oid, bytea) from public;
