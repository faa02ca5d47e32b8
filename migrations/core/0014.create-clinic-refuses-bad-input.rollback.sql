-- 0014.create-clinic-refuses-bad-input: undo 0014: create_clinic() as 0006 left it.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/(the previous version of)
-- functions/clinics.sql when it was written. migrations/migrations.lock pins it: change sql/ and add a
-- new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/clinics.sql, as it was before 0014 ----
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
    insert into clinicdb.clinics (id, name, timezone) values (v_id, btrim(p_name), p_timezone)
    on conflict (id) do nothing;
    return v_id;
end
$$;
comment on function clinicdb.create_clinic(text, uuid, text) is
    'clinicdb: create a clinic (tenant) and return its id. For operators (DBAs); granted to no application role.';
revoke execute on function clinicdb.create_clinic(text, uuid, text) from public;
reset role;
