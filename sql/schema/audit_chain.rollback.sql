-- Undo migration 0020 (per-clinic seal chains): back to the single global
-- chain of the first format. No evidence is dropped unverified:
--   * it refuses while clinicdb.verify_audit() reports a problem: the
--     per-clinic chains would be discarded together with what they prove;
--   * the legacy chain becomes clinicdb.audit_seals again, and seal_audit()
--     (as 0004 made it, restored after this file) at once re-seals every row
--     after the cut-over into it, from the rows just verified;
--   * months pruned since the cut-over stay in clinicdb.audit_pruned_months,
--     which the first format's verification reads.
-- The audit rows themselves are not touched.
do $$
declare
    v_problem record;
begin
    select * into v_problem from clinicdb.verify_audit(1) limit 1;
    if found then
        raise exception 'rolling back 0020 would discard per-clinic seal chains that do not verify: %: %',
                        v_problem.problem, v_problem.detail
            using errcode = 'object_not_in_prerequisite_state',
                  hint = 'run clinicdb audit verify, restore what it names, then roll back';
    end if;
end
$$;

drop function if exists clinicdb.verify_audit(integer);
drop function if exists clinicdb.audit_verify_plan(integer);
drop function if exists clinicdb.verify_audit_months();
drop function if exists clinicdb.verify_audit_rounds();
drop function if exists clinicdb.verify_audit_chains(uuid, uuid);
drop function if exists clinicdb.verify_audit_legacy(bigint, bigint, integer);
drop function if exists clinicdb.verify_audit_rows(bigint, bigint, integer);
drop function if exists clinicdb._audit_row_problems(text, clinicdb.audit_seal_entry[], clinicdb.audit_seal_entry[],
                                                     clinicdb.audit_seal_range[], bigint, bigint, integer);
drop function if exists clinicdb._audit_differences(text, text);
drop function if exists clinicdb._audit_prune_legacy_month(integer);
drop function if exists clinicdb.audit_chain_heads();
drop function if exists clinicdb.audit_seal_status();
drop function if exists clinicdb.seal_audit(integer, integer, interval);
drop function if exists clinicdb._audit_pending(bigint);
drop function if exists clinicdb._audit_close_round(bigint, bigint, uuid[]);
drop function if exists clinicdb._audit_append_block(uuid, text, bigint, bigint, integer[], integer[], bytea[], bigint[],
                                                     bigint[], integer[], bytea[]);
drop function if exists clinicdb.audit_seal_floor();
drop function if exists clinicdb.audit_cutover();
drop function if exists clinicdb.audit_round_hash(bytea, bigint, bigint, bigint, uuid[], bigint[], bytea[]);
drop function if exists clinicdb.audit_chain_block_hash(bytea, uuid, bigint, text, bigint, bigint, bigint, bigint,
                                                        integer, bytea);
drop function if exists clinicdb.audit_summary_digest(integer[], integer[], bytea[]);
drop function if exists clinicdb.audit_month_present(integer);
drop function if exists clinicdb.audit_month_start(integer);
drop function if exists clinicdb.audit_month_text(integer);
drop function if exists clinicdb.audit_chain_label(uuid);
drop function if exists clinicdb.audit_chain_key(uuid);
drop type if exists clinicdb.audit_seal_range;
drop type if exists clinicdb.audit_seal_entry;
drop table if exists clinicdb.audit_seals, clinicdb.audit_seal_rounds;

drop trigger if exists audit_seals_legacy_guard on clinicdb.audit_seals_legacy;
drop trigger if exists audit_seals_legacy_guard_truncate on clinicdb.audit_seals_legacy;
alter table clinicdb.audit_seals_legacy rename constraint audit_seals_legacy_pkey to audit_seals_pkey;
alter table clinicdb.audit_seals_legacy rename constraint audit_seals_legacy_block_no_check to audit_seals_block_no_check;
alter table clinicdb.audit_seals_legacy rename constraint audit_seals_legacy_row_count_check to audit_seals_row_count_check;
alter table clinicdb.audit_seals_legacy rename constraint audit_seals_legacy_check to audit_seals_check;
alter table clinicdb.audit_seals_legacy rename to audit_seals;
