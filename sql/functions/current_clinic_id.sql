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
