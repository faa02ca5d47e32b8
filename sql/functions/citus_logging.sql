-- clinicdb.citus_protect_logs(): on a Citus cluster, every node's copy of
-- this database gets the logging settings that keep PHI and keys out of the
-- server logs (issue #16). Called by `clinicdb migrate` after
-- clinicdb.citus_harden(), as a superuser; idempotent; run it again after
-- adding a node.
--
--   * Citus sends a distributed statement to a worker as SQL text with the
--     values written in: a bind parameter on the coordinator arrives on the
--     worker as a literal. A statement that fails there is logged with its
--     text under PostgreSQL's default log_min_error_statement = error, so a
--     refused write of an encrypted column, or a unique violation on a
--     patient's row, would leave the row's values in the worker's log.
--     log_min_error_statement = panic keeps a failing statement's text out
--     of every node's log (the error message itself is still logged; the
--     layer's messages never carry a value or a key).
--   * Migration 0005 sets log_parameter_max_length(_on_error) = 0 on the
--     coordinator's database only; each worker's database needs them too.
-- The settings are per database (alter database ... set) and superuser-only,
-- so no application role can turn them back on. An operator's own
-- log_statement = 'all' on a worker still logs every statement as Citus
-- sends it (docs/citus.md says not to).
create or replace procedure clinicdb.citus_protect_logs(p_undo boolean default false)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_result record;
    v_command text;
begin
    if not exists (select 1 from pg_extension where extname = 'citus') then
        raise exception 'the citus extension is not installed in this database'
            using errcode = 'feature_not_supported';
    end if;
    -- Every node: failing statements' text.
    for v_result in
        select r.nodeid, r.success, r.result
          from run_command_on_all_nodes(format(
                   'set citus.enable_ddl_propagation to off; alter database %I '
                   || case when p_undo then 'reset log_min_error_statement'
                           else 'set log_min_error_statement = panic' end,
                   current_database())) r
    loop
        if not v_result.success then
            raise exception 'could not change log_min_error_statement on node %: %', v_result.nodeid, v_result.result;
        end if;
    end loop;
    -- The workers: bound parameters too (the coordinator has them from 0005,
    -- and undoing them there is 0005's rollback, not this one's).
    foreach v_command in array array['log_parameter_max_length', 'log_parameter_max_length_on_error'] loop
        for v_result in
            select r.nodename, r.nodeport, r.success, r.result
              from run_command_on_workers(format(
                       'set citus.enable_ddl_propagation to off; alter database %I '
                       || case when p_undo then 'reset %s' else 'set %s = 0' end,
                       current_database(), v_command)) r
        loop
            if not v_result.success then
                raise exception 'could not change % on worker %:%: %',
                    v_command, v_result.nodename, v_result.nodeport, v_result.result;
            end if;
        end loop;
    end loop;
end
$$;

comment on procedure clinicdb.citus_protect_logs(boolean) is
    'clinicdb: on Citus, no node logs a failing statement''s text or a bound parameter (values arrive on workers as literals); run after adding a node.';
