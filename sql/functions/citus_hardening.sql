-- clinicdb.citus_harden(): closes two paths around the layer that Citus
-- itself opens on every node (docs/security-review.md, "Citus"). Called by
-- `clinicdb migrate` after clinicdb.citus_distribute(), as a superuser;
-- idempotent; run it again after adding a node (a new node starts with
-- Citus's own grants).
--
--   * Citus's internal metadata functions (schema citus_internal, and the
--     older pg_catalog.citus_internal_* names) are executable by PUBLIC on
--     every node. Some check nothing at all (add_tenant_schema,
--     delete_tenant_schema); the rest trust a backend whose
--     application_name reads 'citus_internal gpid=...' inside a transaction
--     that called assign_distributed_transaction_id(), both of which any
--     login can arrange. A staff login could so delete a shard's placement
--     from the metadata, which makes every query touching that shard fail
--     for every clinic. EXECUTE is revoked from PUBLIC and granted to
--     clinicdb_owner, the only non-superuser that runs DDL on the layer's
--     distributed tables (Citus may call these over its connection).
--   * A reference table has one copy per node, and Citus runs a write on it
--     as the same user on every copy. A write made on one copy directly (a
--     login connected to a worker, or run_command_on_workers /
--     run_command_on_placements from the coordinator) changes that node's
--     copy only: the copies diverge, and the audit trigger of a reference
--     table writes only on the coordinator's copy, so the change leaves no
--     audit row. No trigger or policy can tell that write from Citus's own
--     (both arrive as the user, and the markers Citus uses are settable by
--     anyone), so no application role keeps a write right on a reference
--     table: on Citus, clinicdb.clinics rows are changed by the owner or a
--     DBA (on a single node the app and staff may update their clinic's
--     row).
create or replace procedure clinicdb.citus_harden(p_undo boolean default false)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_functions text;
    v_result record;
    v_table regclass;
begin
    if not exists (select 1 from pg_extension where extname = 'citus') then
        raise exception 'the citus extension is not installed in this database'
            using errcode = 'feature_not_supported';
    end if;
    -- 1. Citus's internal functions, on every node (the coordinator included).
    --    Only those PUBLIC may execute are changed, and each is granted to the
    --    owner, so the undo knows exactly which ones it gives back.
    --    run_command_on_all_nodes commits on each node by itself, outside
    --    this transaction: a failed call leaves some nodes done; call again.
    if p_undo then
        v_functions := $f$
            select p.oid::regprocedure as fn from pg_proc p, aclexplode(p.proacl) a
             where (p.pronamespace = to_regnamespace('citus_internal') or p.proname like 'citus\_internal\_%')
               and a.grantee = 'clinicdb_owner'::regrole and a.privilege_type = 'EXECUTE'$f$;
    else
        v_functions := $f$
            select p.oid::regprocedure as fn from pg_proc p
             where (p.pronamespace = to_regnamespace('citus_internal') or p.proname like 'citus\_internal\_%')
               and has_function_privilege('public', p.oid, 'EXECUTE')$f$;
    end if;
    for v_result in
        select r.nodeid, r.success, r.result
          from run_command_on_all_nodes(format(
                   'set citus.enable_ddl_propagation to off; '
                   'do $do$ declare v_fn regprocedure; begin '
                   'for v_fn in %s loop '
                   'execute format(%L, v_fn); execute format(%L, v_fn); '
                   'end loop; end $do$',
                   v_functions,
                   case when p_undo then 'grant execute on routine %s to public'
                        else 'revoke execute on routine %s from public' end,
                   case when p_undo then 'revoke execute on routine %s from clinicdb_owner'
                        else 'grant execute on routine %s to clinicdb_owner' end)) r
    loop
        if not v_result.success then
            raise exception 'could not change the grants of Citus''s internal functions on node %: %',
                v_result.nodeid, v_result.result;
        end if;
    end loop;

    -- 2. Reference tables: read-only for every application role (Citus
    --    carries the grant to every copy).
    for v_table in
        select d.logicalrelid from pg_dist_partition d join pg_class c on c.oid = d.logicalrelid
         where d.partmethod = 'n' and d.repmodel = 't' and c.relnamespace = 'clinicdb'::regnamespace
         order by d.logicalrelid::text
    loop
        if p_undo then
            -- What sql/schema/clinics.sql grants on a single node.
            if v_table = 'clinicdb.clinics'::regclass then
                grant update on clinicdb.clinics to clinicdb_app, clinicdb_staff;
            end if;
        else
            execute format('revoke insert, update, delete, truncate on %s '
                           'from clinicdb_app, clinicdb_staff, clinicdb_readonly, clinicdb_auditor', v_table);
        end if;
    end loop;
end
$$;
comment on procedure clinicdb.citus_harden(boolean) is
    'clinicdb: on a Citus coordinator, revoke Citus''s internal functions from PUBLIC on every node and every '
    'application write right on reference tables (p_undo: give them back). Idempotent; docs/citus.md.';
revoke execute on procedure clinicdb.citus_harden(boolean) from public;
