-- The cut-over from the legacy seal chain to the per-clinic chains (migration
-- 0020; on a new database, the first round). Runs once: when no round
-- exists yet.
--
--   * Months pruned before the cut-over were recorded only in
--     clinicdb.audit_pruned_months, which verification no longer trusts.
--     Each such month whose rows the legacy chain sealed gets a sealed
--     'prune-legacy' record (in the no-clinic chain) over the legacy chain's
--     entries of that month, so those months stay excused. This is the one
--     time audit_pruned_months is believed: a month forged into it before the
--     upgrade is not detected.
--   * The first round records the cut-over: its number follows the legacy
--     chain's last block, its prev_hash is that block's hash, its horizon is
--     where the legacy chain ends (every per-clinic chain starts there). The
--     legacy chain's head is thereby kept in the new scheme: deleting or
--     replacing it later is reported, and a head kept before the upgrade
--     (`--expect BLOCK:HASH`) still checks the legacy chain.
do $$
declare
    v_month date;
    v_chains uuid[] := '{}';
    v_cut record;
begin
    if exists (select 1 from clinicdb.audit_seal_rounds) then
        return;
    end if;
    for v_month in select pm.month from clinicdb.audit_pruned_months pm order by pm.month loop
        if clinicdb._audit_prune_legacy_month(clinicdb.audit_month(v_month::timestamp at time zone 'UTC')) then
            v_chains := array['00000000-0000-0000-0000-000000000000'::uuid];
        end if;
    end loop;
    select * into v_cut from clinicdb.audit_cutover();
    perform clinicdb._audit_close_round(v_cut.lo_txid, v_cut.lo_txid, v_chains);
end
$$;
