-- clinicdb.log_access(table, ids, purpose): record that PHI was read.
-- Triggers cannot see SELECTs, so the application (through the driver) and
-- staff in psql call this after showing rows: one 'access' row per id, in
-- the same trail and with the same context as changes (clinic, app.user_id,
-- app.request_id, roles, txid, times, client address, application_name).
--
--   select clinicdb.log_access('patients', array['<patient uuid>']::uuid[], 'chart review');
--
-- SECURITY INVOKER on purpose: the row is inserted with the caller's rights
-- through the insert policy of clinicdb.audit_log below, which admits only
-- 'access' rows of the clinic in force naming a row the caller can see, and
-- every context column is filled by its default (the caller is not granted
-- those columns). So a caller can only ever say "I read these rows of my
-- clinic", never write a change row, speak for another clinic or user, or
-- claim to have read a row it cannot see. ids may be of any type (uuid[],
-- text[], bigint[]); untyped literals need a cast. An id that is not a row
-- the caller can see refuses the whole call: nothing is logged.
--
-- The access row's id comes from the trail's sequence through a trigger
-- that runs as the owner: the app and staff hold no right on the sequence,
-- whose nextval would count every clinic's activity. (The ids of a clinic's
-- own audit rows, which it may read, still show gaps: docs/security.md.)

-- The column that names a row of p_table in access rows: the one column
-- the audit trail names its rows by (clinicdb.audit_key_columns).
create or replace function clinicdb._access_key_column(p_table regclass)
returns name
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_keys text[] := clinicdb.audit_key_columns(p_table);
begin
    if cardinality(v_keys) = 1 then
        return v_keys[1];
    end if;
    raise exception 'table % has no primary key of one column (or clinic_id and one column) to name rows by', p_table
        using errcode = 'invalid_table_definition', hint = 'log_access names rows by such a primary key';
end
$$;
comment on function clinicdb._access_key_column(regclass) is
    'clinicdb: the key column access rows name a table''s rows by (log_access).';
revoke execute on function clinicdb._access_key_column(regclass) from public;
grant execute on function clinicdb._access_key_column(regclass) to clinicdb_app, clinicdb_staff;
grant execute on function clinicdb.audit_key_columns(regclass) to clinicdb_app, clinicdb_staff;

-- True when row_id names a row of the table the CALLER can see (row level
-- security applies: it runs as the caller).
create or replace function clinicdb._access_row_visible(p_table text, p_row_id text)
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_table regclass := to_regclass(p_table);
    v_found boolean;
begin
    if v_table is null or p_row_id is null or not has_table_privilege(v_table, 'SELECT') then
        return false;
    end if;
    execute format('select exists (select 1 from %s t where t.%I::text = $1)', v_table,
                   clinicdb._access_key_column(v_table))
       into v_found using p_row_id;
    return v_found;
end
$$;
comment on function clinicdb._access_row_visible(text, text) is
    'clinicdb: whether an access row names a row the caller can see (the insert policy of audit_log checks it).';
revoke execute on function clinicdb._access_row_visible(text, text) from public;
grant execute on function clinicdb._access_row_visible(text, text) to clinicdb_app, clinicdb_staff;

create or replace function clinicdb.log_access(p_table regclass, p_ids anyarray, p_purpose text)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_table text;
    v_key name;
    v_all text[];
    v_asked text[];
    v_visible text[];
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
    v_key := clinicdb._access_key_column(p_table);
    select coalesce(array_agg(x::text), '{}') into v_all from unnest(p_ids) as x where x is not null;
    select coalesce(array_agg(distinct x), '{}') into v_asked from unnest(v_all) as x;
    -- The rows the caller can see, as the caller: another clinic's row is not among them.
    execute format('select coalesce(array_agg(t.%I::text), ''{}'') from %s t where t.%I::text = any ($1)',
                   v_key, p_table, v_key)
       into v_visible using v_asked;
    if cardinality(v_visible) < cardinality(v_asked) then
        raise exception '% of % ids are not rows of % you can see: nothing was logged',
                        cardinality(v_asked) - cardinality(v_visible), cardinality(v_asked), v_table
            using errcode = 'insufficient_privilege',
                  hint = 'log only rows your clinic''s query returned';
    end if;
    insert into clinicdb.audit_log (id, table_name, row_id, action, purpose)
    select 0, v_table, x, 'access', left(btrim(p_purpose), 500)
      from unnest(v_all) as x;
    get diagnostics v_count = row_count;
    return v_count;
end
$$;
comment on function clinicdb.log_access(regclass, anyarray, text) is
    'clinicdb: record a read of PHI (one audit row per id, action access) for the clinic in force; returns rows logged.';
revoke execute on function clinicdb.log_access(regclass, anyarray, text) from public;
grant execute on function clinicdb.log_access(regclass, anyarray, text) to clinicdb_app, clinicdb_staff;

-- Writes by the app and staff: access rows of their own clinic only, about a
-- row they can see. The context columns are not granted (below), so their
-- defaults always apply; the id the caller gives is replaced by the trigger.
drop policy if exists audit_log_access_insert on clinicdb.audit_log;
create policy audit_log_access_insert on clinicdb.audit_log for insert
    to clinicdb_app, clinicdb_staff
    with check (action = 'access' and old_values is null and new_values is null
                and clinic_id = (select clinicdb.require_clinic_id())
                and clinicdb._access_row_visible(table_name, row_id));

create or replace function clinicdb.audit_access_id()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- The app and staff cannot choose (or learn in advance) an id; the owner
    -- and superusers write rows as they are (restores, tests of the seals).
    if not pg_has_role(clinicdb.audit_acting_role(), 'clinicdb_owner', 'MEMBER')
       and not (select r.rolsuper from pg_roles r where r.rolname = clinicdb.audit_acting_role()) then
        new.id := nextval('clinicdb.audit_log_id_seq');
    end if;
    return new;
end
$$;
comment on function clinicdb.audit_access_id() is
    'clinicdb: gives an access row its id from the trail''s sequence (as the owner; callers hold no sequence right).';
revoke execute on function clinicdb.audit_access_id() from public;
drop trigger if exists clinicdb_audit_access_id on clinicdb.audit_log;
create trigger clinicdb_audit_access_id before insert on clinicdb.audit_log
    for each row when (new.action = 'access') execute function clinicdb.audit_access_id();

grant insert (id, table_name, row_id, action, purpose) on clinicdb.audit_log to clinicdb_app, clinicdb_staff;
revoke usage on sequence clinicdb.audit_log_id_seq from clinicdb_app, clinicdb_staff;
