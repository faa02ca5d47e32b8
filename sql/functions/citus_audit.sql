-- clinicdb.citus_audit_profile(): audit sealing and verification on a
-- Citus coordinator (issue #16). Called by `clinicdb migrate` after
-- clinicdb.citus_distribute(); idempotent; changes nothing on a single node
-- unless called there.
--
-- Why the sealing functions need a profile on Citus:
--   * They read clinicdb.audit_log in queries Citus cannot distribute (SQL
--     functions with parameters, window functions over the chain, lateral
--     joins to the seal tables, a whole-row digest of the shard's row type).
--     On Citus they read the trail through clinicdb._citus_audit_trail(), a
--     plain multi-shard select whose rows Citus gathers on the coordinator,
--     typed as clinicdb.audit_log; the rest of each query then runs on the
--     coordinator over those rows and the seal tables (reference tables), so
--     chains, digests and messages are exactly the single-node ones.
--   * A row is sealed only once final: below the oldest running transaction
--     id. On Citus an audit row's txid comes from the node that wrote it (the
--     clinic's worker for its tables' changes, the coordinator for reference
--     tables such as clinics), each with its own counter, so one clinic's
--     chain mixes two counters. The horizon is the lowest xmin of every node
--     (clinicdb._citus_audit_horizon()): every row below it is final on
--     whichever node wrote it, and every row written later has a txid at or
--     above its node's xmin, so it can never land inside a sealed range.
--     The cost: rows whose txid is above the slowest node's counter wait
--     until that node's transactions pass it.
--
-- The profile rewrites the bodies of the functions below in place (each
-- reference to the trail, and the sealer's horizon); the rollback of the
-- migration that brings it restores them.

-- Every audit row, read through Citus onto the coordinator as clinicdb.audit_log rows.
create or replace function clinicdb._citus_audit_trail()
returns setof clinicdb.audit_log
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
    -- A multi-shard select Citus can always plan; row level security applies as to the caller's own select.
    return query select * from clinicdb.audit_log;
end
$$;
comment on function clinicdb._citus_audit_trail() is
    'clinicdb: on Citus, the audit trail gathered on the coordinator (what sealing and verification read there).';
revoke execute on function clinicdb._citus_audit_trail() from public;
grant execute on function clinicdb._citus_audit_trail() to clinicdb_owner, clinicdb_auditor;

-- The sealing horizon on Citus: the lowest xmin of every node's fresh snapshot.
create or replace function clinicdb._citus_audit_horizon()
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_horizon bigint;
    v_failed text;
begin
    select min(r.result::bigint), string_agg(r.nodeid::text, ', ') filter (where not r.success)
      into v_horizon, v_failed
      from run_command_on_all_nodes('select pg_snapshot_xmin(pg_current_snapshot())') r;
    -- A node that does not answer could still be writing rows below any horizon: seal nothing.
    if v_failed is not null or v_horizon is null then
        raise exception 'cannot seal the audit trail: Citus node(s) % did not report their oldest running transaction',
            coalesce(v_failed, '(none)')
            using errcode = 'object_not_in_prerequisite_state';
    end if;
    -- Our own snapshot too: never above the coordinator's view.
    return least(v_horizon, pg_snapshot_xmin(pg_current_snapshot())::text::bigint);
end
$$;
comment on function clinicdb._citus_audit_horizon() is
    'clinicdb: on Citus, the txid below which every audit row is final on every node (lowest xmin of all nodes).';
revoke execute on function clinicdb._citus_audit_horizon() from public;
grant execute on function clinicdb._citus_audit_horizon() to clinicdb_owner;

-- The rewrites, shared by the profile and its undo: (function, single-node text, Citus text).
create or replace function clinicdb._citus_audit_rewrites()
returns table (fn regprocedure, single_node text, on_citus text)
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
    select f.fn::regprocedure, r.single_node, r.on_citus
      from (values ('clinicdb._audit_pending(bigint)'),
                   ('clinicdb.seal_audit(integer, integer, interval)'),
                   ('clinicdb.audit_month_present(integer)'),
                   ('clinicdb._audit_row_problems(text, clinicdb.audit_seal_entry[], clinicdb.audit_seal_entry[], '
                    'clinicdb.audit_seal_range[], bigint, bigint, integer)'),
                   ('clinicdb.verify_audit_rows(bigint, bigint, integer)'),
                   ('clinicdb.verify_audit_legacy(bigint, bigint, integer)'),
                   ('clinicdb.audit_verify_plan(integer)')) as f(fn)
     cross join (values
         -- sampling is for splitting a large trail into parts; a function scan cannot be sampled
         (1, 'from clinicdb.audit_log a tablesample system (least(100, 100 * 20000 / v_trail))',
             'from clinicdb._citus_audit_trail() a /* not sampled on Citus */'),
         (2, 'from clinicdb.audit_log ', 'from clinicdb._citus_audit_trail() '),
         (3, 'v_horizon := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;',
             'v_horizon := clinicdb._citus_audit_horizon();')) as r(k, single_node, on_citus)
     order by f.fn, r.k
$$;
comment on function clinicdb._citus_audit_rewrites() is
    'clinicdb: the text rewrites citus_audit_profile() applies to the sealing and verification functions.';
revoke execute on function clinicdb._citus_audit_rewrites() from public;

-- Apply the rewrites (p_undo: take them back). Refuses when a function no
-- longer reads the trail in a form it knows, rather than leave it half done.
create or replace procedure clinicdb.citus_audit_profile(p_undo boolean default false)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_fn regprocedure;
    v_def text;
    v_new text;
    v_rewrite record;
begin
    for v_fn in select distinct r.fn from clinicdb._citus_audit_rewrites() r loop
        v_def := pg_get_functiondef(v_fn);
        v_new := v_def;
        -- In order both ways: the first rewrite's Citus text is the only one its undo matches.
        for v_rewrite in select * from clinicdb._citus_audit_rewrites() r where r.fn = v_fn loop
            if p_undo then
                v_new := replace(v_new, v_rewrite.on_citus, v_rewrite.single_node);
            else
                v_new := replace(v_new, v_rewrite.single_node, v_rewrite.on_citus);
            end if;
        end loop;
        if not p_undo and v_new ~ '(from|join)\s+clinicdb\.audit_log\M(?!_)' then
            raise exception 'citus_audit_profile: % reads clinicdb.audit_log in a form the profile does not know', v_fn;
        end if;
        if v_new <> v_def then
            execute v_new;
        end if;
    end loop;
end
$$;
comment on procedure clinicdb.citus_audit_profile(boolean) is
    'clinicdb: on a Citus coordinator, make audit sealing and verification read the distributed trail '
    '(p_undo: restore the single-node bodies). Idempotent; docs/citus.md.';
revoke execute on procedure clinicdb.citus_audit_profile(boolean) from public;
