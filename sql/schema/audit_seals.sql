-- clinicdb.audit_seals: the hash chain over the audit trail (see
-- sql/functions/audit_seal.sql for how blocks are cut and checked).
--
-- Invariants:
--   * block_no runs 1, 2, 3, ... without gaps; block n's prev_hash is block
--     n-1's block_hash (block 1's is 32 zero bytes).
--   * The key ranges [lo, hi) of consecutive blocks touch: block n's lo is
--     block n-1's hi, block 1's lo is (0, 0). So every audit row with a txid
--     below the last block's hi_txid falls in exactly one block, and a row
--     added later in that range is seen as inserted.
--   * rows_digest = sha256 over (id, month, row digest) of the block's rows
--     in (txid, id) order; block_hash = sha256(prev_hash, block_no, lo, hi,
--     row_count, rows_digest). The per-row arrays exist to name a changed
--     row; once every month of a block is pruned they are dropped and
--     rows_digest alone anchors the chain.
create table if not exists clinicdb.audit_seals (
    block_no bigint primary key check (block_no > 0),
    lo_txid bigint not null,
    lo_id bigint not null,
    hi_txid bigint not null,
    hi_id bigint not null,
    row_count integer not null check (row_count > 0),
    row_ids bigint[],
    row_months integer[],
    row_digests bytea[],
    rows_digest bytea not null,
    prev_hash bytea not null,
    block_hash bytea not null,
    sealed_at timestamptz not null default now(),
    sealed_by name not null default session_user,
    check ((lo_txid, lo_id) < (hi_txid, hi_id))
);
alter table clinicdb.audit_seals owner to clinicdb_owner;
comment on table clinicdb.audit_seals is
    'clinicdb: hash-chained blocks over the audit trail (clinicdb.seal_audit / clinicdb.verify_audit).';
revoke all on clinicdb.audit_seals from public;
grant select on clinicdb.audit_seals to clinicdb_auditor;

-- Months removed by retention: their rows are expected to be gone, and
-- verification skips them while still checking the chain through them.
create table if not exists clinicdb.audit_pruned_months (
    month date primary key check (month = date_trunc('month', month)),
    partition_name text not null,
    row_count bigint not null,
    pruned_at timestamptz not null default now(),
    pruned_by name not null default session_user
);
alter table clinicdb.audit_pruned_months owner to clinicdb_owner;
comment on table clinicdb.audit_pruned_months is
    'clinicdb: audit partitions dropped by retention (clinicdb.prune_audit).';
revoke all on clinicdb.audit_pruned_months from public;
grant select on clinicdb.audit_pruned_months to clinicdb_auditor;
