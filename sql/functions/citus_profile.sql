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
comment on procedure clinicdb.citus_distribute() is
    'clinicdb: on a Citus coordinator, distribute the layer and every protected table by clinic_id (docs/citus.md). Idempotent.';
revoke execute on procedure clinicdb.citus_distribute() from public;
