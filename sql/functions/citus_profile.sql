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
    v_trigger record;
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
    -- A table that already holds rows (a database that ran on a single node
    -- before Citus came): Citus copies its rows into the new shards with the
    -- table's triggers already on the shards, so every trigger that fires on
    -- INSERT would act again for each existing row. The statement-level
    -- audit capture would write a second, false insert record (or, for a
    -- reference table, fail: the trail is not distributed yet); the legacy
    -- seal chain's guard refuses any insert (a database sealed before 0020
    -- could not distribute); an application's own insert trigger would act
    -- again. So they go before the copy: the insert capture for good (step 7,
    -- _citus_audit_per_row(), puts the row-level capture in its place; the
    -- tables are listed in pg_temp.citus_capture_moved for it), every other
    -- enabled insert trigger to be created again from its own definition
    -- once its table is distributed (after step 5), which Citus sends to
    -- every shard. A disabled or replica-only trigger is left as it is.
    create temporary table if not exists pg_temp.citus_capture_moved (relid regclass primary key) on commit drop;
    create temporary table if not exists pg_temp.citus_insert_triggers (relid regclass, name name, def text)
        on commit drop;
    truncate pg_temp.citus_insert_triggers;
    insert into pg_temp.citus_capture_moved
    select t.relid from pg_temp.citus_targets t
     where exists (select 1 from pg_trigger tg
                    where tg.tgrelid = t.relid and tg.tgname = 'clinicdb_audit_insert' and not tg.tgisinternal
                      and tg.tgfoid <> 'clinicdb.audit_capture_row()'::regprocedure)
    on conflict do nothing;
    insert into pg_temp.citus_insert_triggers
    select tg.tgrelid, tg.tgname, pg_get_triggerdef(tg.oid)
      from pg_trigger tg join pg_temp.citus_targets t on t.relid = tg.tgrelid
     where not tg.tgisinternal and tg.tgenabled = 'O' and (tg.tgtype::integer & 4) <> 0
       and tg.tgname <> 'clinicdb_audit_insert';
    for v_table in select m.relid from pg_temp.citus_capture_moved m
                    where m.relid in (select t.relid from pg_temp.citus_targets t) loop
        execute format('drop trigger if exists clinicdb_audit_insert on %s', v_table);
    end loop;
    for v_trigger in select m.relid, m.name from pg_temp.citus_insert_triggers m loop
        execute format('drop trigger %I on %s', v_trigger.name, v_trigger.relid);
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

    -- 5. The foreign keys, as they were, and the insert triggers moved aside above.
    foreach v_sql in array v_fks loop
        execute v_sql;
    end loop;
    for v_trigger in select m.def from pg_temp.citus_insert_triggers m loop
        execute v_trigger.def;
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
    -- (Already gone when _citus_distribute_tables() moved it aside for the copy of the table's rows.)
    execute format('drop trigger if exists clinicdb_audit_insert on %s', v_table);
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
    --    (With the tables whose insert capture steps 3-5 moved aside.)
    perform clinicdb._citus_audit_per_row(r.relid)
       from (select t.tgrelid::regclass as relid from pg_trigger t
              where t.tgname = 'clinicdb_audit_insert' and not t.tgisinternal
                and t.tgfoid <> 'clinicdb.audit_capture_row()'::regprocedure
             union
             select m.relid from pg_temp.citus_capture_moved m) r
       join pg_dist_partition d on d.logicalrelid = r.relid;
end
$$;
comment on procedure clinicdb.citus_distribute() is
    'clinicdb: on a Citus coordinator, distribute the layer and every protected table by clinic_id (docs/citus.md). Idempotent.';
revoke execute on procedure clinicdb.citus_distribute() from public;
