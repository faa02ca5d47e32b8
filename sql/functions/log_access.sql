-- clinicdb.log_access(table, ids, purpose): record that PHI was read.
-- Triggers cannot see SELECTs, so the application (through the driver) and
-- staff in psql call this after showing rows: one 'access' row per id, in
-- the same trail and with the same context as changes (clinic, app.user_id,
-- app.request_id, roles, txid, times, client address, application_name).
--
--   select clinicdb.log_access('patients', array['<patient uuid>']::uuid[], 'chart review');
--
-- SECURITY INVOKER on purpose: the row is inserted with the caller's rights
-- through the insert policy of clinicdb.audit_log, which admits only
-- 'access' rows of the clinic in force, and every context column is filled
-- by its default (the caller is not granted those columns). So a caller can
-- only ever say "I read these rows of my clinic", never write a change row
-- or speak for another clinic or user. ids may be of any type (uuid[],
-- text[], bigint[]); untyped literals need a cast.
create or replace function clinicdb.log_access(p_table regclass, p_ids anyarray, p_purpose text)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_table text;
    v_count integer;
begin
    if p_purpose is null or length(btrim(p_purpose)) = 0 then
        raise exception 'log_access needs a purpose'
            using errcode = 'invalid_parameter_value',
                  hint = 'say why the rows were read, e.g. ''treatment'', ''billing'', ''chart review''';
    end if;
    perform clinicdb.require_clinic_id();
    if not has_table_privilege(p_table, 'SELECT') then
        raise exception 'you cannot read %, so there is no access of it to log', p_table
            using errcode = 'insufficient_privilege', hint = 'log reads of tables the role may read';
    end if;
    select n.nspname || '.' || c.relname into v_table
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;
    insert into clinicdb.audit_log (table_name, row_id, action, purpose)
    select v_table, x::text, 'access', left(btrim(p_purpose), 500)
      from unnest(p_ids) as x
     where x is not null;
    get diagnostics v_count = row_count;
    return v_count;
end
$$;
comment on function clinicdb.log_access(regclass, anyarray, text) is
    'clinicdb: record a read of PHI (one audit row per id, action access) for the clinic in force; returns rows logged.';
revoke execute on function clinicdb.log_access(regclass, anyarray, text) from public;
grant execute on function clinicdb.log_access(regclass, anyarray, text) to clinicdb_app, clinicdb_staff;
