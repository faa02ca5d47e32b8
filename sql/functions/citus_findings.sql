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
