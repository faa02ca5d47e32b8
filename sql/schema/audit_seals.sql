-- The seal tables: tamper evidence over clinicdb.audit_log. How blocks are
-- cut, checked and pruned: sql/functions/audit_seal.sql and
-- sql/functions/audit_prune.sql; the format and why it changed: docs/audit.md
-- ("Tamper evidence").
--
-- clinicdb.audit_seals: one hash chain per clinic, and one for the rows that
-- have no clinic (prune and truncate rows), keyed by the nil uuid. A chain
-- depends on nothing outside itself: no global order across clinics, so a
-- clinic's chain can live next to its rows (a Citus shard).
-- Invariants, per chain (clinic_id):
--   * block_no runs 1, 2, 3, ... without gaps; block n's prev_hash is block
--     n-1's block_hash (block 1's is 32 zero bytes).
--   * The key ranges [lo, hi) of (txid, id) touch: block n's lo is block
--     n-1's hi, block 1's lo is the cut-over key (where the legacy chain
--     ends, clinicdb.audit_cutover()). A 'rows' block holds every row of its
--     chain in its range, so a row added later below the chain's head is
--     seen as inserted. Prune records have an empty range (lo = hi).
--   * kind 'rows': sealed rows. months/month_rows/month_digests summarise
--     them per calendar month (ascending): how many, and sha256 over
--     (txid, id, row digest) of that month's rows in (txid, id) order.
--     row_ids/row_txids/row_months/row_digests list the rows themselves in
--     (txid, id) order, so verification can name a changed row; a prune
--     removes the entries of its month, and the month's summary (kept, and
--     hashed) still anchors the chain.
--   * kind 'prune': a sealed prune record: one month (months[1]) of this
--     chain's rows removed by retention; month_rows[1] rows, and
--     month_digests[1] = sha256 over (block_no, rows, month digest) of every
--     summary it covers (the chain's earlier 'rows' blocks holding that month,
--     after any earlier prune record of it). prev_hash is the hash of the last
--     block before it.
--   * kind 'prune-legacy' (only in the chain without a clinic): one month of
--     rows sealed by the legacy chain removed; month_digests[1] = sha256 over
--     (id, month, row digest) of the legacy blocks' entries of that month.
--   * rows_digest = sha256 over (month, rows, month digest) of the summary;
--     block_hash = sha256 over a version tag, kind, prev_hash, clinic,
--     block_no, lo, hi, row_count and rows_digest.
create table if not exists clinicdb.audit_seals (
    clinic_id uuid not null,
    block_no bigint not null check (block_no > 0),
    kind text not null check (kind in ('rows', 'prune', 'prune-legacy')),
    lo_txid bigint not null,
    lo_id bigint not null,
    hi_txid bigint not null,
    hi_id bigint not null,
    row_count integer not null check (row_count >= 0),
    months integer[] not null,
    month_rows integer[] not null,
    month_digests bytea[] not null,
    row_ids bigint[],
    row_txids bigint[],
    row_months integer[],
    row_digests bytea[],
    rows_digest bytea not null,
    prev_hash bytea not null,
    block_hash bytea not null,
    sealed_at timestamptz not null default now(),
    sealed_by name not null default session_user,
    primary key (clinic_id, block_no),
    check (case when kind = 'rows' then (lo_txid, lo_id) < (hi_txid, hi_id)
                else (lo_txid, lo_id) = (hi_txid, hi_id) and cardinality(months) = 1 end)
);
alter table clinicdb.audit_seals owner to clinicdb_owner;
comment on table clinicdb.audit_seals is
    'clinicdb: one hash chain of sealed blocks and prune records per clinic (nil uuid: rows without a clinic). See docs/audit.md.';
comment on column clinicdb.audit_seals.clinic_id is
    'The chain: the clinic of the rows, or 00000000-0000-0000-0000-000000000000 for rows without a clinic.';
comment on column clinicdb.audit_seals.kind is
    'rows (sealed rows), prune (a month of this chain pruned), prune-legacy (a month of legacy-sealed rows pruned).';
comment on column clinicdb.audit_seals.months is
    'Calendar months (year * 12 + month - 1) of the block''s rows, or the month a prune record removed.';
-- Verification reads the blocks whose key range overlaps a txid range.
create index if not exists audit_seals_txid_range on clinicdb.audit_seals
    using gist (int8range(lo_txid, hi_txid, '[]')) where kind = 'rows';

-- clinicdb.audit_seal_rounds: one row per sealing run (and per prune) that
-- wrote blocks, chained by prev_hash. A round names the new head (block and
-- hash) of every chain it extended, so a chain whose last blocks were deleted
-- (or a whole chain) is still missed, and a block appended outside the
-- sealing functions is seen. Round numbers continue the legacy chain's block
-- numbers, and the first round's prev_hash is the legacy chain's last hash:
-- one head (ROUND:HASH), kept outside the database, anchors everything, and
-- heads kept before the cut-over (BLOCK:HASH) still check the legacy chain.
-- scan_from_txid: every row with a lower txid was sealed when the round ended
-- (the sealer starts its search there; verification reports a row below it
-- that no block holds).
create table if not exists clinicdb.audit_seal_rounds (
    round_no bigint primary key check (round_no > 0),
    horizon_txid bigint not null,
    scan_from_txid bigint not null,
    clinic_ids uuid[] not null,
    block_nos bigint[] not null,
    block_hashes bytea[] not null,
    prev_hash bytea not null,
    round_hash bytea not null,
    sealed_at timestamptz not null default now(),
    sealed_by name not null default session_user,
    check (cardinality(clinic_ids) = cardinality(block_nos) and cardinality(block_nos) = cardinality(block_hashes))
);
alter table clinicdb.audit_seal_rounds owner to clinicdb_owner;
comment on table clinicdb.audit_seal_rounds is
    'clinicdb: the chain of sealing rounds; each names the heads of the per-clinic chains it extended. See docs/audit.md.';

-- clinicdb.audit_seals_legacy: the single global chain sealed before
-- migration 0020 (the first format), kept as it was, read-only and verified
-- as before up to its last block (the cut-over). Empty in a database first
-- sealed after 0020.
create table if not exists clinicdb.audit_seals_legacy (
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
alter table clinicdb.audit_seals_legacy owner to clinicdb_owner;
comment on table clinicdb.audit_seals_legacy is
    'clinicdb: the global seal chain of the first format, read-only since migration 0020 (its last block is the cut-over).';

-- Months removed by retention, for people to read. Verification never
-- trusts it: a month counts as pruned only when a sealed prune record says so.
create table if not exists clinicdb.audit_pruned_months (
    month date primary key check (month = date_trunc('month', month)),
    partition_name text not null,
    row_count bigint not null,
    pruned_at timestamptz not null default now(),
    pruned_by name not null default session_user
);
alter table clinicdb.audit_pruned_months owner to clinicdb_owner;
comment on table clinicdb.audit_pruned_months is
    'clinicdb: audit partitions dropped by retention (a convenience index; verify trusts only sealed prune records).';

-- Who reads what: the auditor reads every chain; nobody else reads or writes
-- them but the owner's sealing and pruning functions. Row level security is
-- forced on each (clinicdb._secure_layer_table, sql/schema/layer_tables.sql).
revoke all on clinicdb.audit_seals, clinicdb.audit_seal_rounds, clinicdb.audit_seals_legacy,
    clinicdb.audit_pruned_months from public;
grant select on clinicdb.audit_seals, clinicdb.audit_seal_rounds, clinicdb.audit_seals_legacy,
    clinicdb.audit_pruned_months to clinicdb_auditor;

-- The owner's safety net, as on the trail (clinicdb.audit_log_guard): seals
-- are only appended; changing or removing one raises outside the maintenance
-- functions (prune_audit removes a pruned month's per-row entries). The
-- legacy chain takes no new block at all.
drop trigger if exists audit_seals_guard on clinicdb.audit_seals;
create trigger audit_seals_guard before update or delete on clinicdb.audit_seals
    for each row execute function clinicdb.audit_log_guard();
drop trigger if exists audit_seals_guard_truncate on clinicdb.audit_seals;
create trigger audit_seals_guard_truncate before truncate on clinicdb.audit_seals
    for each statement execute function clinicdb.audit_log_guard();
drop trigger if exists audit_seal_rounds_guard on clinicdb.audit_seal_rounds;
create trigger audit_seal_rounds_guard before update or delete on clinicdb.audit_seal_rounds
    for each row execute function clinicdb.audit_log_guard();
drop trigger if exists audit_seal_rounds_guard_truncate on clinicdb.audit_seal_rounds;
create trigger audit_seal_rounds_guard_truncate before truncate on clinicdb.audit_seal_rounds
    for each statement execute function clinicdb.audit_log_guard();
drop trigger if exists audit_seals_legacy_guard on clinicdb.audit_seals_legacy;
create trigger audit_seals_legacy_guard before insert or update or delete on clinicdb.audit_seals_legacy
    for each row execute function clinicdb.audit_log_guard();
drop trigger if exists audit_seals_legacy_guard_truncate on clinicdb.audit_seals_legacy;
create trigger audit_seals_legacy_guard_truncate before truncate on clinicdb.audit_seals_legacy
    for each statement execute function clinicdb.audit_log_guard();
