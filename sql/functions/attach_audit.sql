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

-- The columns the trail names a table's rows by (NULL without a primary
-- key): its primary key, in key order, without a leading clinic_id -- the
-- clinic is a column of every audit row already, and a table whose key gains
-- clinic_id (to be distributed by clinic on Citus) keeps naming its rows the
-- same way. Read the same way wherever the audit layer needs it.
create or replace function clinicdb.audit_key_columns(p_table regclass)
returns text[]
language sql
stable
set search_path = pg_catalog, pg_temp
return (select case when count(*) > 1 and (array_agg(a.attname::text order by k.ord))[1] = 'clinic_id'
                    then (array_agg(a.attname::text order by k.ord))[2:]
                    else array_agg(a.attname::text order by k.ord) end
          from pg_index i
         cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
          join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
         where i.indrelid = p_table and i.indisprimary);
comment on function clinicdb.audit_key_columns(regclass) is
    'clinicdb: the columns audit rows name a table''s rows by: its primary key without a leading clinic_id (NULL without one).';

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
declare
    v_citus boolean := to_regprocedure('clinicdb._citus_distribute_table(regclass)') is not null;
    v_ddl_propagation text := current_setting('citus.enable_ddl_propagation', true);
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
        -- The time and login come from the column defaults: Citus refuses a
        -- function call in DO UPDATE SET on a reference table.
        insert into clinicdb.audit_settings (table_name, column_name, mode)
        values (p_table, p_column, p_mode)
        on conflict (table_name, column_name) do update
            set mode = excluded.mode, set_at = excluded.set_at, set_by = excluded.set_by;
    end if;
    if exists (select 1 from pg_trigger where tgrelid = p_table and tgname = 'clinicdb_audit_insert') then
        -- On a distributed Citus coordinator (sql/functions/citus_profile.sql):
        -- _citus_distribute_table() sets what trigger DDL on a distributed
        -- table needs there, attach_audit() makes the capture functions and
        -- statement-level triggers, which cannot run on shards, and
        -- _citus_audit_table() puts the row-level capture back with the new
        -- setting. DDL propagation ends as the caller had it.
        if v_citus then
            execute 'select clinicdb._citus_distribute_table($1)' into p_table using p_table;
        end if;
        perform clinicdb.attach_audit(p_table);
        if v_citus then
            execute 'select clinicdb._citus_audit_table($1)' using p_table;
            if v_ddl_propagation is not null then
                perform set_config('citus.enable_ddl_propagation', v_ddl_propagation, true);
            end if;
        end if;
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
