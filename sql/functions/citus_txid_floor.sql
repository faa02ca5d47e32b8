-- clinicdb.citus_align_txids(): on a Citus coordinator, every node's
-- transaction id counter is brought above every range the audit trail's
-- seals cover (issue #16). Called by `clinicdb migrate` before
-- clinicdb.citus_distribute(), as a superuser; idempotent (nothing to do
-- when every node is above); changes nothing on a single node.
--
-- Why: an audit row's txid comes from the node that writes it, and a seal
-- round covers each chain up to the lowest oldest-running txid of every
-- node (clinicdb._citus_audit_horizon()). That keeps every later row above
-- every sealed range only while every node's counter is above the sealed
-- ranges. A node whose counter is below them breaks it: a database sealed
-- on a single node and then distributed (its chains end near the single
-- node's counter, while a new worker starts near zero), or a worker added
-- to a cluster whose trail is sealed. Its first audit rows would land
-- inside blocks sealed long before, and `clinicdb audit verify` would
-- report them as rows inserted after sealing (tampering) while `seal` could
-- never cover them (the sealer also starts at the last round's horizon).
--
-- How: the target is just above the last round's horizon and every
-- block's end (the highest txid any seal covers). Each node below it runs
-- committed empty transactions, each taking one transaction id, until its
-- counter reaches the target; in batches on every node at once through
-- run_command_on_all_nodes(), with synchronous_commit off for the batch (an
-- empty transaction has nothing to lose). Nodes already above (every node
-- of a cluster that has only ever sealed on Citus: the horizon is never
-- above any node's counter) do nothing. Cost: about one second per hundred
-- thousand transaction ids behind on a small machine; a node far behind
-- takes long and consumes that many ids towards its wraparound horizon
-- (docs/citus.md, "Migrating a single-node database").
create or replace procedure clinicdb.citus_align_txids(p_undo boolean default false)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_target bigint;
    v_lowest bigint;
    v_failed text;
    v_batch constant integer := 100000;
begin
    -- Nothing to undo: a transaction id counter only moves forward.
    if p_undo or not exists (select 1 from pg_extension where extname = 'citus') then
        return;
    end if;
    select greatest((select max(r.horizon_txid) from clinicdb.audit_seal_rounds r),
                    (select max(b.hi_txid) from clinicdb.audit_seals b),
                    (select max(l.hi_txid) from clinicdb.audit_seals_legacy l)) + 1
      into v_target;
    if v_target is null then
        return;  -- nothing sealed yet: no range a row could land in
    end if;
    loop
        select min(r.result::bigint), string_agg(r.nodeid::text || ': ' || r.result, '; ') filter (where not r.success)
          into v_lowest, v_failed
          from run_command_on_all_nodes('select txid_current()') r;
        if v_failed is not null then
            raise exception 'cannot align the nodes'' transaction ids: %', v_failed
                using errcode = 'object_not_in_prerequisite_state';
        end if;
        exit when v_lowest >= v_target;
        -- Only the nodes still below the target run the batch (the others' counters stay as they are).
        select string_agg(r.nodeid::text || ': ' || r.result, '; ') filter (where not r.success)
          into v_failed
          from run_command_on_all_nodes(format(
                    'do $do$ begin if txid_current() < %1$s then perform set_config(''synchronous_commit'', ''off'', false); '
                    'for i in 1..least(%2$s, %1$s - txid_current()) loop perform pg_current_xact_id(); commit; end loop; '
                    'execute ''reset synchronous_commit''; end if; end $do$',
                    v_target, v_batch)) r;
        if v_failed is not null then
            raise exception 'cannot align the nodes'' transaction ids: %', v_failed
                using errcode = 'object_not_in_prerequisite_state';
        end if;
    end loop;
end
$$;
comment on procedure clinicdb.citus_align_txids(boolean) is
    'clinicdb: on a Citus coordinator, bring every node''s transaction id counter above every sealed range, so no audit row lands inside one (docs/citus.md).';
revoke execute on procedure clinicdb.citus_align_txids(boolean) from public;
