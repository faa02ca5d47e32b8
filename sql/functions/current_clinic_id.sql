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
-- STABLE and PARALLEL SAFE; policies call it as (select ...) so it runs once
-- per statement as an InitPlan. Not LEAKPROOF: it raises on a malformed
-- setting, and with no arguments it is never pushed below a security qual.
create or replace function clinicdb.current_clinic_id()
returns uuid
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    v_raw text;
    v_clinics uuid[];
begin
    if pg_has_role(current_user, 'clinicdb_staff', 'MEMBER') then
        select array_agg(sm.clinic_id) into v_clinics
          from clinicdb.staff_members sm
         where sm.role_name = current_user;
        if v_clinics is null then
            return null;
        elsif cardinality(v_clinics) = 1 then
            return v_clinics[1];
        end if;
        -- Mapped to several clinics: app.clinic_id may choose among them only.
        v_raw := current_setting('app.clinic_id', true);
        if v_raw ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
           and v_raw::uuid = any (v_clinics) then
            return v_raw::uuid;
        end if;
        return null;
    end if;

    if not (pg_has_role(current_user, 'clinicdb_app', 'MEMBER')
            or pg_has_role(current_user, 'clinicdb_readonly', 'MEMBER')) then
        return null;
    end if;

    v_raw := current_setting('app.clinic_id', true);
    if v_raw is null or v_raw = '' then
        return null;
    end if;
    if v_raw !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        raise exception 'app.clinic_id is not a clinic uuid: %', left(v_raw, 64)
            using errcode = 'invalid_parameter_value',
                  hint = 'set it per transaction: select set_config(''app.clinic_id'', ''<clinic uuid>'', true)';
    end if;
    return v_raw::uuid;
end
$$;
comment on function clinicdb.current_clinic_id() is
    'clinicdb: the clinic in force for this transaction (app.clinic_id for the app, the login''s mapping for staff), or NULL.';
grant execute on function clinicdb.current_clinic_id()
    to public;

-- clinicdb.require_clinic_id(): the same, but a missing clinic is an error
-- that says what to do. Writes use it (insert/update/delete policies and the
-- clinic_id default), so a write with no clinic fails loudly instead of
-- silently doing nothing or landing nowhere.
create or replace function clinicdb.require_clinic_id()
returns uuid
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    v_clinic uuid := clinicdb.current_clinic_id();
begin
    if v_clinic is null then
        raise exception 'no clinic is in force for this transaction'
            using errcode = 'insufficient_privilege',
                  hint = 'the application sets it per transaction with '
                         'set_config(''app.clinic_id'', ''<clinic uuid>'', true); '
                         'a staff login must be mapped with clinicdb.grant_staff()';
    end if;
    return v_clinic;
end
$$;
comment on function clinicdb.require_clinic_id() is
    'clinicdb: current_clinic_id(), raising an error with a hint when no clinic is in force.';
grant execute on function clinicdb.require_clinic_id() to public;
