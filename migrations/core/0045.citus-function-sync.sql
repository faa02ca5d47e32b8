-- 0045.citus-function-sync: clinicdb.citus_sync_functions(), the last step of clinicdb migrate on Citus: a layer function a
-- migration replaced on the coordinator only (migrations run with DDL propagation off;
-- create_distributed_function does not resend) reaches every worker; clinicdb check reports a function
-- that differs on a node
-- depends: 0044.citus-staff-marker
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/citus_function_sync.sql, sql/functions/citus_findings.sql when it was written.
-- migrations/migrations.lock pins it: change sql/ and add a new migration instead of editing this
-- file.

set local role clinicdb_owner;
-- ---- sql/functions/citus_function_sync.sql ----
-- The layer's functions on a Citus worker must be the coordinator's: the
-- shards' policies, triggers and audit capture call them there. Migrations
-- run with Citus's DDL propagation off, and create_distributed_function()
-- does not send a function that is already distributed again, so a
-- migration that replaces a function changes the coordinator's copy only:
-- a worker would go on enforcing the old body (an isolation or audit rule
-- the coordinator no longer has). clinicdb._citus_function_drift() finds
-- every such function on every worker; clinicdb.citus_sync_functions(),
-- the last step `clinicdb migrate` runs on Citus, sends the coordinator's
-- definitions; `clinicdb check` reports what is left.

-- (worker, function, problem) for every layer function whose definition on
-- a worker is not the coordinator's, or that a worker lacks.
create or replace function clinicdb._citus_function_drift()
returns table (node text, function_name regprocedure, problem text)
language plpgsql
volatile  -- asks the workers (run_command_on_workers)
set search_path = pg_catalog, pg_temp
as $$
declare
    -- One line per function: signature, tab, md5 of its whole definition.
    v_query constant text := $q$
        select coalesce(string_agg(p.oid::regprocedure::text || E'\t' || md5(pg_get_functiondef(p.oid)), E'\n'), '')
          from pg_proc p
         where p.pronamespace = 'clinicdb'::regnamespace and p.prokind = 'f'
           and not exists (select 1 from pg_depend d
                            where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')$q$;
    v_mine text;
    v_node record;
begin
    if not exists (select 1 from pg_extension where extname = 'citus') then
        return;
    end if;
    execute v_query into v_mine;
    for v_node in
        select format('node %s:%s', r.nodename, r.nodeport) as node, r.success, r.result
          from run_command_on_workers(v_query) r
    loop
        if not v_node.success then
            raise exception 'could not read the layer''s functions on %: %', v_node.node, v_node.result;
        end if;
        return query
            select v_node.node, split_part(m.line, E'\t', 1)::regprocedure,
                   case when w.line is null and not exists (
                            select 1 from regexp_split_to_table(v_node.result, E'\n') o(line)
                             where split_part(o.line, E'\t', 1) = split_part(m.line, E'\t', 1))
                        then 'missing' else 'differs' end
              from regexp_split_to_table(v_mine, E'\n') m(line)
              left join regexp_split_to_table(v_node.result, E'\n') w(line) on w.line = m.line
             where m.line <> '' and w.line is null
             order by 2::text;
    end loop;
end
$$;
comment on function clinicdb._citus_function_drift() is
    'clinicdb: on a Citus coordinator, the layer functions whose definition on a worker differs from the coordinator''s, or that a worker lacks.';
revoke execute on function clinicdb._citus_function_drift() from public;

-- Sends the coordinator's definition of every drifted function to every
-- node: create or replace of a distributed function with propagation on
-- runs on every node and keeps its owner and grants there; a function
-- Citus does not know yet is distributed. The workers apply the
-- definitions when this transaction commits, so whether any still differs
-- is asked afterwards (`clinicdb migrate` does, and `clinicdb check`).
-- p_undo does nothing (there is nothing to give back: the workers then
-- hold what the coordinator holds).
create or replace procedure clinicdb.citus_sync_functions(p_undo boolean default false)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_function regprocedure;
begin
    if p_undo then
        return;
    end if;
    if not exists (select 1 from pg_extension where extname = 'citus') then
        raise exception 'the citus extension is not installed in this database'
            using errcode = 'feature_not_supported';
    end if;
    set local citus.enable_ddl_propagation = on;
    for v_function in select distinct d.function_name from clinicdb._citus_function_drift() d order by 1 loop
        if exists (select 1 from pg_dist_object o
                    where o.classid = 'pg_proc'::regclass and o.objid = v_function::oid) then
            execute pg_get_functiondef(v_function);
        else
            perform create_distributed_function(v_function);
        end if;
    end loop;
end
$$;
comment on procedure clinicdb.citus_sync_functions(boolean) is
    'clinicdb: on a Citus coordinator, send the coordinator''s definition of every layer function that differs on a worker (run by migrate, last).';
revoke execute on procedure clinicdb.citus_sync_functions(boolean) from public;
-- ---- sql/functions/citus_findings.sql ----
-- clinicdb.citus_findings(): what `clinicdb check` adds on a Citus
-- coordinator. The Citus profile (citus_harden, citus_protect_logs) changes
-- every node once, when `clinicdb migrate` runs; a node added later starts
-- with Citus's own grants and no logging settings, a DBA can give a right
-- back by hand, and a `clinicdb psql` session killed before its clean-up
-- leaves its temporary login behind. Each of these is invisible on the
-- coordinator's own catalog, so this asks every node. Returns no row on a
-- database without Citus. Read-only.
create or replace function clinicdb.citus_findings()
returns table (object text, finding text)
language plpgsql
volatile  -- asks the other nodes (run_command_on_all_nodes)
set search_path = pg_catalog, pg_temp
as $$
declare
    v_node record;
    v_setting text;
begin
    if not exists (select 1 from pg_extension where extname = 'citus') then
        return;
    end if;

    -- Citus's internal metadata functions, executable by PUBLIC (citus_harden).
    for v_node in
        select format('node %s:%s', n.nodename, n.nodeport) as node, r.success, r.result
          from run_command_on_all_nodes(
                   $q$select count(*) from pg_proc p
                       where (p.pronamespace = to_regnamespace('citus_internal') or p.proname like 'citus\_internal\_%')
                         and has_function_privilege('public', p.oid, 'EXECUTE')$q$) r
          left join pg_dist_node n on n.nodeid = r.nodeid
    loop
        if not v_node.success then
            object := v_node.node;
            finding := format('could not be asked: %s', v_node.result);
            return next;
        elsif v_node.result <> '0' then
            object := v_node.node;
            finding := format('%s of Citus''s internal functions are executable by PUBLIC: '
                              'run clinicdb migrate again (call clinicdb.citus_harden())', v_node.result);
            return next;
        end if;
    end loop;

    -- The logging settings of every node's copy of this database (citus_protect_logs, 0005).
    foreach v_setting in array array['log_min_error_statement=panic', 'log_parameter_max_length=0',
                                     'log_parameter_max_length_on_error=0'] loop
        for v_node in
            select format('node %s:%s', n.nodename, n.nodeport) as node, r.success, r.result
              from run_command_on_all_nodes(format(
                       'select coalesce(bool_or(%L = any (s.setconfig)), false) from pg_db_role_setting s '
                       'join pg_database d on d.oid = s.setdatabase where d.datname = current_database() '
                       'and s.setrole = 0', v_setting)) r
              left join pg_dist_node n on n.nodeid = r.nodeid
        loop
            if not v_node.success then
                object := v_node.node;
                finding := format('could not be asked: %s', v_node.result);
                return next;
            elsif v_node.result <> 't' then
                object := v_node.node;
                finding := format('its database lacks %s (PHI or keys could reach its log): '
                                  'run clinicdb migrate again (call clinicdb.citus_protect_logs())', v_setting);
                return next;
            end if;
        end loop;
    end loop;

    -- Layer functions a worker holds in another version, or lacks (a
    -- migration replaced them on the coordinator only): the shards would
    -- enforce the old rule. Only once citus_sync_functions exists (0045).
    if to_regprocedure('clinicdb._citus_function_drift()') is not null then
        return query execute $q$
            select d.node, format('%s %s from the coordinator''s: run clinicdb migrate again '
                                  '(call clinicdb.citus_sync_functions())', d.function_name,
                                  case d.problem when 'missing' then 'is missing, unlike' else 'differs' end)
              from clinicdb._citus_function_drift() d$q$;
    end if;

    -- Write rights on the layer's reference tables (citus_harden).
    return query
        select t.logicalrelid::text,
               format('%s may %s it: a write on one node''s copy diverges the copies unaudited; '
                      'run clinicdb migrate again (call clinicdb.citus_harden())', r.rolname, p.privilege)
          from pg_dist_partition t
          join pg_class c on c.oid = t.logicalrelid
          cross join (values ('clinicdb_app'), ('clinicdb_staff'), ('clinicdb_readonly'), ('clinicdb_auditor')) r(rolname)
          cross join (values ('insert'), ('update'), ('delete'), ('truncate')) p(privilege)
         where t.partmethod = 'n' and t.repmodel = 't' and c.relnamespace = 'clinicdb'::regnamespace
           and has_table_privilege(r.rolname, t.logicalrelid, p.privilege)
         order by 1, 2;

    -- Temporary logins of `clinicdb psql` with no session left: a session
    -- killed before its clean-up. Each is a login with a default clinic and
    -- an application role that nobody holds the password of any more.
    return query
        select format('role %s', r.rolname),
               format('a temporary login of clinicdb psql outlived its session: drop role %I', r.rolname)
          from pg_roles r
         where r.rolname like 'clinicdb\_psql\_%'
           and not exists (select 1 from pg_stat_activity a where a.usename = r.rolname)
         order by 1;
end
$$;
comment on function clinicdb.citus_findings() is
    'clinicdb: on a Citus coordinator, what clinicdb check reports beyond isolation and audit: Citus internals open to PUBLIC, missing logging settings, writable reference tables, leftover psql logins, on every node.';
revoke execute on function clinicdb.citus_findings() from public;
reset role;
