-- 0014.create-clinic-refuses-bad-input: clinicdb.create_clinic() refuses an id that exists (it used to return quietly) and a time zone
-- PostgreSQL does not know (it used to be stored) (#13).
-- depends: 0012.audit-row-keys
--
-- Frozen: the SQL below is what this migration runs, copied from sql/functions/clinics.sql when it was
-- written. migrations/migrations.lock pins it: change sql/ and add a new migration instead of editing
-- this file.

set local role clinicdb_owner;
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
    -- A time zone PostgreSQL does not know would break every local-time
    -- computation for the clinic later, far from here.
    if p_timezone is null or not exists (select 1 from pg_timezone_names where name = p_timezone) then
        raise exception 'unknown time zone %', coalesce(p_timezone, 'NULL')
            using errcode = 'invalid_parameter_value',
                  hint = 'use a name from pg_timezone_names, e.g. Europe/Berlin or America/New_York';
    end if;
    -- An existing id is an operator's mistake (two clinics meant as one, or a
    -- copy-paste): say so instead of quietly returning the other clinic.
    if exists (select 1 from clinicdb.clinics where id = v_id) then
        raise exception 'clinic % exists already (%)', v_id, (select name from clinicdb.clinics where id = v_id)
            using errcode = 'unique_violation', hint = 'list clinics with: clinicdb clinic list';
    end if;
    insert into clinicdb.clinics (id, name, timezone) values (v_id, btrim(p_name), p_timezone);
    return v_id;
end
$$;
comment on function clinicdb.create_clinic(text, uuid, text) is
    'clinicdb: create a clinic (tenant) and return its id. For operators (DBAs); granted to no application role.';
revoke execute on function clinicdb.create_clinic(text, uuid, text) from public;
reset role;
