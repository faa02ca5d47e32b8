-- 0048.citus-protect-after-distribution: protect_table() works on a Citus coordinator that is already distributed: the table is distributed
-- by clinic_id co-located with the others, gets the tenant policies from their one definition and the
-- row-level audit capture (citus_distribute()'s own steps, now functions); its registry writes are
-- ones Citus accepts; nothing changes on a single node
-- depends: 0047.citus-key-hint
--
-- Frozen: the SQL below is what this migration runs, copied from sql/functions/protect_table.sql,
-- sql/functions/audit_capture.sql, sql/functions/citus_profile.sql when it was written.
-- migrations/migrations.lock pins it: change sql/ and add a new migration instead of editing this
-- file.

set local role clinicdb_owner;
-- ---- sql/functions/protect_table.sql ----
-- clinicdb.protect_table(regclass): make a table with a clinic_id column
-- tenant-isolated. Idempotent: safe to run again after a change to the
-- standard policy, which it then re-applies.
--
-- clinicdb.protect_table_sql(regclass) returns the exact statements, so a DBA
-- can review them (`clinicdb sql policies TABLE`); protect_table runs those
-- same statements and nothing else, then records the table in the registry.
-- On a Citus coordinator that is already distributed it distributes the
-- table with the others first (clinicdb._citus_distribute_table()) and
-- ends with the row-level audit capture (clinicdb._citus_audit_table()).

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
    v_statistics name;
    v_hidden name[];
    v_encrypted name[];
    v_distributed boolean := false;
begin
    select a.attnotnull, a.attgenerated, format_type(a.atttypid, a.atttypmod) as type_name,
           pg_get_expr(d.adbin, d.adrelid) as default_expr
      into v_col
      from pg_attribute a
      left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
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
    -- Citus refuses to alter a distribution column: a table distributed by
    -- clinic_id that has the default already gets no statement.
    if to_regclass('pg_catalog.pg_dist_partition') is not null
       and v_col.default_expr = 'clinicdb.require_clinic_id()' then
        execute 'select exists (select 1 from pg_catalog.pg_dist_partition where logicalrelid = $1)'
           into v_distributed using p_table;
    end if;
    if v_col.attgenerated = '' and not v_distributed then
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
    -- key from a table you own probes other clinics' keys), TRIGGER, or
    -- (PostgreSQL 17+) MAINTAIN (LOCK TABLE blocks every clinic; ANALYZE).
    foreach v_role in array array['public', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor'] loop
        return next format('revoke truncate, references, trigger%s on %s from %s',
                           case when current_setting('server_version_num')::integer >= 170000 then ', maintain' end,
                           p_table, v_role);
    end loop;

    -- Planner statistics are computed over every clinic's rows, and EXPLAIN
    -- estimates use them for anyone who may query the table: a PHI value's
    -- frequency across all clinics would show in a row estimate. None are
    -- collected for PHI columns (clinicdb.phi_columns) or encrypted ones.
    v_hidden := array(select pc.column_name from clinicdb.phi_columns pc where pc.table_name = p_table);
    -- The encryption layer (a later migration) may not be installed yet.
    if to_regclass('clinicdb.encrypted_columns') is not null then
        execute 'select coalesce(array_agg(c), ''{}'') from clinicdb.encrypted_columns ec,
                        unnest(array[ec.column_name, ec.column_name || ''_ciphertext'', ec.column_name || ''_blind_index'']) c
                  where ec.table_name = $1'
           into v_encrypted using p_table;
        v_hidden := v_hidden || v_encrypted;
    end if;
    for v_statistics in
        select a.attname
          from pg_attribute a
         where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped
           and coalesce(a.attstattarget, -1) <> 0 and a.attname = any (v_hidden)
         order by a.attnum
    loop
        return next format('alter table %s alter column %I set statistics 0', p_table, v_statistics);
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

-- Remove the planner statistics of a table's columns that collect none
-- (statistics target 0): ANALYZE skips such columns and leaves what an
-- earlier ANALYZE stored. Superusers delete them; on PostgreSQL 18 the
-- table's owner can clear them; anyone else is told who can.
create or replace function clinicdb._forget_statistics(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_column name;
    v_schema name := (select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table);
    v_rel name := (select c.relname from pg_class c where c.oid = p_table);
begin
    if (select r.rolsuper from pg_roles r where r.rolname = current_user) then
        delete from pg_catalog.pg_statistic s
         using pg_catalog.pg_attribute a
         where s.starelid = p_table and a.attrelid = p_table and a.attnum = s.staattnum and a.attstattarget = 0;
        return;
    end if;
    if to_regprocedure('pg_catalog.pg_clear_attribute_stats(text, text, text, boolean)') is not null then
        for v_column in
            select a.attname from pg_attribute a
             where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped and a.attstattarget = 0
        loop
            execute 'select pg_catalog.pg_clear_attribute_stats($1, $2, $3, false)' using v_schema, v_rel, v_column;
        end loop;
        return;
    end if;
    raise notice 'statistics % collected before its PHI columns were set to collect none remain until a superuser '
                 'runs clinicdb.protect_table(%) again', p_table, p_table;
end
$$;
comment on function clinicdb._forget_statistics(regclass) is
    'clinicdb: delete stored planner statistics of columns set to collect none (PHI, encrypted), where the caller may.';
revoke execute on function clinicdb._forget_statistics(regclass) from public;

create or replace function clinicdb.protect_table(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_stmt text;
    v_extra text;
    v_citus boolean := to_regprocedure('clinicdb._citus_distribute_table(regclass)') is not null;
    v_ddl_propagation text := current_setting('citus.enable_ddl_propagation', true);
begin
    -- On a Citus coordinator whose layer is already distributed, the table
    -- is distributed with the others first (sql/functions/citus_profile.sql;
    -- nothing happens elsewhere): the registry rows below name it on every
    -- node. Its oid may change then; it is found again by name. DDL
    -- propagation is on from there to the end, then as the caller had it.
    if v_citus then
        execute 'select clinicdb._citus_distribute_table($1)' into p_table using p_table;
    end if;

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

    -- Statistics gathered before the columns were set to collect none stay
    -- until removed; only a superuser (or, on 18+, pg_clear_attribute_stats)
    -- can remove them.
    perform clinicdb._forget_statistics(p_table);

    -- The time and login come from the column defaults, evaluated once for
    -- the inserted row: Citus refuses a function call in DO UPDATE SET on a
    -- reference table, which the registry is there.
    insert into clinicdb.protected_tables (table_name) values (p_table)
    on conflict (table_name) do update set protected_at = excluded.protected_at, protected_by = excluded.protected_by;

    -- On a Citus coordinator whose layer is already distributed: the
    -- row-level audit capture (sql/functions/citus_profile.sql).
    if v_citus then
        execute 'select clinicdb._citus_audit_table($1)' using p_table;
        if v_ddl_propagation is not null then
            perform set_config('citus.enable_ddl_propagation', v_ddl_propagation, true);
        end if;
    end if;
end
$$;
comment on function clinicdb.protect_table(regclass) is
    'clinicdb: make a table with a clinic_id column tenant-isolated (forced RLS, the standard policies). Idempotent.';
grant execute on function clinicdb.protect_table(regclass) to clinicdb_owner;
-- ---- sql/functions/audit_capture.sql ----
-- The audit triggers: what attach_audit() installs on every tenant table.
--
-- Each audited table gets its own three capture functions, generated by
-- clinicdb.create_audit_capture() from the table's key and its column
-- settings (clinicdb.audit_settings): the table name, key, excluded and
-- masked columns are constants in their SQL. The write path thus reads no
-- settings table; the INSERT and DELETE paths evaluate no PL/pgSQL
-- expression and pass no parameters (their statement is planned once,
-- generic, with the constants folded; no plan_cache_mode setting is needed,
-- and none was seen replanning in backend profiles, the UPDATE's VALUES
-- insert included). Measured against the earlier design of one shared
-- function taking the column lists as trigger arguments (see
-- bench/bench_audit.py and docs/audit.md): the per-statement cost of
-- auditing a single-row write fell by about a third.
--
-- Design (measured):
--   * INSERT and DELETE: AFTER ... FOR EACH STATEMENT with a transition
--     table, so a multi-row statement runs one INSERT ... SELECT into the
--     trail instead of one trigger call and one planned insert per row. The
--     context (times, txid, user, request, roles, address, application) is
--     one row computed once per statement and joined to every changed row.
--   * UPDATE: AFTER ... FOR EACH ROW. Pairing OLD and NEW rows from two
--     transition tables needs a join on the key (and breaks when the key
--     itself changes); the row trigger has both at hand. The changed columns
--     are found by comparing OLD and NEW column by column (a generated list
--     of every audited column but the key). A column added after the
--     function was generated is compared on a slower path; a column dropped
--     or renamed makes the function fail (and with it the update: no change
--     goes unaudited) until attach_audit() regenerates it -- run
--     clinicdb.attach_audit(table) (or protect_table) after such a change.
--   * TRUNCATE: one system row (clinic_id NULL) naming the table, from the
--     shared clinicdb.audit_capture_truncate().
--
-- SECURITY DEFINER (owner clinicdb_owner) because nobody else may insert
-- change rows into the trail; the app and staff have no INSERT right on
-- those columns. Inside, current_user is the owner, so the acting role is
-- read from the `role` setting (what SET ROLE set), falling back to the
-- login; a change made inside another SECURITY DEFINER function is thus
-- attributed to the session's role, not that function's owner. Trigger
-- functions cannot be called directly, and CREATE TRIGGER needs EXECUTE,
-- which nobody is granted: only the owner (and superusers) attach them.

-- The key of a row as text: a JSON array of the key values when the key has
-- several columns. Kept for callers; the generated triggers inline the same
-- expression (jsonb_build_array(k1, k2, ...)::text).
create or replace function clinicdb.audit_key_text(p_image jsonb, p_keys text[])
returns text
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_agg(p_image -> u.k order by u.ord)::text from unnest(p_keys) with ordinality as u(k, ord)
$$;
comment on function clinicdb.audit_key_text(jsonb, text[]) is
    'clinicdb: the primary key of a row image as text (JSON array for composite keys).';

-- Masked columns become the marker "[masked]" when they hold a value.
create or replace function clinicdb.audit_mask(p_image jsonb, p_columns text[])
returns jsonb
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select p_image || coalesce(
        (select jsonb_object_agg(c, to_jsonb('[masked]'::text))
           from unnest(p_columns) as c
          where p_image -> c is not null and jsonb_typeof(p_image -> c) <> 'null'),
        '{}'::jsonb)
$$;
comment on function clinicdb.audit_mask(jsonb, text[]) is
    'clinicdb: a row image with the given columns replaced by "[masked]" (NULLs stay NULL).';

-- The role in force for the session: what SET ROLE chose, else the login.
create or replace function clinicdb.audit_acting_role()
returns name
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(nullif(current_setting('role'), 'none'), session_user)::name
$$;
comment on function clinicdb.audit_acting_role() is
    'clinicdb: the role set by SET ROLE, or the session login; what the audit trail records as acting_role.';
grant execute on function clinicdb.audit_acting_role() to public;

-- The name of a table's generated capture function for one operation
-- ('insert', 'update', 'delete'): readable, and unique through the oid.
create or replace function clinicdb.audit_capture_name(p_table regclass, p_op text)
returns name
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select format('audit_%s_%s_%s', left(c.relname, 30), c.oid, p_op)::name from pg_class c where c.oid = p_table
$$;
comment on function clinicdb.audit_capture_name(regclass, text) is
    'clinicdb: name of the generated audit capture function of a table for insert, update or delete.';
revoke execute on function clinicdb.audit_capture_name(regclass, text) from public;
grant execute on function clinicdb.audit_capture_name(regclass, text) to clinicdb_owner;

-- Create (or replace) the three capture functions of one table. p_keys: the
-- primary-key columns in key order; p_excluded, p_masked: the column lists
-- of clinicdb.audit_settings. Called by attach_audit(), which then points
-- the table's triggers at them.
create or replace function clinicdb.create_audit_capture(
    p_table regclass, p_keys text[], p_excluded text[], p_masked text[])
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
declare
    v_table text;
    v_all text[];
    v_row_id text;
    v_image text;
    v_context text;
    v_insert_into text;
    v_same text;
    v_op text;
    v_fn text;
begin
    select n.nspname || '.' || c.relname into v_table
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;
    select array_agg(a.attname::text order by a.attnum) into v_all
      from pg_attribute a where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped;

    -- row_id: the key as text (a JSON array of the values for a composite key).
    if cardinality(p_keys) = 1 then
        -- The key's text in the row image (->>); for the common key types a
        -- plain cast gives the same text without building a jsonb value.
        v_row_id := case when (select a.atttypid from pg_attribute a where a.attrelid = p_table and a.attname = p_keys[1])
                              in ('uuid'::regtype, 'text'::regtype, 'bigint'::regtype, 'integer'::regtype, 'smallint'::regtype)
                         then format('n.%I::text', p_keys[1])
                         else format('(to_jsonb(n.%I) #>> ''{}'')', p_keys[1]) end;
    else
        v_row_id := format('jsonb_build_array(%s)::text',
                           (select string_agg(format('n.%I', k), ', ' order by o)
                              from unnest(p_keys) with ordinality as u(k, o)));
    end if;
    v_image := case when cardinality(p_excluded) > 0 then format('(to_jsonb(n) - %L::text[])', p_excluded)
                    else 'to_jsonb(n)' end;
    if cardinality(p_masked) > 0 then
        v_image := format('clinicdb.audit_mask(%s, %L::text[])', v_image, p_masked);
    end if;
    -- The context: one row per statement (clock_timestamp() once, like
    -- statement_timestamp()), so a bulk statement pays for it once.
    v_context := $ctx$(select clock_timestamp() as logged_at, statement_timestamp() as statement_at,
                   txid_current() as txid,
                   nullif(current_setting('app.user_id', true), '') as app_user,
                   nullif(current_setting('app.request_id', true), '') as request_id,
                   session_user as session_role,
                   coalesce(nullif(current_setting('role'), 'none'), session_user)::name as acting_role,
                   inet_client_addr() as client_addr,
                   nullif(current_setting('application_name', true), '') as application_name) c$ctx$;
    v_insert_into := 'insert into clinicdb.audit_log (id, logged_at, statement_at, txid, clinic_id, table_name, row_id, '
                     'action, %s, app_user, request_id, session_role, acting_role, client_addr, application_name)';

    -- INSERT and DELETE: once per statement, from the transition table.
    foreach v_op in array array['insert', 'delete'] loop
        v_fn := format('clinicdb.%I', clinicdb.audit_capture_name(p_table, v_op));
        execute format($f$
create or replace function %1$s()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    %2$s
    select nextval('clinicdb.audit_log_id_seq'), c.logged_at, c.statement_at, c.txid, n.clinic_id, %3$L, %4$s,
           %5$L, %6$s, c.app_user, c.request_id, c.session_role, c.acting_role, c.client_addr, c.application_name
      from %7$s cross join %8$s n;
    return null;
end
$body$
$f$,
            v_fn, format(v_insert_into, case v_op when 'insert' then 'new_values' else 'old_values' end),
            v_table, v_row_id, v_op, v_image, v_context,
            case v_op when 'insert' then 'new_table' else 'old_table' end);
    end loop;

    -- UPDATE: once per row. v_same lists the columns whose value did not
    -- change; removing them (and the excluded ones) from both images leaves
    -- the changed columns plus the key. Equal images then mean that no
    -- audited column changed: no audit row (documented in docs/audit.md).
    -- Compared as typed values (old.c, new.c), which costs a third of
    -- comparing jsonb members; a type without an equality operator of its own
    -- (json, domains, arrays, enums) is compared as text.
    select case when count(*) = 0 then '''{}''::text[]' else
               format('array_remove(array[%s], null)',
                      string_agg(format(case when exists (select 1 from pg_operator o
                                                           where o.oprname = '=' and o.oprleft = a.atttypid
                                                             and o.oprright = a.atttypid and o.oprresult = 'boolean'::regtype)
                                             then 'case when old.%1$I is not distinct from new.%1$I then %1$L end'
                                             else 'case when old.%1$I::text is not distinct from new.%1$I::text then %1$L end' end,
                                        a.attname), ', ' order by a.attnum)) end
      into v_same
      from pg_attribute a
     where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped
       and a.attname::text <> all (p_keys) and a.attname::text <> all (p_excluded);
    v_fn := format('clinicdb.%I', clinicdb.audit_capture_name(p_table, 'update'));
    execute format($f$
create or replace function %1$s()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_drop text[] := %2$s || %3$L::text[];
    v_old jsonb := to_jsonb(old) - v_drop;
    v_new jsonb := to_jsonb(new) - v_drop;
begin
    -- Columns added to the table after this function was generated are in
    -- both images whether they changed or not: keep only the changed ones.
    if (v_new - %9$L::text[]) <> '{}'::jsonb then
        v_drop := array(select k from jsonb_object_keys(v_new - %9$L::text[]) as k
                         where v_old -> k is not distinct from v_new -> k);
        v_old := v_old - v_drop;
        v_new := v_new - v_drop;
    end if;
    if v_old = v_new then
        return null;
    end if;
    %4$s
    values (nextval('clinicdb.audit_log_id_seq'), clock_timestamp(), statement_timestamp(), txid_current(),
            new.clinic_id, %5$L, %6$s, 'update', %7$s, %8$s,
            nullif(current_setting('app.user_id', true), ''), nullif(current_setting('app.request_id', true), ''),
            session_user, coalesce(nullif(current_setting('role'), 'none'), session_user),
            inet_client_addr(), nullif(current_setting('application_name', true), ''));
    return null;
end
$body$
$f$,
        v_fn, v_same, p_excluded, format(v_insert_into, 'old_values, new_values'), v_table,
        case when cardinality(p_keys) = 1 then format('v_new ->> %L', p_keys[1])
             else format('clinicdb.audit_key_text(v_new, %L::text[])', p_keys) end,
        case when cardinality(p_masked) > 0 then format('clinicdb.audit_mask(v_old, %L::text[])', p_masked) else 'v_old' end,
        case when cardinality(p_masked) > 0 then format('clinicdb.audit_mask(v_new, %L::text[])', p_masked) else 'v_new' end,
        v_all);

    -- generated_at from its default (now()): Citus refuses a function call in
    -- DO UPDATE SET on a reference table, which this one is there.
    insert into clinicdb.audit_capture_state (table_name, columns, keys) values (p_table, v_all, p_keys)
    on conflict (table_name) do update set columns = excluded.columns, keys = excluded.keys,
                                          generated_at = excluded.generated_at;
    foreach v_op in array array['insert', 'update', 'delete'] loop
        v_fn := format('clinicdb.%I()', clinicdb.audit_capture_name(p_table, v_op));
        execute format('alter function %s owner to clinicdb_owner', v_fn);
        execute format('revoke execute on function %s from public', v_fn);
        execute format('comment on function %s is %L', v_fn,
                       format('clinicdb: audit capture of %s for %s on %s, generated by attach_audit(); do not edit.',
                              case v_op when 'update' then 'each row' else 'each statement' end, upper(v_op), v_table));
    end loop;
end
$fn$;
comment on function clinicdb.create_audit_capture(regclass, text[], text[], text[]) is
    'clinicdb: generate a table''s audit capture functions (insert, update, delete) from its key and column settings.';
revoke execute on function clinicdb.create_audit_capture(regclass, text[], text[], text[]) from public;
grant execute on function clinicdb.create_audit_capture(regclass, text[], text[], text[]) to clinicdb_owner;

-- The generated capture functions no trigger uses any more (their table was
-- dropped or detached): removed by attach_audit() and detach_audit().
create or replace function clinicdb.drop_unused_audit_capture()
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_fn regprocedure;
begin
    for v_fn in
        select p.oid::regprocedure
          from pg_proc p
         where p.pronamespace = 'clinicdb'::regnamespace
           and p.proname ~ '^audit_.*_[0-9]+_(insert|update|delete)$'
           and p.prorettype = 'trigger'::regtype
           and not exists (select 1 from pg_trigger t where t.tgfoid = p.oid)
    loop
        execute format('drop function %s', v_fn);
    end loop;
end
$$;
comment on function clinicdb.drop_unused_audit_capture() is
    'clinicdb: drop generated audit capture functions that no trigger uses.';
revoke execute on function clinicdb.drop_unused_audit_capture() from public;
grant execute on function clinicdb.drop_unused_audit_capture() to clinicdb_owner;

-- TRUNCATE removes every clinic's rows at once (only the owner and
-- superusers can): one system row records it.
create or replace function clinicdb.audit_capture_truncate()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into clinicdb.audit_log (id, logged_at, statement_at, txid, clinic_id, table_name, row_id, action,
                                    app_user, request_id, session_role, acting_role, client_addr, application_name)
    values (nextval('clinicdb.audit_log_id_seq'), clock_timestamp(), statement_timestamp(), txid_current(),
            null, tg_table_schema || '.' || tg_table_name, null, 'truncate',
            nullif(current_setting('app.user_id', true), ''), nullif(current_setting('app.request_id', true), ''),
            session_user, coalesce(nullif(current_setting('role'), 'none'), session_user),
            inet_client_addr(), nullif(current_setting('application_name', true), ''));
    return null;
end
$$;
comment on function clinicdb.audit_capture_truncate() is
    'clinicdb: statement-level audit trigger for TRUNCATE (one system row).';
revoke execute on function clinicdb.audit_capture_truncate() from public;
-- ---- sql/functions/citus_profile.sql ----
-- clinicdb.citus_distribute(): the Citus profile of the layer (issue #16).
--
-- Run by `clinicdb migrate --citus` on a Citus coordinator, as a superuser,
-- after the migrations (which run there with citus.enable_ddl_propagation
-- off, so they create the layer on the coordinator exactly as on a single
-- node). Idempotent: a second call distributes only what is new.
--
-- What it changes, and why each change keeps the guarantees:
--   * The tenant policy loses its (select ...) wrapper: Citus refuses
--     subqueries in policies on distributed tables. The bare call is
--     evaluated on every shard by the node holding it, and still fails closed
--     (NULL clinic: no row; writes: require_clinic_id() raises). The rows of
--     clinicdb.tenant_policies change, so protect_table and check_isolation
--     keep reading the one definition.
--   * current_clinic_id() and require_clinic_id() call plpgsql versions of
--     themselves (below: Citus evaluates every branch of a SQL body).
--   * Staff are matched by role name and the grant marked on the role
--     (_citus_staff_clinic_id(), sql/functions/citus_staff.sql): role OIDs
--     differ per node, and Citus propagates CREATE/DROP ROLE by name.
--   * Every layer table becomes a reference table (a copy on every node, so
--     the policies and triggers on a worker read the same staff mappings,
--     clinics and settings); the audit trail and every protected tenant
--     table are distributed by clinic_id and co-located, so a clinic's rows,
--     and the audit rows of its changes, live on one node.
--   * Foreign keys are dropped and re-created around the distribution (Citus
--     needs the referenced tables distributed first, and reference tables
--     cannot point at distributed ones); the definitions are kept verbatim.
--   * clinicdb_owner becomes LOGIN (Citus connects to workers as it).
--   * Composite types are created on the workers (Citus does not carry
--     them as dependencies of the layer's functions).

-- current_clinic_id() and require_clinic_id() for Citus: the same answers,
-- in plpgsql. Citus evaluates each function call in a distributed query on
-- the coordinator, including calls inside CASE branches and COALESCE
-- arguments the single-node SQL bodies would never reach (the error helpers,
-- the uuid cast of an empty setting); plpgsql runs only the branch taken.
create or replace function clinicdb._citus_current_clinic_id()
returns uuid
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    v_setting text;
begin
    if pg_has_role(current_user, 'clinicdb_staff', 'MEMBER') then
        return clinicdb._citus_staff_clinic_id();
    end if;
    if not (pg_has_role(current_user, 'clinicdb_app', 'MEMBER')
            or pg_has_role(current_user, 'clinicdb_readonly', 'MEMBER')) then
        return null;
    end if;
    v_setting := current_setting('app.clinic_id', true);
    if coalesce(v_setting, '') = '' then
        return null;
    end if;
    if v_setting ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' then
        return v_setting::uuid;
    end if;
    return clinicdb._invalid_clinic_setting(v_setting);
end
$$;
comment on function clinicdb._citus_current_clinic_id() is
    'clinicdb: on Citus, the body of current_clinic_id() (plpgsql: only the branch taken runs).';
revoke execute on function clinicdb._citus_current_clinic_id() from public;

create or replace function clinicdb._citus_require_clinic_id()
returns uuid
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    v_clinic uuid := clinicdb._citus_current_clinic_id();
begin
    if v_clinic is null then
        return clinicdb._no_clinic_in_force();
    end if;
    return v_clinic;
end
$$;
comment on function clinicdb._citus_require_clinic_id() is
    'clinicdb: on Citus, the body of require_clinic_id() (plpgsql: the error only when no clinic is in force).';
revoke execute on function clinicdb._citus_require_clinic_id() from public;

-- Audit capture for one row, for distributed and reference tables: the
-- statement-level capture reads transition tables, which Citus cannot give a
-- trigger on a shard. The arguments (fixed when citus_distribute() creates
-- the trigger) are the table's name, key columns, excluded and masked
-- columns, and whether it is a reference table: a reference table's trigger
-- fires on every node's copy, and only the coordinator's copy writes the row.
-- Same row image, key text and context columns as the generated functions.
create or replace function clinicdb.audit_capture_row()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_keys text[] := tg_argv[1]::text[];
    v_excluded text[] := tg_argv[2]::text[];
    v_masked text[] := tg_argv[3]::text[];
    v_row jsonb;
    v_image jsonb;
    v_old jsonb;
    v_new jsonb;
    v_row_id text;
begin
    if tg_argv[4] = 'reference' and not citus_is_coordinator() then
        return null;
    end if;
    v_row := case tg_op when 'DELETE' then to_jsonb(old) else to_jsonb(new) end;
    v_image := v_row - v_excluded;
    if cardinality(v_masked) > 0 then
        v_image := clinicdb.audit_mask(v_image, v_masked);
    end if;
    -- Plain values only in the INSERT below: Citus routes it to the clinic's
    -- shard with the expressions deparsed, and plain parameters deparse safely.
    if tg_op = 'DELETE' then
        v_old := v_image;
    else
        v_new := v_image;
    end if;
    if cardinality(v_keys) = 1 then
        v_row_id := v_row ->> v_keys[1];
    else
        v_row_id := clinicdb.audit_key_text(v_row, v_keys);
    end if;
    insert into clinicdb.audit_log (id, logged_at, statement_at, txid, clinic_id, table_name, row_id, action,
                                    old_values, new_values, app_user, request_id, session_role, acting_role,
                                    client_addr, application_name)
    values (nextval('clinicdb.audit_log_id_seq'), clock_timestamp(), statement_timestamp(), txid_current(),
            (v_row ->> 'clinic_id')::uuid, tg_argv[0], v_row_id, lower(tg_op), v_old, v_new,
            nullif(current_setting('app.user_id', true), ''), nullif(current_setting('app.request_id', true), ''),
            session_user, coalesce(nullif(current_setting('role'), 'none'), session_user),
            inet_client_addr(), nullif(current_setting('application_name', true), ''));
    return null;
end
$$;
comment on function clinicdb.audit_capture_row() is
    'clinicdb: on Citus, audit capture of one inserted or deleted row (citus_distribute() attaches it).';
revoke execute on function clinicdb.audit_capture_row() from public;

-- Steps 3 to 5 of citus_distribute(), one code path for the layer at
-- migrate time and for a table protected afterwards (protect_table() ->
-- _citus_protect_table()): every clinicdb table and every protected table
-- not distributed yet becomes a reference table (the layer's) or is
-- distributed by clinic_id co-located with the audit trail (the rest), with
-- the foreign keys touching them dropped first and re-created verbatim
-- afterwards. Tables already distributed are left alone, so it costs
-- nothing when there is nothing new; p_table adds one table the registry
-- does not hold yet (protect_table() registers a table once it exists on
-- every node: the registry is a reference table of regclass values).
-- The caller has set citus.enable_unsafe_triggers and a sequential
-- citus.multi_shard_modify_mode for the transaction; DDL propagation is
-- turned off for dropping the foreign keys and reset to the session's value
-- for the rest.
create or replace function clinicdb._citus_distribute_tables(p_table regclass default null)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_fk record;
    v_fks text[] := '{}';
    v_sql text;
    v_table regclass;
    v_first regclass;
    v_result record;
begin
    set local citus.enable_ddl_propagation = off;
    -- 3. Foreign keys between tables not yet distributed, kept to re-create.
    create temporary table if not exists pg_temp.citus_targets (relid regclass primary key, kind text not null) on commit drop;
    truncate pg_temp.citus_targets;
    insert into pg_temp.citus_targets
    select c.oid, case when n.nspname = 'clinicdb' and c.relname <> 'audit_log' then 'reference' else 'distributed' end
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p') and not c.relispartition
       and (n.nspname = 'clinicdb'
            or c.oid in (select p.table_name from clinicdb.protected_tables p)
            or c.oid = p_table)
       and not exists (select 1 from pg_dist_partition d
                        where d.logicalrelid = c.oid and (d.partmethod = 'h' or d.repmodel = 't'));
    for v_fk in
        select con.conname, con.conrelid::regclass as rel, pg_get_constraintdef(con.oid) as def
          from pg_constraint con
         where con.contype = 'f'
           and (con.conrelid in (select relid from pg_temp.citus_targets)
                or con.confrelid in (select relid from pg_temp.citus_targets))
    loop
        v_fks := v_fks || format('alter table %s add constraint %I %s', v_fk.rel, v_fk.conname, v_fk.def);
        execute format('alter table %s drop constraint %I', v_fk.rel, v_fk.conname);
    end loop;
    -- Citus-local tables (made by an earlier, interrupted attempt) go back to plain tables first.
    for v_table in select t.relid from pg_temp.citus_targets t
                    where exists (select 1 from pg_dist_partition d where d.logicalrelid = t.relid) loop
        perform undistribute_table(v_table);
    end loop;

    -- 4. Reference tables, then distributed ones co-located with the audit trail.
    reset citus.enable_ddl_propagation;
    for v_table in select t.relid from pg_temp.citus_targets t where kind = 'reference' order by t.relid::text loop
        perform create_reference_table(v_table);
    end loop;
    -- Composite types on the workers (the schema is there now), for the functions the
    -- distributed tables' triggers and views call.
    for v_result in
    select r.success, r.result from pg_type t join pg_class c on c.oid = t.typrelid,
           run_command_on_workers(format(
                'set citus.enable_ddl_propagation to off; '
                'do $do$ begin create type %1$s as (%2$s); alter type %1$s owner to %3$s; '
                'exception when duplicate_object then null; end $do$',
                t.oid::regtype,
                (select string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', '
                                   order by a.attnum)
                   from pg_attribute a where a.attrelid = t.typrelid and a.attnum > 0 and not a.attisdropped),
                t.typowner::regrole)) r
     where t.typnamespace = 'clinicdb'::regnamespace and t.typtype = 'c' and c.relkind = 'c'
    loop
        if not v_result.success then
            raise exception 'could not create the layer''s types on a worker: %', v_result.result;
        end if;
    end loop;

    select d.logicalrelid into v_first from pg_dist_partition d
     where d.partmethod = 'h' and d.logicalrelid = 'clinicdb.audit_log'::regclass;
    if v_first is null then
        perform create_distributed_table('clinicdb.audit_log', 'clinic_id');
    end if;
    for v_table in select t.relid from pg_temp.citus_targets t
                    where kind = 'distributed' and t.relid <> 'clinicdb.audit_log'::regclass order by t.relid::text loop
        perform create_distributed_table(v_table, 'clinic_id', colocate_with => 'clinicdb.audit_log');
    end loop;

    -- 5. The foreign keys, as they were.
    foreach v_sql in array v_fks loop
        execute v_sql;
    end loop;
end
$$;
comment on function clinicdb._citus_distribute_tables(regclass) is
    'clinicdb: on Citus, distribute every layer and protected table (and p_table) not distributed yet (citus_distribute() steps 3-5).';
revoke execute on function clinicdb._citus_distribute_tables(regclass) from public;

-- Step 7 of citus_distribute() for one table, and what protect_table() ends
-- with on a distributed coordinator: the audit triggers attach_audit() made
-- (statement-level, reading transition tables a shard cannot give) replaced
-- by the row-level capture, clinicdb.audit_capture_row(), with the table's
-- name, key, excluded and masked columns fixed as the trigger's arguments.
-- A distributed table keeps its generated row-level update capture; a
-- reference table's update capture runs on the coordinator's copy only.
create or replace function clinicdb._citus_audit_per_row(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_table regclass := p_table;
    v_kind text;
    v_args text;
    v_update_fn text;
begin
    select case d.partmethod when 'n' then 'reference' else 'distributed' end into v_kind
      from pg_dist_partition d where d.logicalrelid = v_table;
    if v_kind is null then
        raise exception 'table % is not distributed', v_table
            using errcode = 'object_not_in_prerequisite_state', hint = 'call clinicdb.citus_distribute() first';
    end if;
    select format('%L, %L, %L, %L, %L', n.nspname || '.' || c.relname, clinicdb.audit_key_columns(v_table),
                  coalesce(array_agg(s.column_name::text order by s.column_name) filter (where s.mode = 'exclude'), '{}'),
                  coalesce(array_agg(s.column_name::text order by s.column_name) filter (where s.mode = 'mask'), '{}'),
                  v_kind)
      into v_args
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      left join clinicdb.audit_settings s on s.table_name = c.oid
     where c.oid = v_table
     group by n.nspname, c.relname;
    execute format('drop trigger clinicdb_audit_insert on %s', v_table);
    execute format('create trigger clinicdb_audit_insert after insert on %s for each row '
                   'execute function clinicdb.audit_capture_row(%s)', v_table, v_args);
    if v_kind = 'reference' then
        select format('clinicdb.%I()', p.proname) into v_update_fn from pg_trigger tg join pg_proc p on p.oid = tg.tgfoid
         where tg.tgrelid = v_table and tg.tgname = 'clinicdb_audit_update';
        execute format('drop trigger clinicdb_audit_update on %s', v_table);
        execute format('create trigger clinicdb_audit_update after update on %s for each row '
                       'when (pg_catalog.citus_is_coordinator()) execute function %s', v_table, v_update_fn);
    end if;
    execute format('drop trigger clinicdb_audit_delete on %s', v_table);
    execute format('create trigger clinicdb_audit_delete after delete on %s for each row '
                   'execute function clinicdb.audit_capture_row(%s)', v_table, v_args);
end
$$;
comment on function clinicdb._citus_audit_per_row(regclass) is
    'clinicdb: on Citus, the row-level audit capture on one distributed or reference table (citus_distribute() step 7).';
revoke execute on function clinicdb._citus_audit_per_row(regclass) from public;

-- A table protected on a Citus coordinator whose layer is already
-- distributed (one a DBA adds to a running database: `clinicdb protect
-- TABLE`) joins the others the way citus_distribute() puts them there, with
-- the same functions, in two halves around protect_table()'s own work:
-- _citus_distribute_table() first, _citus_audit_table() last. In between,
-- protect_table() applies the policies from clinicdb.tenant_policies, which
-- citus_distribute() rewrote to the form Citus accepts (one definition), and
-- its registry rows can name the table on every node.
--
-- Both do nothing without Citus, before the layer is distributed
-- (citus_distribute() does everything then), for the layer's own tables, or
-- for a partition (distributed with its partitioned table). DDL propagation
-- is on from the first half until protect_table() ends, whatever the
-- session says: a migration on Citus runs with it off (`clinicdb new table`
-- migrations call protect_table()), and every statement on a distributed
-- table must reach its shards. protect_table() puts the session's value
-- back.
create or replace function clinicdb._citus_joins_table(p_table regclass)
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
    if not exists (select 1 from pg_extension where extname = 'citus') then
        return false;
    end if;
    return exists (select 1 from pg_dist_partition d
                    where d.logicalrelid = 'clinicdb.audit_log'::regclass and d.partmethod = 'h')
       and not (select c.relnamespace = 'clinicdb'::regnamespace or c.relispartition from pg_class c where c.oid = p_table);
end
$$;
comment on function clinicdb._citus_joins_table(regclass) is
    'clinicdb: whether protect_table() distributes this table itself (Citus, the layer distributed, not a layer table).';
revoke execute on function clinicdb._citus_joins_table(regclass) from public;

-- The first half: the table distributed by clinic_id, co-located with the
-- audit trail (its foreign keys kept), after the statements of
-- protect_table_sql() that alter clinic_id (Citus refuses them on a
-- distribution column). Refuses a primary or unique key without clinic_id,
-- which a shard could enforce only among its own rows (Citus refuses it
-- too). Returns the table, found again by name: distributing a Citus-local
-- table gives it a new oid. Leaves citus.enable_unsafe_triggers on and
-- citus.multi_shard_modify_mode sequential for the transaction, as
-- citus_distribute() does, and DDL propagation on.
create or replace function clinicdb._citus_distribute_table(p_table regclass)
returns regclass
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_name text := p_table::text;
    v_key text;
    v_stmt text;
    v_fks text[];
begin
    if not clinicdb._citus_joins_table(p_table) then
        return p_table;
    end if;
    -- Every statement on the table reaches its shards; triggers on it are
    -- allowed; one connection per node, the only way Citus replaces a
    -- distributed function (the table's audit capture) after the policies'
    -- DDL on its shards.
    perform set_config('citus.enable_ddl_propagation', 'on', true);
    perform set_config('citus.enable_unsafe_triggers', 'on', true);
    perform set_config('citus.multi_shard_modify_mode', 'sequential', true);
    if exists (select 1 from pg_dist_partition d where d.logicalrelid = p_table and d.partmethod = 'h') then
        return p_table;
    end if;
    select pg_get_indexdef(i.indexrelid) into v_key
      from pg_index i
     where i.indrelid = p_table and (i.indisunique or i.indisexclusion)
       and not exists (select 1 from pg_attribute a
                        where a.attrelid = p_table and a.attname = 'clinic_id' and a.attnum = any (i.indkey))
     order by i.indisprimary desc, i.indexrelid
     limit 1;
    if v_key is not null then
        raise exception 'table %: on Citus every primary and unique key must include clinic_id (%)', p_table, v_key
            using errcode = 'invalid_table_definition',
                  hint = 'make clinic_id part of it, e.g. primary key (clinic_id, id), then protect the table again';
    end if;
    for v_stmt in select q.stmt from clinicdb.protect_table_sql(p_table) q(stmt)
                   where starts_with(q.stmt, format('alter table %s alter column clinic_id ', p_table)) loop
        execute v_stmt;
    end loop;
    -- Citus makes a table created with a foreign key to a reference table
    -- (clinics) Citus-local, with a copy of its definition on every node.
    -- It goes back to a plain table first, on every node (under a new oid),
    -- its foreign keys kept; Citus re-creates a plain table's on the shards.
    if exists (select 1 from pg_dist_partition d where d.logicalrelid = p_table) then
        v_fks := array(select format('alter table %s add constraint %I %s', v_name, con.conname, pg_get_constraintdef(con.oid))
                         from pg_constraint con where con.conrelid = p_table and con.contype = 'f' order by con.conname);
        for v_stmt in select con.conname from pg_constraint con where con.conrelid = p_table and con.contype = 'f' loop
            execute format('alter table %s drop constraint %I', v_name, v_stmt);
        end loop;
        p_table := to_regclass(v_name);
        if exists (select 1 from pg_dist_partition d where d.logicalrelid = p_table) then
            perform undistribute_table(p_table);
            p_table := to_regclass(v_name);
        end if;
        perform set_config('citus.enable_ddl_propagation', 'off', true);
        foreach v_stmt in array v_fks loop
            execute v_stmt;
        end loop;
        perform set_config('citus.enable_ddl_propagation', 'on', true);
    end if;
    perform clinicdb._citus_distribute_tables(p_table);
    -- (It resets DDL propagation to the session's value, off in a migration.)
    perform set_config('citus.enable_ddl_propagation', 'on', true);
    return to_regclass(v_name);
end
$$;
comment on function clinicdb._citus_distribute_table(regclass) is
    'clinicdb: on a distributed Citus coordinator, distribute a table protect_table() is about to protect; returns it (its oid may change).';
revoke execute on function clinicdb._citus_distribute_table(regclass) from public;

-- The second half: the table's generated audit capture functions on every
-- node (its update trigger calls one on the shards; citus_distribute() step
-- 6 does this for the layer's functions), then the row-level audit capture
-- in place of the triggers attach_audit() made (step 7).
create or replace function clinicdb._citus_audit_table(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_function regprocedure;
begin
    if not clinicdb._citus_joins_table(p_table) then
        return;
    end if;
    for v_function in
        select p.oid::regprocedure from pg_proc p
         where p.pronamespace = 'clinicdb'::regnamespace
           and p.proname in (clinicdb.audit_capture_name(p_table, 'insert'), clinicdb.audit_capture_name(p_table, 'update'),
                             clinicdb.audit_capture_name(p_table, 'delete'))
           and not exists (select 1 from pg_dist_object o where o.classid = 'pg_proc'::regclass and o.objid = p.oid)
    loop
        perform create_distributed_function(v_function);
    end loop;
    perform clinicdb._citus_audit_per_row(p_table);
end
$$;
comment on function clinicdb._citus_audit_table(regclass) is
    'clinicdb: on a distributed Citus coordinator, the row-level audit capture on a table protect_table() has just protected.';
revoke execute on function clinicdb._citus_audit_table(regclass) from public;

create or replace procedure clinicdb.citus_distribute()
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_function regprocedure;
begin
    if not exists (select 1 from pg_extension where extname = 'citus') then
        raise exception 'the citus extension is not installed in this database'
            using errcode = 'feature_not_supported',
                  hint = 'create extension citus on the coordinator and every worker, then add the workers';
    end if;
    if not exists (select 1 from pg_dist_node where groupid <> 0 and isactive and noderole = 'primary') then
        raise exception 'this Citus coordinator has no active worker'
            using errcode = 'object_not_in_prerequisite_state',
                  hint = 'select citus_add_node(host, port) for each worker first';
    end if;
    if not exists (select 1 from pg_dist_node where groupid = 0) then
        raise exception 'this Citus coordinator is not in its own metadata'
            using errcode = 'object_not_in_prerequisite_state',
                  hint = 'select citus_set_coordinator_host(host, port) first: the audit rows of reference tables are written by the coordinator''s copy';
    end if;
    -- Citus opens its own connections to the workers as the current user,
    -- and the audit capture runs as clinicdb_owner (security definer): the
    -- owner must be able to log in on the workers. Which hosts may, and how
    -- they authenticate, is pg_hba.conf's decision (docs/citus.md).
    alter role clinicdb_owner login;
    -- Objects this procedure changes reach the workers when their tables are
    -- distributed (or not at all: the coordinator is the source of truth).
    set local citus.enable_ddl_propagation = off;
    set local citus.enable_unsafe_triggers = on;
    -- Foreign keys to reference tables are re-created in this same transaction.
    set local citus.multi_shard_modify_mode = 'sequential';

    -- 1. The policy form Citus accepts.
    update clinicdb.tenant_policies
       set using_expr = regexp_replace(using_expr, '\(select (clinicdb\.\w+\(\))\)', '\1', 'g'),
           check_expr = regexp_replace(check_expr, '\(select (clinicdb\.\w+\(\))\)', '\1', 'g')
     where using_expr ~ '\(select ' or check_expr ~ '\(select ';
    if found then
        perform clinicdb.protect_table(p.table_name) from clinicdb.protected_tables p;
        perform clinicdb.protect_table('clinicdb.policy_reference');
    end if;
    alter policy audit_log_read on clinicdb.audit_log
        using (clinic_id = clinicdb.current_clinic_id() or pg_has_role('clinicdb_auditor', 'MEMBER'));
    alter policy audit_log_access_insert on clinicdb.audit_log
        with check (action = 'access' and old_values is null and new_values is null
                    and clinic_id = clinicdb.require_clinic_id()
                    and clinicdb._access_row_visible(table_name, row_id));

    -- 2. Staff by role name.
    execute 'create or replace function clinicdb._staff_clinic_id() returns uuid language sql stable parallel safe '
            'return clinicdb._citus_staff_clinic_id()';
    grant execute on function clinicdb._citus_staff_clinic_id() to public;
    -- Called by the policy on a shard, it reads staff_members, a reference
    -- table: its copy on the same node answers, so the nested query Citus
    -- otherwise refuses from a shard cannot give another node's answer.
    alter function clinicdb._citus_staff_clinic_id() set citus.allow_nested_distributed_execution = on;
    execute 'create or replace function clinicdb.current_clinic_id() returns uuid language sql stable parallel safe '
            'return clinicdb._citus_current_clinic_id()';
    execute 'create or replace function clinicdb.require_clinic_id() returns uuid language sql stable parallel safe '
            'return clinicdb._citus_require_clinic_id()';
    grant execute on function clinicdb._citus_current_clinic_id(), clinicdb._citus_require_clinic_id() to public;
    -- grant_staff() as defined, with its role-oid subquery as a cast: Citus
    -- refuses subqueries inside an INSERT on a reference table.
    execute replace(pg_get_functiondef('clinicdb.grant_staff(name, uuid)'::regprocedure),
                    'values (p_role, (select oid from pg_roles where rolname = p_role), p_clinic)',
                    'values (p_role, p_role::text::regrole::oid, p_clinic)');
    -- The same query as sql/functions/clinic_keys.sql, in plpgsql: a SQL-standard
    -- body records that it reads clinicdb.key_epoch, and Citus refuses to
    -- distribute a table a function of its own dependencies reads.
    execute $f$
create or replace function clinicdb._statement_keyring()
returns setof clinicdb.keyring
language plpgsql
stable
rows 1
set search_path = pg_catalog, pg_temp
as $body$
begin
    return query
    select left(q.ring, 36)::uuid, split_part(q.ring, '/', 3)::integer,
           clinicdb._keyring_keys(q.ring, 4), clinicdb._keyring_keys(q.ring, 5), clinicdb._keyring_keys(q.ring, 6),
           null::text
      from (select current_setting('app.clinic_keyring', true) as ring,
                   current_setting('app.clinic_id', true) as clinic) q
     where case when not coalesce(left(q.ring, 37) = q.clinic || '/', false) then false
                when not clinicdb._keyring_is_for(q.ring, q.clinic) then false
                when split_part(q.ring, '/', 2) = (select e.epoch::text from clinicdb.key_epoch e) then true
                else (clinicdb._stale_keyring(q.clinic::uuid)).active_version is null
           end
    union all
    select k.clinic_id, k.active_version, k.enc_keys, k.mac_keys, k.idx_keys, k.problem
      from clinicdb._keyring_in_force() k
     where not coalesce(left(current_setting('app.clinic_keyring', true), 37)
                        = current_setting('app.clinic_id', true) || '/', false);
end
$body$
$f$;

    -- 3.-5. Every layer table and protected table not distributed yet (below).
    perform clinicdb._citus_distribute_tables();

    -- 6. Every function of the layer on every node: triggers and policies on
    --    the shards call functions Citus does not see as dependencies (plpgsql
    --    bodies record none). Again on every call, so later migrations'
    --    definitions reach the workers.
    for v_function in
        select p.oid::regprocedure from pg_proc p
         where p.pronamespace = 'clinicdb'::regnamespace and p.prokind = 'f'
           and not exists (select 1 from pg_depend d
                            where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
         order by p.oid
    loop
        perform create_distributed_function(v_function);
    end loop;

    -- 7. Audit capture per row on every audited table (again on every call:
    --    attach_audit() puts the statement-level triggers back).
    perform clinicdb._citus_audit_per_row(t.tgrelid)
       from pg_trigger t join pg_dist_partition d on d.logicalrelid = t.tgrelid
      where t.tgname = 'clinicdb_audit_insert' and not t.tgisinternal
        and t.tgfoid <> 'clinicdb.audit_capture_row()'::regprocedure;
end
$$;
comment on procedure clinicdb.citus_distribute() is
    'clinicdb: on a Citus coordinator, distribute the layer and every protected table by clinic_id (docs/citus.md). Idempotent.';
revoke execute on procedure clinicdb.citus_distribute() from public;
reset role;
