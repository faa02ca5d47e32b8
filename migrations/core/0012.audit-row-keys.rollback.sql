-- 0012.audit-row-keys: undo 0012.audit-row-keys: the key functions as 0011 left them, every capture regenerated.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/(the previous versions of)
-- attach_audit.sql, log_access.sql when it was written. migrations/migrations.lock pins it: change
-- sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/attach_audit.sql, as it was before 0012 ----
-- clinicdb.attach_audit(regclass): install the audit triggers on a tenant
-- table. clinicdb.protect_table() calls it for every table it protects once
-- this function exists, so "protected" implies "audited". Idempotent: it
-- (re)generates the table's capture functions from its primary key and the
-- column lists of clinicdb.audit_settings (clinicdb.create_audit_capture)
-- and re-creates the triggers, which is how set_audit_column() takes effect.
-- Run it again after changing a table's primary key.
--
-- clinicdb.detach_audit(regclass) removes them (migration rollback; a DBA
-- who really means it). clinicdb.set_audit_column() is the documented way to
-- exclude or mask a column. clinicdb.audit_findings() lists protected tables
-- whose triggers are missing or disabled.
--
-- SECURITY INVOKER: creating a trigger needs ownership of the table, which
-- the caller (the owner running a migration, or a DBA) has.

-- A table's primary key columns in key order (NULL without one): the key the
-- trail names rows by, read the same way wherever the audit layer needs it.
create or replace function clinicdb.audit_key_columns(p_table regclass)
returns text[]
language sql
stable
set search_path = pg_catalog, pg_temp
return (select array_agg(a.attname::text order by k.ord)
          from pg_index i
         cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
          join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
         where i.indrelid = p_table and i.indisprimary);
comment on function clinicdb.audit_key_columns(regclass) is
    'clinicdb: a table''s primary key columns in order, the key its audit rows are named by (NULL without one).';

create or replace function clinicdb.attach_audit(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_keys text[];
    v_excluded text[];
    v_masked text[];
begin
    -- Carries the standard policies for comparison and never holds a row.
    if p_table = 'clinicdb.policy_reference'::regclass then
        return;
    end if;
    if not exists (select 1 from pg_attribute
                    where attrelid = p_table and attname = 'clinic_id' and not attisdropped) then
        raise exception 'table % has no clinic_id column; the audit trail is per clinic', p_table
            using errcode = 'undefined_column', hint = 'protect it first with clinicdb.protect_table()';
    end if;
    v_keys := clinicdb.audit_key_columns(p_table);
    if v_keys is null then
        raise exception 'table % has no primary key; the audit trail names rows by it', p_table
            using errcode = 'invalid_table_definition', hint = 'add a primary key, then protect the table again';
    end if;

    -- updated_at changes on every update (clinicdb.touch_row) and says
    -- nothing the audit row's own times do not: excluded unless a DBA chose.
    if exists (select 1 from pg_attribute where attrelid = p_table and attname = 'updated_at' and not attisdropped) then
        insert into clinicdb.audit_settings (table_name, column_name, mode)
        values (p_table, 'updated_at', 'exclude')
        on conflict do nothing;
    end if;

    select coalesce(array_agg(s.column_name::text order by s.column_name) filter (where s.mode = 'exclude'), '{}'),
           coalesce(array_agg(s.column_name::text order by s.column_name) filter (where s.mode = 'mask'), '{}')
      into v_excluded, v_masked
      from clinicdb.audit_settings s
     where s.table_name = p_table;
    -- The table's own capture functions, with these lists baked in.
    perform clinicdb.create_audit_capture(p_table, v_keys, v_excluded, v_masked);

    execute format('drop trigger if exists clinicdb_audit_insert on %s', p_table);
    execute format('create trigger clinicdb_audit_insert after insert on %s referencing new table as new_table '
                   'for each statement execute function clinicdb.%I()', p_table,
                   clinicdb.audit_capture_name(p_table, 'insert'));
    execute format('drop trigger if exists clinicdb_audit_delete on %s', p_table);
    execute format('create trigger clinicdb_audit_delete after delete on %s referencing old table as old_table '
                   'for each statement execute function clinicdb.%I()', p_table,
                   clinicdb.audit_capture_name(p_table, 'delete'));
    execute format('drop trigger if exists clinicdb_audit_update on %s', p_table);
    execute format('create trigger clinicdb_audit_update after update on %s '
                   'for each row execute function clinicdb.%I()', p_table,
                   clinicdb.audit_capture_name(p_table, 'update'));
    execute format('drop trigger if exists clinicdb_audit_truncate on %s', p_table);
    execute format('create trigger clinicdb_audit_truncate after truncate on %s '
                   'for each statement execute function clinicdb.audit_capture_truncate()', p_table);
    perform clinicdb.drop_unused_audit_capture();
end
$$;
comment on function clinicdb.attach_audit(regclass) is
    'clinicdb: install (or refresh) the audit triggers on a tenant table; protect_table() calls it. Idempotent.';
revoke execute on function clinicdb.attach_audit(regclass) from public;
grant execute on function clinicdb.attach_audit(regclass) to clinicdb_owner;

create or replace function clinicdb.detach_audit(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    execute format('drop trigger if exists clinicdb_audit_insert on %s', p_table);
    execute format('drop trigger if exists clinicdb_audit_delete on %s', p_table);
    execute format('drop trigger if exists clinicdb_audit_update on %s', p_table);
    execute format('drop trigger if exists clinicdb_audit_truncate on %s', p_table);
    delete from clinicdb.audit_capture_state where table_name = p_table;
    perform clinicdb.drop_unused_audit_capture();
end
$$;
comment on function clinicdb.detach_audit(regclass) is
    'clinicdb: remove the audit triggers from a table (changes to it are no longer audited).';
revoke execute on function clinicdb.detach_audit(regclass) from public;
grant execute on function clinicdb.detach_audit(regclass) to clinicdb_owner;

-- clinicdb.set_audit_column(table, column, mode): mode 'exclude' leaves the
-- column out of the trail, 'mask' writes "[masked]" instead of its value,
-- 'include' keeps it as it is (also overriding the default exclusion of
-- updated_at). Takes effect at once for an audited table.
create or replace function clinicdb.set_audit_column(p_table regclass, p_column name, p_mode text)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_mode is null or p_mode not in ('include', 'exclude', 'mask') then
        raise exception 'unknown audit mode %', coalesce(p_mode, 'NULL')
            using errcode = 'invalid_parameter_value', hint = 'use include, exclude or mask';
    end if;
    if not exists (select 1 from pg_attribute
                    where attrelid = p_table and attname = p_column and attnum > 0 and not attisdropped) then
        raise exception 'table % has no column %', p_table, p_column
            using errcode = 'undefined_column', hint = 'check the name with \d in psql';
    end if;
    if p_mode <> 'include' and p_column::text = any (clinicdb.audit_key_columns(p_table)) then
        raise exception 'column %.% is part of the primary key, which every audit row names', p_table, p_column
            using errcode = 'invalid_parameter_value', hint = 'key columns cannot be excluded or masked';
    end if;
    if p_mode = 'include' and p_column <> 'updated_at' then
        delete from clinicdb.audit_settings where table_name = p_table and column_name = p_column;
    else
        insert into clinicdb.audit_settings (table_name, column_name, mode)
        values (p_table, p_column, case p_mode when 'include' then 'include' else p_mode end)
        on conflict (table_name, column_name) do update
            set mode = excluded.mode, set_at = now(), set_by = session_user;
    end if;
    if exists (select 1 from pg_trigger where tgrelid = p_table and tgname = 'clinicdb_audit_insert') then
        perform clinicdb.attach_audit(p_table);
    end if;
end
$$;
comment on function clinicdb.set_audit_column(regclass, name, text) is
    'clinicdb: exclude, mask or include one column of a table in the audit trail (see clinicdb.audit_settings).';
revoke execute on function clinicdb.set_audit_column(regclass, name, text) from public;
grant execute on function clinicdb.set_audit_column(regclass, name, text) to clinicdb_owner;

-- Protected tables whose audit triggers are missing or disabled (ALTER TABLE
-- ... DISABLE TRIGGER, session_replication_role cannot be seen from here).
create or replace function clinicdb.audit_findings()
returns table (table_name text, finding text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select pt.table_name::text, format('audit trigger %s is %s', t.name,
                                       case when tg.oid is null then 'missing' else 'disabled' end)
      from clinicdb.protected_tables pt
     cross join (values ('clinicdb_audit_insert'), ('clinicdb_audit_update'),
                        ('clinicdb_audit_delete'), ('clinicdb_audit_truncate')) as t(name)
      left join pg_trigger tg on tg.tgrelid = pt.table_name and tg.tgname = t.name
     where pt.table_name <> 'clinicdb.policy_reference'::regclass
       and exists (select 1 from pg_class c where c.oid = pt.table_name)  -- a dropped table has nothing to audit
       and (tg.oid is null or tg.tgenabled = 'D')
    union all
    -- Capture functions generated for columns or a key the table no longer has.
    select s.table_name::text,
           format('audit capture functions are out of date (%s): updates fail until select clinicdb.attach_audit(%L)',
                  concat_ws('; ',
                            case when cardinality(gone.names) > 0
                                 then 'column ' || array_to_string(gone.names, ', ') || ' dropped or renamed' end,
                            case when s.keys is distinct from clinicdb.audit_key_columns(s.table_name)
                                 then 'primary key changed' end),
                  s.table_name::text)
      from clinicdb.audit_capture_state s
     cross join lateral (select coalesce(array_agg(c order by o), '{}') as names
                           from unnest(s.columns) with ordinality as u(c, o)
                          where not exists (select 1 from pg_attribute a
                                             where a.attrelid = s.table_name and a.attname = u.c
                                               and a.attnum > 0 and not a.attisdropped)) gone
     where exists (select 1 from pg_class c where c.oid = s.table_name)  -- a dropped table has nothing to audit
       and (cardinality(gone.names) > 0 or s.keys is distinct from clinicdb.audit_key_columns(s.table_name))
     order by 1, 2
$$;
comment on function clinicdb.audit_findings() is
    'clinicdb: protected tables whose audit triggers are missing or disabled, or whose capture functions are out of date; no rows means every one is audited.';
revoke execute on function clinicdb.audit_findings() from public;
grant execute on function clinicdb.audit_findings() to clinicdb_owner, clinicdb_auditor;
-- ---- sql/functions/log_access.sql, as it was before 0012 ----
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

-- The column that names a row of p_table in access rows: its one-column
-- primary key, or the second column of a (clinic_id, key) primary key.
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
    elsif cardinality(v_keys) = 2 and v_keys[1] = 'clinic_id' then
        return v_keys[2];
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
-- security applies: it runs as the caller). row_id is the key as text, or
-- for a (clinic_id, key) table the JSON array the audit trail writes.
create or replace function clinicdb._access_row_visible(p_table text, p_row_id text)
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_table regclass := to_regclass(p_table);
    v_key name;
    v_found boolean;
begin
    if v_table is null or p_row_id is null or not has_table_privilege(v_table, 'SELECT') then
        return false;
    end if;
    v_key := clinicdb._access_key_column(v_table);
    if cardinality(clinicdb.audit_key_columns(v_table)) = 2 then
        execute format('select exists (select 1 from %s t where jsonb_build_array(t.clinic_id, t.%I)::text = $1)',
                       v_table, v_key)
           into v_found using p_row_id;
    else
        execute format('select exists (select 1 from %s t where t.%I::text = $1)', v_table, v_key)
           into v_found using p_row_id;
    end if;
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
    v_clinic uuid;
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
    v_clinic := clinicdb.require_clinic_id();
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
    select 0, v_table,
           case when cardinality(clinicdb.audit_key_columns(p_table)) = 2
                then jsonb_build_array(v_clinic, x)::text else x end,
           'access', left(btrim(p_purpose), 500)
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
select clinicdb._refresh_audit(pt.table_name) from clinicdb.protected_tables pt order by pt.table_name::text;
reset role;
