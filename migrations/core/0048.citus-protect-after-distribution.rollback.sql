-- 0048.citus-protect-after-distribution: undo 0048.citus-protect-after-distribution.
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/citus_protect.rollback.sql when it was written. migrations/migrations.lock pins it:
-- change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/citus_protect.rollback.sql ----
-- Undo migration 0048 (sql/functions/protect_table.sql, audit_capture.sql
-- and citus_profile.sql as 0048 left them): protect_table(),
-- protect_table_sql(), create_audit_capture() and citus_distribute() as
-- they were before it, unchanged, and the helpers it added dropped
-- (create or replace keeps each function's owner, comment and grants).
-- No row changes: a table protected after distribution stays distributed,
-- protected and audited; protecting another one on Citus fails again, as
-- before 0048.

create or replace procedure clinicdb.citus_distribute()
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_fk record;
    v_fks text[] := '{}';
    v_sql text;
    v_table regclass;
    v_first regclass;
    v_result record;
    v_kind text;
    v_args text;
    v_update_fn text;
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

    -- 3. Foreign keys between tables not yet distributed, kept to re-create.
    create temporary table if not exists pg_temp.citus_targets (relid regclass primary key, kind text not null) on commit drop;
    truncate pg_temp.citus_targets;
    insert into pg_temp.citus_targets
    select c.oid, case when n.nspname = 'clinicdb' and c.relname <> 'audit_log' then 'reference' else 'distributed' end
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p') and not c.relispartition
       and (n.nspname = 'clinicdb'
            or c.oid in (select p.table_name from clinicdb.protected_tables p))
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
    for v_table, v_kind in
        select t.tgrelid::regclass, case d.partmethod when 'n' then 'reference' else 'distributed' end
          from pg_trigger t join pg_dist_partition d on d.logicalrelid = t.tgrelid
         where t.tgname = 'clinicdb_audit_insert' and not t.tgisinternal
           and t.tgfoid <> 'clinicdb.audit_capture_row()'::regprocedure
    loop
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
    end loop;
end
$$;

create or replace function clinicdb.protect_table(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_stmt text;
    v_extra text;
begin
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

    insert into clinicdb.protected_tables (table_name) values (p_table)
    on conflict (table_name) do update set protected_at = now(), protected_by = session_user;
end
$$;

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
begin
    select a.attnotnull, a.attgenerated, format_type(a.atttypid, a.atttypmod) as type_name
      into v_col
      from pg_attribute a
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
    if v_col.attgenerated = '' then
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

    insert into clinicdb.audit_capture_state (table_name, columns, keys) values (p_table, v_all, p_keys)
    on conflict (table_name) do update set columns = excluded.columns, keys = excluded.keys, generated_at = now();
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

drop function if exists clinicdb._citus_audit_table(regclass);
drop function if exists clinicdb._citus_distribute_table(regclass);
drop function if exists clinicdb._citus_joins_table(regclass);
drop function if exists clinicdb._citus_audit_per_row(regclass);
drop function if exists clinicdb._citus_distribute_tables(regclass);
reset role;
