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
