-- 0020.audit-chain-per-clinic: The audit hash chain becomes one chain per clinic (plus one for rows without a clinic), sealed and
-- verified per clinic, with sealing rounds that name every chain's head; prunes are sealed into the
-- chains; verification reports every problem. The global chain is kept read-only as the legacy chain
-- up to the cut-over.
-- depends: 0014.create-clinic-refuses-bad-input
--
-- Frozen: the SQL below is what this migration runs, copied from sql/schema/audit_seals.sql,
-- sql/functions/audit_seal.sql, sql/functions/audit_verify.sql, sql/functions/audit_prune.sql,
-- sql/schema/audit_cutover.sql when it was written. migrations/migrations.lock pins it: change sql/
-- and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- migration only: the global chain becomes the legacy chain ----
-- Its blocks, grants and policies move with it; the functions whose result
-- changes are made again below.
alter table clinicdb.audit_seals rename to audit_seals_legacy;
alter table clinicdb.audit_seals_legacy rename constraint audit_seals_pkey to audit_seals_legacy_pkey;
alter table clinicdb.audit_seals_legacy rename constraint audit_seals_block_no_check to audit_seals_legacy_block_no_check;
alter table clinicdb.audit_seals_legacy rename constraint audit_seals_row_count_check to audit_seals_legacy_row_count_check;
alter table clinicdb.audit_seals_legacy rename constraint audit_seals_check to audit_seals_legacy_check;
drop function clinicdb.seal_audit(integer);
drop function clinicdb.audit_seal_status();
drop function clinicdb.verify_audit(bigint, bigint);
-- ---- sql/schema/audit_seals.sql ----
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
-- ---- sql/functions/audit_seal.sql ----
-- Tamper evidence for the audit trail: one hash chain per clinic.
--
-- clinicdb.seal_audit() is the sealing job (schedule it every few minutes);
-- clinicdb.verify_audit() (sql/functions/audit_verify.sql) recomputes every
-- chain and row and reports every problem; clinicdb.prune_audit()
-- (sql/functions/audit_prune.sql) seals what it removes. The tables and
-- their invariants: sql/schema/audit_seals.sql.
--
-- How blocks are cut without a lock in the write path:
--   Writers never touch the seal tables and take no lock for sealing. A row
--   is only sealed once no transaction can still add a row before it: the
--   sealer reads the oldest running transaction id (the xmin of its
--   snapshot); every row with txid below it is final (committed, or never
--   visible), while every running transaction has txid >= it (txid is the
--   top-level id). Sealers serialize among themselves with an advisory lock.
--
-- One chain per clinic (the rows without a clinic have their own, keyed by
-- the nil uuid): a chain's blocks depend only on its own rows and its own
-- previous block, never on an order across clinics, so each chain can be
-- sealed and verified where its clinic's rows live (a Citus shard). A round
-- seals, per chain, the rows with key (txid, id) from the chain's last hi up
-- to (xmin, 0), in blocks of block_rows; consecutive ranges of a chain
-- touch, so a row later added below a chain's head lands inside a block and
-- is caught.
--
-- Not every chain every round: a chain is sealed once it holds min_rows
-- final rows, or once its oldest unsealed row is max_wait old (defaults 1000
-- rows, 1 hour). Many quiet clinics then make one block an hour each instead
-- of one tiny block per run; a busy clinic is sealed every run. Rows wait at
-- most max_wait (plus the schedule's interval) for their evidence.
--
-- Each round that wrote blocks leaves a round record (audit_seal_rounds)
-- naming the new head of every chain it extended, chained to the previous
-- round: deleting a chain's last blocks, or appending one outside these
-- functions, is then seen, and one round head kept outside the database
-- anchors every chain. The sealer starts its search at the last round's
-- scan_from_txid (every row below it was sealed), so a round reads only the
-- rows written since the oldest pending one, not the whole trail.
--
-- What this cannot catch from inside the database: someone who can write
-- the seal tables (owner, superuser) rewriting chains and rounds from some
-- point on. Copy the round head that `clinicdb audit seal` prints to
-- somewhere they cannot write, and check it with `clinicdb audit verify
-- --expect ROUND:HASH`. Rows not sealed yet are not covered.

-- The canonical digest of one audit row. Change it only together with a
-- migration that re-seals: every stored block depends on it.
create or replace function clinicdb.audit_row_digest(p_row clinicdb.audit_log)
returns bytea
language sql
stable
parallel safe
as $$
    select pg_catalog.sha256(pg_catalog.textsend(pg_catalog.jsonb_build_array(
        p_row.id, p_row.txid, extract(epoch from p_row.logged_at), extract(epoch from p_row.statement_at),
        p_row.clinic_id, p_row.table_name, p_row.row_id, p_row.action, p_row.old_values, p_row.new_values,
        p_row.purpose, p_row.app_user, p_row.request_id, p_row.session_role, p_row.acting_role,
        p_row.client_addr, p_row.application_name)::text))
$$;
comment on function clinicdb.audit_row_digest(clinicdb.audit_log) is
    'clinicdb: SHA-256 of an audit row''s columns in a canonical, setting-independent text form (what seals commit to).';
revoke execute on function clinicdb.audit_row_digest(clinicdb.audit_log) from public;
grant execute on function clinicdb.audit_row_digest(clinicdb.audit_log) to clinicdb_owner, clinicdb_auditor;

-- The block hash of the legacy chain (audit_seals_legacy): kept unchanged so
-- that chain still verifies.
create or replace function clinicdb.audit_block_hash(
    p_prev bytea, p_block_no bigint, p_lo_txid bigint, p_lo_id bigint, p_hi_txid bigint, p_hi_id bigint,
    p_row_count integer, p_rows_digest bytea)
returns bytea
language sql
immutable
parallel safe
as $$
    select pg_catalog.sha256(p_prev || pg_catalog.int8send(p_block_no) || pg_catalog.int8send(p_lo_txid)
                             || pg_catalog.int8send(p_lo_id) || pg_catalog.int8send(p_hi_txid)
                             || pg_catalog.int8send(p_hi_id) || pg_catalog.int4send(p_row_count) || p_rows_digest)
$$;
comment on function clinicdb.audit_block_hash(bytea, bigint, bigint, bigint, bigint, bigint, integer, bytea) is
    'clinicdb: the hash of one block of the legacy (pre-0020) seal chain, chaining it to the previous one.';
grant execute on function clinicdb.audit_block_hash(bytea, bigint, bigint, bigint, bigint, bigint, integer, bytea)
    to clinicdb_owner, clinicdb_auditor;

-- The chain an audit row belongs to: its clinic, or the nil uuid.
create or replace function clinicdb.audit_chain_key(p_clinic uuid)
returns uuid
language sql
immutable
parallel safe
return coalesce(p_clinic, '00000000-0000-0000-0000-000000000000'::uuid);
comment on function clinicdb.audit_chain_key(uuid) is
    'clinicdb: the seal chain of an audit row: its clinic, or the nil uuid for rows without a clinic.';
grant execute on function clinicdb.audit_chain_key(uuid) to clinicdb_owner, clinicdb_auditor;

-- How messages name a chain.
create or replace function clinicdb.audit_chain_label(p_chain uuid)
returns text
language sql
immutable
parallel safe
return case when p_chain = '00000000-0000-0000-0000-000000000000'::uuid then 'the no-clinic chain'
            else 'clinic ' || p_chain::text end;
comment on function clinicdb.audit_chain_label(uuid) is
    'clinicdb: a seal chain''s name in messages ("clinic <uuid>", or "the no-clinic chain").';
grant execute on function clinicdb.audit_chain_label(uuid) to clinicdb_owner, clinicdb_auditor;

-- A month number (clinicdb.audit_month) as "2026-03 (clinicdb.audit_log_y2026m03)".
create or replace function clinicdb.audit_month_text(p_month integer)
returns text
language sql
immutable
parallel safe
return lpad((p_month / 12)::text, 4, '0') || '-' || lpad((p_month % 12 + 1)::text, 2, '0')
       || ' (clinicdb.audit_log_y' || lpad((p_month / 12)::text, 4, '0') || 'm'
       || lpad((p_month % 12 + 1)::text, 2, '0') || ')';
comment on function clinicdb.audit_month_text(integer) is
    'clinicdb: a month of the audit trail and its partition, for messages.';
grant execute on function clinicdb.audit_month_text(integer) to clinicdb_owner, clinicdb_auditor;

-- The first instant (UTC) of a month number.
create or replace function clinicdb.audit_month_start(p_month integer)
returns timestamptz
language sql
stable
parallel safe
return make_timestamptz(p_month / 12, p_month % 12 + 1, 1, 0, 0, 0, 'UTC');
comment on function clinicdb.audit_month_start(integer) is
    'clinicdb: the first instant (UTC) of a month number (clinicdb.audit_month).';
grant execute on function clinicdb.audit_month_start(integer) to clinicdb_owner, clinicdb_auditor;

-- Whether any row of a month is left in the trail (its partition, or the
-- default partition).
create or replace function clinicdb.audit_month_present(p_month integer)
returns boolean
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select exists (select 1 from clinicdb.audit_log a
                    where a.logged_at >= clinicdb.audit_month_start(p_month)
                      and a.logged_at < clinicdb.audit_month_start(p_month + 1))
$$;
comment on function clinicdb.audit_month_present(integer) is
    'clinicdb: whether the audit trail still holds any row of a month.';
revoke execute on function clinicdb.audit_month_present(integer) from public;
grant execute on function clinicdb.audit_month_present(integer) to clinicdb_owner, clinicdb_auditor;

-- sha256 over a block's month summary: (month, rows, month digest) each.
create or replace function clinicdb.audit_summary_digest(p_months integer[], p_month_rows integer[],
                                                         p_month_digests bytea[])
returns bytea
language sql
immutable
parallel safe
as $$
    select pg_catalog.sha256(coalesce(pg_catalog.string_agg(pg_catalog.int4send(u.month) || pg_catalog.int4send(u.n)
                                                            || u.d, ''::bytea order by u.ord), ''::bytea))
      from unnest(p_months, p_month_rows, p_month_digests) with ordinality as u(month, n, d, ord)
$$;
comment on function clinicdb.audit_summary_digest(integer[], integer[], bytea[]) is
    'clinicdb: the rows_digest of a seal block: SHA-256 over its per-month (month, rows, digest) summary.';
grant execute on function clinicdb.audit_summary_digest(integer[], integer[], bytea[]) to clinicdb_owner, clinicdb_auditor;

-- The hash of one block of a per-clinic chain. The tag keeps it apart from
-- the legacy format; the kind and the clinic are hashed, so a block cannot be
-- moved to another chain or turned into a prune record.
create or replace function clinicdb.audit_chain_block_hash(
    p_prev bytea, p_clinic uuid, p_block_no bigint, p_kind text, p_lo_txid bigint, p_lo_id bigint,
    p_hi_txid bigint, p_hi_id bigint, p_row_count integer, p_rows_digest bytea)
returns bytea
language sql
immutable
parallel safe
as $$
    select pg_catalog.sha256('clinicdb-seal-v2'::bytea
                             || case p_kind when 'rows' then '\x01'::bytea when 'prune' then '\x02'::bytea
                                            when 'prune-legacy' then '\x03'::bytea end
                             || p_prev || pg_catalog.uuid_send(p_clinic) || pg_catalog.int8send(p_block_no)
                             || pg_catalog.int8send(p_lo_txid) || pg_catalog.int8send(p_lo_id)
                             || pg_catalog.int8send(p_hi_txid) || pg_catalog.int8send(p_hi_id)
                             || pg_catalog.int4send(p_row_count) || p_rows_digest)
$$;
comment on function clinicdb.audit_chain_block_hash(bytea, uuid, bigint, text, bigint, bigint, bigint, bigint, integer, bytea) is
    'clinicdb: the hash of one block of a per-clinic seal chain, chaining it to the previous one.';
grant execute on function clinicdb.audit_chain_block_hash(bytea, uuid, bigint, text, bigint, bigint, bigint, bigint, integer, bytea)
    to clinicdb_owner, clinicdb_auditor;

-- The hash of one sealing round.
create or replace function clinicdb.audit_round_hash(
    p_prev bytea, p_round_no bigint, p_horizon bigint, p_scan_from bigint, p_clinic_ids uuid[],
    p_block_nos bigint[], p_block_hashes bytea[])
returns bytea
language sql
immutable
parallel safe
as $$
    select pg_catalog.sha256('clinicdb-round-v2'::bytea || p_prev || pg_catalog.int8send(p_round_no)
                             || pg_catalog.int8send(p_horizon) || pg_catalog.int8send(p_scan_from)
                             || coalesce((select pg_catalog.string_agg(pg_catalog.uuid_send(u.c)
                                                                       || pg_catalog.int8send(u.b) || u.h,
                                                                       ''::bytea order by u.ord)
                                            from unnest(p_clinic_ids, p_block_nos, p_block_hashes)
                                                 with ordinality as u(c, b, h, ord)), ''::bytea))
$$;
comment on function clinicdb.audit_round_hash(bytea, bigint, bigint, bigint, uuid[], bigint[], bytea[]) is
    'clinicdb: the hash of one sealing round (the chain heads it names), chaining it to the previous round.';
grant execute on function clinicdb.audit_round_hash(bytea, bigint, bigint, bigint, uuid[], bigint[], bytea[])
    to clinicdb_owner, clinicdb_auditor;

-- Where the per-clinic chains begin: the key (txid, id) where the legacy
-- chain ends, its last block and hash. Recorded by the first round (the
-- cut-over, migration 0020), whose number follows the legacy chain's last
-- block; before any round, read from the legacy chain itself.
create or replace function clinicdb.audit_cutover(
    out legacy_block bigint, out legacy_hash bytea, out lo_txid bigint, out lo_id bigint)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(r.round_no - 1, l.block_no, 0),
           coalesce(r.prev_hash, l.block_hash, decode(repeat('00', 32), 'hex')),
           coalesce(r.horizon_txid, l.hi_txid, 0),
           case when r.round_no is null then coalesce(l.hi_id, 0) else 0 end
      from (select 1) as one
      left join lateral (select r.round_no, r.prev_hash, r.horizon_txid from clinicdb.audit_seal_rounds r
                          order by r.round_no limit 1) r on true
      left join lateral (select l.block_no, l.block_hash, l.hi_txid, l.hi_id from clinicdb.audit_seals_legacy l
                          order by l.block_no desc limit 1) l on true
$$;
comment on function clinicdb.audit_cutover() is
    'clinicdb: where the per-clinic seal chains begin: the legacy chain''s last block and hash, and its end key.';
revoke execute on function clinicdb.audit_cutover() from public;
grant execute on function clinicdb.audit_cutover() to clinicdb_owner, clinicdb_auditor;

-- Every row with a txid below this was sealed when the last round ended.
create or replace function clinicdb.audit_seal_floor()
returns bigint
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select coalesce((select r.scan_from_txid from clinicdb.audit_seal_rounds r order by r.round_no desc limit 1),
                    (select c.lo_txid from clinicdb.audit_cutover() c))
$$;
comment on function clinicdb.audit_seal_floor() is
    'clinicdb: the txid below which every audit row was sealed at the last sealing round.';
revoke execute on function clinicdb.audit_seal_floor() from public;
grant execute on function clinicdb.audit_seal_floor() to clinicdb_owner, clinicdb_auditor;

-- Append one block to a chain: number, range start and prev_hash come from
-- the chain's head (or the cut-over for a new chain). A prune record's range
-- is empty (it starts and ends at the head's hi). For seal_audit,
-- prune_audit and the cut-over only.
create or replace function clinicdb._audit_append_block(
    p_clinic uuid, p_kind text, p_hi_txid bigint, p_hi_id bigint,
    p_months integer[], p_month_rows integer[], p_month_digests bytea[],
    p_row_ids bigint[] default null, p_row_txids bigint[] default null, p_row_months integer[] default null,
    p_row_digests bytea[] default null,
    out block_no bigint, out block_hash bytea)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_head record;
    v_cut record;
    v_lo_txid bigint;
    v_lo_id bigint;
    v_prev bytea;
    v_digest bytea;
    v_count integer;
begin
    select s.block_no, s.hi_txid, s.hi_id, s.block_hash into v_head
      from clinicdb.audit_seals s where s.clinic_id = p_clinic order by s.block_no desc limit 1;
    if found then
        block_no := v_head.block_no + 1;
        v_lo_txid := v_head.hi_txid;
        v_lo_id := v_head.hi_id;
        v_prev := v_head.block_hash;
    else
        select * into v_cut from clinicdb.audit_cutover();
        block_no := 1;
        v_lo_txid := v_cut.lo_txid;
        v_lo_id := v_cut.lo_id;
        v_prev := decode(repeat('00', 32), 'hex');
    end if;
    if p_kind <> 'rows' then
        p_hi_txid := v_lo_txid;
        p_hi_id := v_lo_id;
    end if;
    v_digest := clinicdb.audit_summary_digest(p_months, p_month_rows, p_month_digests);
    v_count := (select coalesce(sum(n), 0) from unnest(p_month_rows) as n)::integer;
    block_hash := clinicdb.audit_chain_block_hash(v_prev, p_clinic, block_no, p_kind, v_lo_txid, v_lo_id,
                                                  p_hi_txid, p_hi_id, v_count, v_digest);
    insert into clinicdb.audit_seals (clinic_id, block_no, kind, lo_txid, lo_id, hi_txid, hi_id, row_count, months,
                                      month_rows, month_digests, row_ids, row_txids, row_months, row_digests,
                                      rows_digest, prev_hash, block_hash)
    values (p_clinic, block_no, p_kind, v_lo_txid, v_lo_id, p_hi_txid, p_hi_id, v_count, p_months,
            p_month_rows, p_month_digests, p_row_ids, p_row_txids, p_row_months, p_row_digests,
            v_digest, v_prev, block_hash);
end
$$;
comment on function clinicdb._audit_append_block(uuid, text, bigint, bigint, integer[], integer[], bytea[], bigint[],
                                                  bigint[], integer[], bytea[]) is
    'clinicdb: append one block (rows or a prune record) to a clinic''s seal chain. Internal to sealing and pruning.';
revoke execute on function clinicdb._audit_append_block(uuid, text, bigint, bigint, integer[], integer[], bytea[],
                                                        bigint[], bigint[], integer[], bytea[]) from public;

-- Close a round: record the current head of each chain it extended. A
-- horizon or scan_from of NULL keeps the previous round's (a prune).
create or replace function clinicdb._audit_close_round(p_horizon bigint, p_scan_from bigint, p_clinics uuid[],
                                                       out round_no bigint, out round_hash bytea)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_last record;
    v_cut record;
    v_prev bytea;
    v_ids uuid[];
    v_nos bigint[];
    v_hashes bytea[];
begin
    select r.round_no, r.round_hash, r.horizon_txid, r.scan_from_txid into v_last
      from clinicdb.audit_seal_rounds r order by r.round_no desc limit 1;
    if found then
        round_no := v_last.round_no + 1;
        v_prev := v_last.round_hash;
        p_horizon := coalesce(p_horizon, v_last.horizon_txid);
        p_scan_from := coalesce(p_scan_from, v_last.scan_from_txid);
    else
        select * into v_cut from clinicdb.audit_cutover();
        round_no := v_cut.legacy_block + 1;
        v_prev := v_cut.legacy_hash;
        p_horizon := coalesce(p_horizon, v_cut.lo_txid);
        p_scan_from := coalesce(p_scan_from, v_cut.lo_txid);
    end if;
    select coalesce(array_agg(h.clinic_id order by h.clinic_id), '{}'),
           coalesce(array_agg(h.block_no order by h.clinic_id), '{}'),
           coalesce(array_agg(h.block_hash order by h.clinic_id), '{}')
      into v_ids, v_nos, v_hashes
      from (select distinct c from unnest(p_clinics) as c) q
     cross join lateral (select s.clinic_id, s.block_no, s.block_hash from clinicdb.audit_seals s
                          where s.clinic_id = q.c order by s.block_no desc limit 1) h;
    round_hash := clinicdb.audit_round_hash(v_prev, round_no, p_horizon, p_scan_from, v_ids, v_nos, v_hashes);
    insert into clinicdb.audit_seal_rounds (round_no, horizon_txid, scan_from_txid, clinic_ids, block_nos,
                                            block_hashes, prev_hash, round_hash)
    values (round_no, p_horizon, p_scan_from, v_ids, v_nos, v_hashes, v_prev, round_hash);
end
$$;
comment on function clinicdb._audit_close_round(bigint, bigint, uuid[]) is
    'clinicdb: record a sealing round naming the heads of the chains it extended. Internal to sealing and pruning.';
revoke execute on function clinicdb._audit_close_round(bigint, bigint, uuid[]) from public;

-- Per chain, the rows not sealed yet below a horizon (all of them when
-- NULL): how many, the oldest, the first txid.
create or replace function clinicdb._audit_pending(p_horizon bigint)
returns table (chain uuid, pending bigint, oldest_at timestamptz, first_txid bigint)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    with cut as (
        select c.lo_txid, c.lo_id from clinicdb.audit_cutover() c
    ), recent as (
        select clinicdb.audit_chain_key(a.clinic_id) as chain, a.id, a.txid, a.logged_at
          from clinicdb.audit_log a
         where a.txid >= (select clinicdb.audit_seal_floor()) and (p_horizon is null or a.txid < p_horizon)
    ), heads as (
        select c.chain, h.hi_txid, h.hi_id
          from (select distinct r.chain from recent r) c
          left join lateral (select s.hi_txid, s.hi_id from clinicdb.audit_seals s
                              where s.clinic_id = c.chain order by s.block_no desc limit 1) h on true
    )
    select r.chain, count(*), min(r.logged_at), min(r.txid)
      from recent r
      join heads h on h.chain = r.chain
     cross join cut
     where (r.txid, r.id) >= (coalesce(h.hi_txid, cut.lo_txid), coalesce(h.hi_id, cut.lo_id))
     group by r.chain
$$;
comment on function clinicdb._audit_pending(bigint) is
    'clinicdb: per seal chain, the audit rows not sealed yet below a txid horizon (all with NULL).';
revoke execute on function clinicdb._audit_pending(bigint) from public;
grant execute on function clinicdb._audit_pending(bigint) to clinicdb_owner, clinicdb_auditor;

create or replace function clinicdb.seal_audit(p_block_rows integer default 10000,
                                               p_min_rows integer default 1000,
                                               p_max_wait interval default interval '1 hour')
returns table (clinic_id uuid, block_no bigint, row_count integer, block_hash text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
set jit = off
as $$
#variable_conflict use_column
declare
    v_horizon bigint;
    v_floor bigint;
    v_next_floor bigint;
    v_cut record;
    v_chains uuid[];
    v_chunk record;
    v_block record;
begin
    if p_block_rows is null or p_block_rows < 1 or p_block_rows > 1000000 then
        raise exception 'block_rows must be between 1 and 1000000, not %', coalesce(p_block_rows::text, 'NULL')
            using errcode = 'invalid_parameter_value';
    end if;
    if p_min_rows is null or p_min_rows < 1 then
        raise exception 'min_rows must be 1 or more, not %', coalesce(p_min_rows::text, 'NULL')
            using errcode = 'invalid_parameter_value';
    end if;
    if p_max_wait is null or p_max_wait < interval '0' then
        raise exception 'max_wait must be an interval of 0 or more, not %', coalesce(p_max_wait::text, 'NULL')
            using errcode = 'invalid_parameter_value';
    end if;
    -- One sealer at a time; writers never take this lock.
    perform pg_advisory_xact_lock(hashtext('clinicdb.seal_audit'));
    v_horizon := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    select * into v_cut from clinicdb.audit_cutover();
    v_floor := clinicdb.audit_seal_floor();

    -- The chains due: enough final rows, or an old enough one. The next
    -- round starts its search at the first row left waiting.
    select coalesce(array_agg(p.chain) filter (where p.pending >= p_min_rows or p.oldest_at <= now() - p_max_wait),
                    '{}'),
           min(p.first_txid) filter (where not (p.pending >= p_min_rows or p.oldest_at <= now() - p_max_wait))
      into v_chains, v_next_floor
      from clinicdb._audit_pending(v_horizon) p;
    if cardinality(v_chains) = 0 then
        return;
    end if;
    v_next_floor := least(v_horizon, v_next_floor);

    for v_chunk in
        with heads as (
            select q.chain, h.hi_txid, h.hi_id
              from unnest(v_chains) as q(chain)
              left join lateral (select s.hi_txid, s.hi_id from clinicdb.audit_seals s
                                  where s.clinic_id = q.chain order by s.block_no desc limit 1) h on true
        ), sealed as (
            select h.chain, a.id, a.txid, clinicdb.audit_month(a.logged_at) as month,
                   clinicdb.audit_row_digest(a) as digest,
                   (row_number() over (partition by h.chain order by a.txid, a.id) - 1) / p_block_rows as chunk
              from clinicdb.audit_log a
              join heads h on h.chain = clinicdb.audit_chain_key(a.clinic_id)
             where a.txid >= v_floor and a.txid < v_horizon
               and (a.txid, a.id) >= (coalesce(h.hi_txid, v_cut.lo_txid), coalesce(h.hi_id, v_cut.lo_id))
        ), by_month as (
            select r.chain, r.chunk, r.month, count(*)::integer as n,
                   sha256(string_agg(int8send(r.txid) || int8send(r.id) || r.digest, ''::bytea
                                     order by r.txid, r.id)) as digest
              from sealed r
             group by r.chain, r.chunk, r.month
        ), summaries as (
            select m.chain, m.chunk, array_agg(m.month order by m.month) as months,
                   array_agg(m.n order by m.month) as month_rows, array_agg(m.digest order by m.month) as month_digests
              from by_month m
             group by m.chain, m.chunk
        ), listed as (
            -- one sort, aggregated in its order (the group key is its
            -- prefix; the CTE scan is never parallel), not one per array
            select r.chain, r.chunk, array_agg(r.id) as ids, array_agg(r.txid) as txids,
                   array_agg(r.month) as row_months, array_agg(r.digest) as digests
              from (select * from sealed s order by s.chain, s.chunk, s.txid, s.id) r
             group by r.chain, r.chunk
        )
        select l.chain, l.chunk, l.ids, l.txids, l.row_months, l.digests, s.months, s.month_rows, s.month_digests,
               lead(l.txids[1]) over (partition by l.chain order by l.chunk) as next_txid,
               lead(l.ids[1]) over (partition by l.chain order by l.chunk) as next_id
          from listed l
          join summaries s on s.chain = l.chain and s.chunk = l.chunk
         order by l.chain, l.chunk
    loop
        -- A block ends where the chain's next block begins; the last at the horizon.
        select * into v_block
          from clinicdb._audit_append_block(v_chunk.chain, 'rows', coalesce(v_chunk.next_txid, v_horizon),
                                            coalesce(v_chunk.next_id, 0), v_chunk.months, v_chunk.month_rows,
                                            v_chunk.month_digests, v_chunk.ids, v_chunk.txids, v_chunk.row_months,
                                            v_chunk.digests);
        clinic_id := v_chunk.chain;
        block_no := v_block.block_no;
        row_count := cardinality(v_chunk.ids);
        block_hash := encode(v_block.block_hash, 'hex');
        return next;
    end loop;
    perform clinicdb._audit_close_round(v_horizon, v_next_floor, v_chains);
end
$$;
comment on function clinicdb.seal_audit(integer, integer, interval) is
    'clinicdb: seal the final, unsealed audit rows of every chain that has min_rows of them or one older than '
    'max_wait, into hash-chained blocks of block_rows; returns the new blocks. Schedule it.';
revoke execute on function clinicdb.seal_audit(integer, integer, interval) from public;
grant execute on function clinicdb.seal_audit(integer, integer, interval) to clinicdb_owner;

-- How much is sealed, the round head to keep elsewhere, and what waits.
create or replace function clinicdb.audit_seal_status(
    out chains bigint, out blocks bigint, out sealed_rows bigint, out head_round bigint, out head_hash text,
    out unsealed_rows bigint, out oldest_unsealed_at timestamptz, out last_sealed_at timestamptz,
    out legacy_blocks bigint, out legacy_rows bigint)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    with pending as (
        select coalesce(sum(p.pending), 0)::bigint as n, min(p.oldest_at) as oldest from clinicdb._audit_pending(null) p
    ), seals as (
        select count(distinct s.clinic_id) as chains, count(*) as blocks,
               coalesce(sum(s.row_count) filter (where s.kind = 'rows'), 0)::bigint as sealed_rows
          from clinicdb.audit_seals s
    ), legacy as (
        select count(*) as blocks, coalesce(sum(l.row_count), 0)::bigint as sealed_rows from clinicdb.audit_seals_legacy l
    )
    select seals.chains, seals.blocks, seals.sealed_rows, r.round_no, encode(r.round_hash, 'hex'), pending.n,
           pending.oldest, r.sealed_at, legacy.blocks, legacy.sealed_rows
      from seals cross join pending cross join legacy
      left join lateral (select r.round_no, r.round_hash, r.sealed_at from clinicdb.audit_seal_rounds r
                          order by r.round_no desc limit 1) r on true
$$;
comment on function clinicdb.audit_seal_status() is
    'clinicdb: seal chains, blocks and sealed rows, the round head to keep elsewhere, and the rows not sealed yet.';
revoke execute on function clinicdb.audit_seal_status() from public;
grant execute on function clinicdb.audit_seal_status() to clinicdb_owner, clinicdb_auditor;

-- The head of every chain, for anchors per clinic (--expect CLINIC:BLOCK:HASH).
create or replace function clinicdb.audit_chain_heads()
returns table (clinic_id uuid, block_no bigint, block_hash text, sealed_rows bigint, sealed_at timestamptz)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    with heads as (
        select s.clinic_id, max(s.block_no) as head,
               coalesce(sum(s.row_count) filter (where s.kind = 'rows'), 0)::bigint as n
          from clinicdb.audit_seals s group by s.clinic_id
    )
    select h.clinic_id, h.head, encode(s.block_hash, 'hex'), h.n, s.sealed_at
      from heads h join clinicdb.audit_seals s on s.clinic_id = h.clinic_id and s.block_no = h.head
     order by h.clinic_id
$$;
comment on function clinicdb.audit_chain_heads() is
    'clinicdb: the head block and hash of every seal chain, with its sealed rows.';
revoke execute on function clinicdb.audit_chain_heads() from public;
grant execute on function clinicdb.audit_chain_heads() to clinicdb_owner, clinicdb_auditor;
-- ---- sql/functions/audit_verify.sql ----
-- Verifying the seal chains (sql/functions/audit_seal.sql): every problem,
-- not only the first, each as one row naming what is wrong and what to do.
--
-- clinicdb.verify_audit() checks everything in one call. The pieces, which
-- `clinicdb audit verify` calls one range at a time for its progress bar
-- (clinicdb.audit_verify_plan() cuts the ranges):
--   * verify_audit_rounds(): the round chain, the legacy chain's head at the
--     cut-over, chain heads the rounds named (a chain whose last blocks were
--     deleted) and blocks no round names (appended outside the functions).
--   * verify_audit_months(): months whose sealed rows are all gone without
--     a sealed prune record (a TRUNCATE or DROP of a partition), by name.
--     clinicdb.audit_pruned_months is never read.
--   * verify_audit_chains(first, last): the blocks of the chains of clinics
--     first..last: numbering, links, key ranges, hashes, month summaries
--     against the per-row entries, prune records against what they cover.
--   * verify_audit_rows(from, to): the rows with txid in [from, to) against
--     what their chains sealed: altered, inserted and deleted rows.
--   * verify_audit_legacy(from, to): blocks from..to of the legacy chain
--     and their rows, as before migration 0020.
-- Each returns (scope, clinic_id, block_no, problem, audit_id, row_count,
-- detail); no rows means intact. Row-level problems are listed up to
-- p_max_rows per call, then counted ("rows altered", ... with row_count).
--
-- SECURITY INVOKER: the owner and the auditor run them (the auditor reads
-- the trail and the seal tables); stable, so a replica can verify.

do $$
begin
    if to_regtype('clinicdb.audit_seal_entry') is null then
        -- What a block committed to about one row (expected), or what the
        -- trail holds now (actual): compared by chain, id and digest.
        create type clinicdb.audit_seal_entry as (
            chain uuid, block_no bigint, id bigint, txid bigint, month integer, digest bytea);
    end if;
    if to_regtype('clinicdb.audit_seal_range') is null then
        -- The key range [lo, hi) of one block.
        create type clinicdb.audit_seal_range as (
            chain uuid, block_no bigint, lo_txid bigint, lo_id bigint, hi_txid bigint, hi_id bigint);
    end if;
end
$$;
comment on type clinicdb.audit_seal_entry is
    'clinicdb: one audit row as a seal block committed to it (expected) or as the trail holds it (actual).';
comment on type clinicdb.audit_seal_range is 'clinicdb: the (txid, id) key range of one seal block.';

-- What differs between two sets of rows, each given as a query yielding
-- (chain, block_no, id, txid, digest): the expected ones (what blocks
-- committed to) and the actual ones (the trail now). Both sides are grouped
-- by (chain, id, digest) and joined in one hashed pass, so only the rows
-- that differ come back: each expected row not found as it was (lost), each
-- actual row not expected as it is (extra), as often as the counts differ
-- (an exact copy of a sealed row is extra). Internal to verification and
-- pruning, which build the two queries from numbers and arrays they format
-- as literals. It runs them with the caller's rights (SECURITY INVOKER), so
-- it lets nobody read what they could not read with a query of their own.
create or replace function clinicdb._audit_differences(p_expected text, p_actual text,
                                                       out lost clinicdb.audit_seal_entry[],
                                                       out extra clinicdb.audit_seal_entry[])
language plpgsql
stable
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
set jit = off
-- Both sides are far larger than the planner guesses (function scans):
-- a merge join would sort every row of the trail, a hash join hashes the
-- small side (the chain heads) once.
set enable_mergejoin = off
as $$
begin
    execute format($query$
        with e as (
            select x.chain, x.id, x.digest, count(*) as n, min(x.block_no) as block_no, min(x.txid) as txid
              from (%s) x group by x.chain, x.id, x.digest
        ), a as (
            select x.chain, x.id, x.digest, count(*) as n, min(x.block_no) as block_no, min(x.txid) as txid
              from (%s) x group by x.chain, x.id, x.digest
        ), d as (
            select coalesce(e.chain, a.chain) as chain, coalesce(e.id, a.id) as id, coalesce(e.digest, a.digest) as digest,
                   coalesce(e.n, 0) as en, coalesce(a.n, 0) as an, e.block_no as e_block, e.txid as e_txid,
                   a.block_no as a_block, a.txid as a_txid
              from e full join a on a.chain = e.chain and a.id = e.id and a.digest = e.digest
             where e.n is distinct from a.n
        )
        select coalesce(array_agg(row(d.chain, d.e_block, d.id, d.e_txid, null, d.digest)::clinicdb.audit_seal_entry)
                            filter (where d.en > d.an), '{}'),
               coalesce(array_agg(row(d.chain, d.a_block, d.id, d.a_txid, null, d.digest)::clinicdb.audit_seal_entry)
                            filter (where d.an > d.en), '{}')
          from d cross join lateral generate_series(1, abs(d.en - d.an)) as copies
    $query$, p_expected, p_actual) into lost, extra;
end
$$;
comment on function clinicdb._audit_differences(text, text) is
    'clinicdb: the rows that differ between what seals committed to and the trail (two queries). Internal.';
revoke execute on function clinicdb._audit_differences(text, text) from public;
grant execute on function clinicdb._audit_differences(text, text) to clinicdb_owner, clinicdb_auditor;

-- The differences as lines: each row sealed but gone or changed, and each
-- row present but not sealed as it is, named by id. An id among both the
-- lost and the extra rows is an altered row; a second row with a sealed id
-- is inserted (the sealed one is intact). An inserted row is placed in the
-- block whose range holds it; with none, a row the caller marked as inside
-- a chain's sealed range (block_no 0) lies where a block is missing, any
-- other was found below the sealing floor ("row unsealed" both). Lists up to
-- p_max_rows, then one count per kind.
create or replace function clinicdb._audit_row_problems(
    p_scope text, p_lost clinicdb.audit_seal_entry[], p_extra clinicdb.audit_seal_entry[],
    p_blocks clinicdb.audit_seal_range[], p_from_txid bigint, p_to_txid bigint, p_max_rows integer)
returns table (scope text, clinic_id uuid, block_no bigint, problem text, audit_id bigint, row_count bigint,
               detail text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    with lost as (
        select x.*, row_number() over (partition by x.chain, x.id order by x.digest) as k from unnest(p_lost) x
    ), extra as (
        select x.*, row_number() over (partition by x.chain, x.id order by x.digest) as k from unnest(p_extra) x
    ), diff as (
        select coalesce(x.chain, l.chain) as chain, coalesce(x.id, l.id) as id, coalesce(x.txid, l.txid) as txid,
               l.block_no as sealed_in, x.block_no as marked,
               case when l.id is null then 'row inserted' when x.id is null then 'row deleted' else 'row altered' end
                   as problem
          from lost l full join extra x on x.chain = l.chain and x.id = l.id and x.k = l.k
    ), placed as (
        select d.chain, d.id, d.txid, coalesce(d.sealed_in, b.block_no) as block_no,
               case when d.problem = 'row inserted' and b.block_no is null then 'row unsealed'
                    else d.problem end as problem, d.marked
          from diff d
          left join lateral (select r.block_no from unnest(p_blocks) r
                              where d.problem = 'row inserted' and r.chain = d.chain
                                and (d.txid, d.id) >= (r.lo_txid, r.lo_id) and (d.txid, d.id) < (r.hi_txid, r.hi_id)
                              limit 1) b on true
    ), ranked as (
        select p.*, row_number() over (order by p.chain, p.id, p.problem) as k from placed p
    ), listed as (
        select r.* from ranked r where r.k <= p_max_rows
    ), about as (
        select distinct on (t.id) t.id, t.action, t.table_name, t.row_id, t.logged_at
          from clinicdb.audit_log t
         where t.txid >= p_from_txid and t.txid < p_to_txid and t.id in (select l.id from listed l)
         order by t.id, t.logged_at
    )
    select p_scope, case when p_scope = 'legacy' then null else l.chain end, l.block_no, l.problem, l.id,
           null::bigint,
           case when t.id is null then format('audit row %s', l.id)
                else format('audit row %s (%s %s %s at %s)', l.id, t.action, t.table_name, coalesce(t.row_id, '-'),
                            t.logged_at) end
           || ' ' || case
               when l.problem = 'row altered' then format('differs from what block %s of %s sealed', l.block_no, c.label)
               when l.problem = 'row deleted' then format('(sealed in block %s of %s) is missing', l.block_no, c.label)
               when l.problem = 'row inserted'
                   then format('was added inside block %s of %s after it was sealed', l.block_no, c.label)
               when l.marked = 0 then format('lies where a block of %s is missing: nothing seals it', c.label)
               else format('is in no block of %s although every row below the sealing floor was sealed: a last '
                           'block of the chain is missing, or the row was written afterwards', c.label) end
      from listed l
      left join about t on t.id = l.id
     cross join lateral (select case when p_scope = 'legacy' then 'the legacy chain'
                                     else clinicdb.audit_chain_label(l.chain) end as label) c
    union all
    select p_scope, null, null, replace(r.problem, 'row ', 'rows '), null, count(*),
           format('%s more %s row(s) not listed', count(*), replace(r.problem, 'row ', ''))
      from ranked r where r.k > p_max_rows group by r.problem
$$;
comment on function clinicdb._audit_row_problems(text, clinicdb.audit_seal_entry[], clinicdb.audit_seal_entry[],
                                                 clinicdb.audit_seal_range[], bigint, bigint, integer) is
    'clinicdb: the row-level findings of seal verification (altered, inserted, deleted, unsealed rows), as lines. '
    'Internal.';
revoke execute on function clinicdb._audit_row_problems(text, clinicdb.audit_seal_entry[], clinicdb.audit_seal_entry[],
                                                        clinicdb.audit_seal_range[], bigint, bigint, integer)
    from public;
grant execute on function clinicdb._audit_row_problems(text, clinicdb.audit_seal_entry[], clinicdb.audit_seal_entry[],
                                                       clinicdb.audit_seal_range[], bigint, bigint, integer)
    to clinicdb_owner, clinicdb_auditor;

-- The rows with txid in [p_from_txid, p_to_txid) (after the cut-over)
-- against what the blocks of their chains committed to. A row counts as
-- sealed when its key is below its chain's head, or its txid below the
-- sealing floor (every row there was sealed when the last round ended).
-- Months whose rows are all gone are left to verify_audit_months(), which
-- names them once.
create or replace function clinicdb.verify_audit_rows(p_from_txid bigint, p_to_txid bigint,
                                                      p_max_rows integer default 100)
returns table (scope text, clinic_id uuid, block_no bigint, problem text, audit_id bigint, row_count bigint,
               detail text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
set jit = off
as $$
#variable_conflict use_column
declare
    v_cut record;
    v_floor bigint := clinicdb.audit_seal_floor();
    v_blocks clinicdb.audit_seal_range[];
    v_gone integer[];
    v_found record;
begin
    select * into v_cut from clinicdb.audit_cutover();
    -- The blocks whose range overlaps, and the months whose rows are all gone.
    select coalesce(array_agg(row(s.clinic_id, s.block_no, s.lo_txid, s.lo_id, s.hi_txid, s.hi_id)
                              ::clinicdb.audit_seal_range), '{}'),
           array(select m.month
                   from (select distinct u.month from clinicdb.audit_seals s2, unnest(s2.months) as u(month)
                          where s2.kind = 'rows'
                            and int8range(s2.lo_txid, s2.hi_txid, '[]') && int8range(p_from_txid, p_to_txid)) m
                  where not clinicdb.audit_month_present(m.month))
      into v_blocks, v_gone
      from clinicdb.audit_seals s
     where s.kind = 'rows' and int8range(s.lo_txid, s.hi_txid, '[]') && int8range(p_from_txid, p_to_txid);
    select * into v_found from clinicdb._audit_differences(
        -- what the blocks committed to, minus months gone whole (verify_audit_months names them once)
        -- (a block's entries are in txid order: width_bucket's binary search finds those in the range)
        format('select s.clinic_id as chain, s.block_no, u.id, u.txid, u.digest
                  from clinicdb.audit_seals s
                 cross join lateral (select width_bucket(%s::bigint, s.row_txids) + 1 as lo,
                                            width_bucket(%s::bigint, s.row_txids) as hi) r
                 cross join lateral unnest(s.row_ids[r.lo:r.hi], s.row_txids[r.lo:r.hi], s.row_months[r.lo:r.hi],
                                           s.row_digests[r.lo:r.hi]) as u(id, txid, month, digest)
                 where s.kind = %L and int8range(s.lo_txid, s.hi_txid, %L) && int8range(%s, %s)
                   and u.month <> all (%L::integer[])',
               p_from_txid - 1, p_to_txid - 1, 'rows', '[]', p_from_txid, p_to_txid, v_gone),
        -- the rows now: sealed when below their chain's head (block_no 0) or below the floor. The heads are
        -- read in the same statement as the blocks, so a round committing meanwhile is seen by both or neither.
        format('select h.chain, case when (a.txid, a.id) < (h.hi_txid, h.hi_id) then 0 end as block_no, a.id, a.txid,
                       clinicdb.audit_row_digest(a) as digest
                  from clinicdb.audit_log a
                  join (select c.chain, s.hi_txid, s.hi_id
                          from (select distinct clinicdb.audit_chain_key(a2.clinic_id) as chain
                                  from clinicdb.audit_log a2 where a2.txid >= %s and a2.txid < %s) c
                          left join lateral (select s.hi_txid, s.hi_id from clinicdb.audit_seals s
                                              where s.clinic_id = c.chain order by s.block_no desc limit 1) s on true) h
                    on h.chain = clinicdb.audit_chain_key(a.clinic_id)
                 where a.txid >= %s and a.txid < %s and (a.txid, a.id) >= (%s, %s)
                   and ((a.txid, a.id) < (h.hi_txid, h.hi_id) or a.txid < %s)',
               p_from_txid, p_to_txid, p_from_txid, p_to_txid, v_cut.lo_txid, v_cut.lo_id, v_floor));
    return query select * from clinicdb._audit_row_problems('rows', v_found.lost, v_found.extra, v_blocks, p_from_txid,
                                                            p_to_txid, p_max_rows);
end
$$;
comment on function clinicdb.verify_audit_rows(bigint, bigint, integer) is
    'clinicdb: audit rows with txid in [from, to) against what their seal chains committed to; every difference.';
revoke execute on function clinicdb.verify_audit_rows(bigint, bigint, integer) from public;
grant execute on function clinicdb.verify_audit_rows(bigint, bigint, integer) to clinicdb_owner, clinicdb_auditor;

-- Blocks p_from..p_to of the legacy chain (the global chain of the first
-- format, read-only since the cut-over) and the rows in their key ranges.
-- Months pruned since the cut-over are excused by their sealed
-- 'prune-legacy' records (checked by verify_audit_chains).
create or replace function clinicdb.verify_audit_legacy(p_from bigint default 1, p_to bigint default null,
                                                        p_max_rows integer default 100)
returns table (scope text, clinic_id uuid, block_no bigint, problem text, audit_id bigint, row_count bigint,
               detail text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
set jit = off
as $$
#variable_conflict use_column
declare
    v_nil constant uuid := '00000000-0000-0000-0000-000000000000';
    v_lo record;
    v_hi record;
    v_pruned integer[];
    v_gone integer[];
    v_blocks clinicdb.audit_seal_range[];
    v_found record;
begin
    p_to := coalesce(p_to, (select max(l.block_no) from clinicdb.audit_seals_legacy l));
    if p_to is null or p_from > p_to then
        return;
    end if;

    -- 1. The chain: numbers, links, key ranges, digests, hashes.
    return query
    with w as (
        select l.block_no, l.lo_txid, l.lo_id, l.hi_txid, l.hi_id, l.row_count, l.row_ids, l.row_months,
               l.row_digests, l.rows_digest, l.prev_hash, l.block_hash,
               lag(l.block_no) over x as p_no, lag(l.block_hash) over x as p_hash,
               lag(l.hi_txid) over x as p_hi_txid, lag(l.hi_id) over x as p_hi_id
          from (select * from clinicdb.audit_seals_legacy l1 where l1.block_no between p_from and p_to
                union all
                -- the block before the range, wherever it is, so a gap ending in the range is named whole
                (select * from clinicdb.audit_seals_legacy l2 where l2.block_no < p_from
                  order by l2.block_no desc limit 1)) l
        window x as (order by l.block_no)
    )
    select 'legacy', null::uuid, coalesce(w.p_no, 0) + 1, 'block missing', null::bigint,
           w.block_no - coalesce(w.p_no, 0) - 1,
           case when w.block_no - coalesce(w.p_no, 0) = 2
                then format('block %s of the legacy chain is missing: its hash was %s (block %s''s prev_hash). '
                            'Restore it from a backup of clinicdb.audit_seals_legacy; until then the rows it sealed '
                            'are not protected', w.block_no - 1, encode(w.prev_hash, 'hex'), w.block_no)
                else format('blocks %s-%s of the legacy chain are missing (block %s''s hash was %s, block %s''s '
                            'prev_hash). Restore them from a backup of clinicdb.audit_seals_legacy; until then the '
                            'rows they sealed are not protected', coalesce(w.p_no, 0) + 1, w.block_no - 1,
                            w.block_no - 1, encode(w.prev_hash, 'hex'), w.block_no) end
      from w
     where w.block_no >= p_from and w.block_no > coalesce(w.p_no, 0) + 1
    union all
    select 'legacy', null, w.block_no, 'chain broken', null, null,
           format('block %s of the legacy chain does not link to block %s: one of them was replaced',
                  w.block_no, w.block_no - 1)
      from w
     where w.block_no >= p_from
       and ((w.p_no = w.block_no - 1 and w.prev_hash <> w.p_hash)
            or (w.block_no = 1 and w.prev_hash <> decode(repeat('00', 32), 'hex')))
    union all
    select 'legacy', null, w.block_no, 'range broken', null, null,
           format('block %s of the legacy chain does not start where block %s ends: rows between them are in no block',
                  w.block_no, w.block_no - 1)
      from w
     where w.block_no >= p_from
       and ((w.p_no = w.block_no - 1 and (w.lo_txid, w.lo_id) <> (w.p_hi_txid, w.p_hi_id))
            or (w.block_no = 1 and (w.lo_txid, w.lo_id) <> (0, 0)))
    union all
    select 'legacy', null, w.block_no, 'block altered', null, null,
           format('block %s of the legacy chain: %s', w.block_no,
                  concat_ws('; ',
                            case when w.row_ids is not null and w.rows_digest is distinct from (
                                     select sha256(string_agg(int8send(u.id) || int4send(u.month) || u.digest, ''::bytea
                                                              order by u.ord))
                                       from unnest(w.row_ids, w.row_months, w.row_digests)
                                            with ordinality as u(id, month, digest, ord))
                                 then 'the stored row digests do not match rows_digest' end,
                            case when w.block_hash <> clinicdb.audit_block_hash(w.prev_hash, w.block_no, w.lo_txid,
                                                                               w.lo_id, w.hi_txid, w.hi_id,
                                                                               w.row_count, w.rows_digest)
                                 then 'block_hash does not match its contents' end))
      from w
     where w.block_no >= p_from
       and ((w.row_ids is not null and w.rows_digest is distinct from (
                select sha256(string_agg(int8send(u.id) || int4send(u.month) || u.digest, ''::bytea order by u.ord))
                  from unnest(w.row_ids, w.row_months, w.row_digests) with ordinality as u(id, month, digest, ord)))
            or w.block_hash <> clinicdb.audit_block_hash(w.prev_hash, w.block_no, w.lo_txid, w.lo_id, w.hi_txid,
                                                         w.hi_id, w.row_count, w.rows_digest));

    -- 2. The rows in the blocks' key ranges.
    select l.lo_txid, l.lo_id into v_lo from clinicdb.audit_seals_legacy l
     where l.block_no between p_from and p_to order by l.block_no limit 1;
    select l.hi_txid, l.hi_id into v_hi from clinicdb.audit_seals_legacy l
     where l.block_no between p_from and p_to order by l.block_no desc limit 1;
    if v_lo.lo_txid is null then
        return;
    end if;
    v_pruned := array(select s.months[1] from clinicdb.audit_seals s
                       where s.clinic_id = v_nil and s.kind = 'prune-legacy');
    select coalesce(array_agg(row(v_nil, l.block_no, l.lo_txid, l.lo_id, l.hi_txid, l.hi_id)
                              ::clinicdb.audit_seal_range), '{}')
      into v_blocks
      from clinicdb.audit_seals_legacy l where l.block_no between p_from and p_to;
    v_gone := array(select m.month
                      from (select distinct u.month from clinicdb.audit_seals_legacy l, unnest(l.row_months) as u(month)
                             where l.block_no between p_from and p_to) m
                     where not clinicdb.audit_month_present(m.month));
    select * into v_found from clinicdb._audit_differences(
        format('select %L::uuid as chain, l.block_no, u.id, null::bigint as txid, u.digest
                  from clinicdb.audit_seals_legacy l
                 cross join lateral unnest(l.row_ids, l.row_months, l.row_digests) as u(id, month, digest)
                 where l.block_no between %s and %s and u.month <> all (%L::integer[])',
               v_nil, p_from, p_to, v_pruned || v_gone),
        format('select %L::uuid as chain, 0 as block_no, a.id, a.txid, clinicdb.audit_row_digest(a) as digest
                  from clinicdb.audit_log a
                 where a.txid >= %s and a.txid <= %s and (a.txid, a.id) >= (%s, %s) and (a.txid, a.id) < (%s, %s)',
               v_nil, v_lo.lo_txid, v_hi.hi_txid, v_lo.lo_txid, v_lo.lo_id, v_hi.hi_txid, v_hi.hi_id));
    return query select * from clinicdb._audit_row_problems('legacy', v_found.lost, v_found.extra, v_blocks,
                                                            v_lo.lo_txid, v_hi.hi_txid + 1, p_max_rows);
end
$$;
comment on function clinicdb.verify_audit_legacy(bigint, bigint, integer) is
    'clinicdb: blocks from..to of the legacy (pre-0020) seal chain and their rows; every problem.';
revoke execute on function clinicdb.verify_audit_legacy(bigint, bigint, integer) from public;
grant execute on function clinicdb.verify_audit_legacy(bigint, bigint, integer) to clinicdb_owner, clinicdb_auditor;

-- The blocks of the chains of clinics p_first_clinic..p_last_clinic (all by
-- default): numbering, links, key ranges, hashes; each month summary against
-- the per-row entries it anchors (entries may be gone only where a later
-- sealed prune record covers the month); each prune record against what it
-- covers (the month summaries of the chain's blocks since the previous
-- record of that month), each prune-legacy record against the legacy
-- chain's entries of its month.
create or replace function clinicdb.verify_audit_chains(p_first_clinic uuid default null,
                                                        p_last_clinic uuid default null)
returns table (scope text, clinic_id uuid, block_no bigint, problem text, audit_id bigint, row_count bigint,
               detail text)
language sql
stable
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
set jit = off
as $$
    with cut as (
        select c.lo_txid, c.lo_id from clinicdb.audit_cutover() c
    ), w as (
        select s.clinic_id, s.block_no, s.kind, s.lo_txid, s.lo_id, s.hi_txid, s.hi_id, s.row_count, s.months,
               s.month_rows, s.month_digests, s.rows_digest, s.prev_hash, s.block_hash,
               clinicdb.audit_chain_label(s.clinic_id) as label,
               lag(s.block_no) over x as p_no, lag(s.block_hash) over x as p_hash,
               lag(s.hi_txid) over x as p_hi_txid, lag(s.hi_id) over x as p_hi_id
          from clinicdb.audit_seals s
         where (p_first_clinic is null or s.clinic_id >= p_first_clinic)
           and (p_last_clinic is null or s.clinic_id <= p_last_clinic)
        window x as (partition by s.clinic_id order by s.block_no)
    ), summaries as (
        -- each month summary, with the first prune record of that month at or after it (its cover)
        select m.*, min(m.block_no) filter (where m.kind = 'prune')
                        over (partition by m.clinic_id, m.month order by m.block_no desc
                              rows between unbounded preceding and current row) as cover
          from (select w.clinic_id, w.block_no, w.kind, w.label, u.month, u.n, u.d
                  from w cross join lateral unnest(w.months, w.month_rows, w.month_digests) as u(month, n, d)
                 where w.kind in ('rows', 'prune')) m
    ), listed as (
        select s.clinic_id, s.block_no, u.month, count(*)::integer as n,
               sha256(string_agg(int8send(u.txid) || int8send(u.id) || u.digest, ''::bytea order by u.ord)) as d
          from clinicdb.audit_seals s
         cross join lateral unnest(s.row_ids, s.row_txids, s.row_months, s.row_digests)
                            with ordinality as u(id, txid, month, digest, ord)
         where s.kind = 'rows'
           and (p_first_clinic is null or s.clinic_id >= p_first_clinic)
           and (p_last_clinic is null or s.clinic_id <= p_last_clinic)
         group by s.clinic_id, s.block_no, u.month
    ), covered as (
        select m.clinic_id, m.cover, sum(m.n)::integer as n,
               sha256(string_agg(int8send(m.block_no) || int4send(m.n) || m.d, ''::bytea order by m.block_no)) as d
          from summaries m
         where m.kind = 'rows' and m.cover is not null
         group by m.clinic_id, m.cover
    ), legacy_months as (
        select u.month, count(*)::integer as n,
               sha256(string_agg(int8send(u.id) || int4send(u.month) || u.digest, ''::bytea
                                 order by l.block_no, u.ord)) as d
          from clinicdb.audit_seals_legacy l
         cross join lateral unnest(l.row_ids, l.row_months, l.row_digests) with ordinality as u(id, month, digest, ord)
         where l.row_months && array(select w.months[1] from w where w.kind = 'prune-legacy')
           and u.month in (select w.months[1] from w where w.kind = 'prune-legacy')
         group by u.month
    )
    select 'chain', w.clinic_id, coalesce(w.p_no, 0) + 1, 'block missing', null::bigint,
           w.block_no - coalesce(w.p_no, 0) - 1,
           case when w.block_no - coalesce(w.p_no, 0) = 2
                then format('block %s of %s is missing: its hash was %s (block %s''s prev_hash). Restore it from a '
                            'backup of clinicdb.audit_seals; until then the rows it sealed are not protected',
                            w.block_no - 1, w.label, encode(w.prev_hash, 'hex'), w.block_no)
                else format('blocks %s-%s of %s are missing (block %s''s hash was %s, block %s''s prev_hash). '
                            'Restore them from a backup of clinicdb.audit_seals; until then the rows they sealed are '
                            'not protected', coalesce(w.p_no, 0) + 1, w.block_no - 1, w.label, w.block_no - 1,
                            encode(w.prev_hash, 'hex'), w.block_no) end
      from w
     where w.block_no > coalesce(w.p_no, 0) + 1
    union all
    select 'chain', w.clinic_id, w.block_no, 'chain broken', null, null,
           format('block %s of %s does not link to block %s (its prev_hash is not that block''s hash): one of them '
                  'was replaced', w.block_no, w.label, w.block_no - 1)
      from w
     where (w.p_no = w.block_no - 1 and w.prev_hash <> w.p_hash)
        or (w.block_no = 1 and w.prev_hash <> decode(repeat('00', 32), 'hex'))
    union all
    select 'chain', w.clinic_id, w.block_no, 'range broken', null, null,
           format('block %s of %s does not start where %s: rows there are in no block', w.block_no, w.label,
                  case when w.block_no = 1 then 'the legacy chain ends (the cut-over)'
                       else format('block %s ends', w.block_no - 1) end)
      from w cross join cut
     where (w.p_no = w.block_no - 1 and (w.lo_txid, w.lo_id) <> (w.p_hi_txid, w.p_hi_id))
        or (w.block_no = 1 and (w.lo_txid, w.lo_id) <> (cut.lo_txid, cut.lo_id))
    union all
    select 'chain', w.clinic_id, w.block_no, 'block altered', null, null,
           format('block %s of %s: %s', w.block_no, w.label,
                  concat_ws('; ',
                            case when w.rows_digest is distinct from
                                      clinicdb.audit_summary_digest(w.months, w.month_rows, w.month_digests)
                                 then 'rows_digest does not match its month summaries' end,
                            case when w.row_count is distinct from
                                      (select sum(n)::integer from unnest(w.month_rows) as n)
                                 then 'row_count does not match its month summaries' end,
                            case when w.block_hash is distinct from clinicdb.audit_chain_block_hash(
                                          w.prev_hash, w.clinic_id, w.block_no, w.kind, w.lo_txid, w.lo_id,
                                          w.hi_txid, w.hi_id, w.row_count, w.rows_digest)
                                 then 'block_hash does not match its contents' end))
      from w
     where w.rows_digest is distinct from clinicdb.audit_summary_digest(w.months, w.month_rows, w.month_digests)
        or w.row_count is distinct from (select sum(n)::integer from unnest(w.month_rows) as n)
        or w.block_hash is distinct from clinicdb.audit_chain_block_hash(w.prev_hash, w.clinic_id, w.block_no, w.kind,
                                                                         w.lo_txid, w.lo_id, w.hi_txid, w.hi_id,
                                                                         w.row_count, w.rows_digest)
    union all
    select 'chain', coalesce(m.clinic_id, l.clinic_id), coalesce(m.block_no, l.block_no), 'block altered', null, null,
           format('block %s of %s: %s', coalesce(m.block_no, l.block_no),
                  clinicdb.audit_chain_label(coalesce(m.clinic_id, l.clinic_id)),
                  case when l.clinic_id is null
                       then format('the per-row digests of audit month %s were removed, and no sealed prune record '
                                   'covers them', clinicdb.audit_month_text(m.month))
                       when m.clinic_id is null
                       then format('it lists rows of audit month %s that its month summary does not hold',
                                   coalesce(clinicdb.audit_month_text(l.month), '(none)'))
                       else format('the per-row digests of audit month %s do not match its sealed summary (%s rows '
                                   'sealed, %s listed)', clinicdb.audit_month_text(m.month), m.n, l.n) end)
      from (select * from summaries s where s.kind = 'rows') m
      full join listed l on l.clinic_id = m.clinic_id and l.block_no = m.block_no and l.month = m.month
     where case when l.clinic_id is null then m.cover is null
                when m.clinic_id is null then true
                else (m.n, m.d) is distinct from (l.n, l.d) end
    union all
    select 'chain', w.clinic_id, w.block_no, 'prune record forged', null, w.month_rows[1]::bigint,
           format('the prune record of audit month %s (block %s of %s) does not match the sealed blocks it covers: '
                  'it says %s rows, they hold %s', clinicdb.audit_month_text(w.months[1]), w.block_no, w.label,
                  w.month_rows[1], coalesce(c.n, 0))
      from w
      left join covered c on c.clinic_id = w.clinic_id and c.cover = w.block_no
     where w.kind = 'prune' and (w.month_rows[1], w.month_digests[1]) is distinct from (c.n, c.d)
    union all
    select 'chain', w.clinic_id, w.block_no, 'prune record forged', null, w.month_rows[1]::bigint,
           format('the prune record of audit month %s (block %s of %s) does not match the legacy chain''s blocks: '
                  'it says %s legacy rows, they hold %s', clinicdb.audit_month_text(w.months[1]), w.block_no, w.label,
                  w.month_rows[1], coalesce(lm.n, 0))
      from w
      left join legacy_months lm on lm.month = w.months[1]
     where w.kind = 'prune-legacy' and (w.month_rows[1], w.month_digests[1]) is distinct from (lm.n, lm.d)
    order by 2, 3, 4
$$;
comment on function clinicdb.verify_audit_chains(uuid, uuid) is
    'clinicdb: the seal blocks of the chains of clinics first..last (all by default): links, ranges, hashes, '
    'month summaries, prune records; every problem.';
revoke execute on function clinicdb.verify_audit_chains(uuid, uuid) from public;
grant execute on function clinicdb.verify_audit_chains(uuid, uuid) to clinicdb_owner, clinicdb_auditor;

-- The round chain, and what it records: the legacy chain's head at the
-- cut-over, and each chain's head after each round. Gaps inside a chain are
-- verify_audit_chains' to name; here the ends: a chain whose last blocks are
-- gone (a whole chain, even), blocks no round names.
create or replace function clinicdb.verify_audit_rounds()
returns table (scope text, clinic_id uuid, block_no bigint, problem text, audit_id bigint, row_count bigint,
               detail text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    with r as (
        select r.round_no, r.horizon_txid, r.scan_from_txid, r.clinic_ids, r.block_nos, r.block_hashes, r.prev_hash,
               r.round_hash, lag(r.round_no) over x as p_no, lag(r.round_hash) over x as p_hash,
               row_number() over x as k
          from clinicdb.audit_seal_rounds r
        window x as (order by r.round_no)
    ), first_round as (
        select r.round_no, r.prev_hash from r where r.k = 1
    ), named as (
        select r.round_no, u.clinic_id, u.block_no, u.block_hash
          from clinicdb.audit_seal_rounds r
         cross join lateral unnest(r.clinic_ids, r.block_nos, r.block_hashes) as u(clinic_id, block_no, block_hash)
    ), last_named as (
        select distinct on (n.clinic_id) n.clinic_id, n.block_no, n.block_hash, n.round_no
          from named n order by n.clinic_id, n.block_no desc, n.round_no desc
    ), heads as (
        select s.clinic_id, max(s.block_no) as head from clinicdb.audit_seals s group by s.clinic_id
    )
    select 'round', null::uuid, null::bigint, 'round missing', null::bigint, null::bigint,
           'there is no sealing round: the cut-over round of migration 0020 and every later one are gone. Restore '
           'clinicdb.audit_seal_rounds from a backup'
     where not exists (select 1 from r)
    union all
    select 'round', null, r.p_no + 1, 'round missing', null, r.round_no - r.p_no - 1,
           case when r.round_no - r.p_no = 2
                then format('round %s is missing: its hash was %s (round %s''s prev_hash). Restore it from a backup '
                            'of clinicdb.audit_seal_rounds', r.round_no - 1, encode(r.prev_hash, 'hex'), r.round_no)
                else format('rounds %s-%s are missing (round %s''s hash was %s, round %s''s prev_hash). Restore them '
                            'from a backup of clinicdb.audit_seal_rounds', r.p_no + 1, r.round_no - 1, r.round_no - 1,
                            encode(r.prev_hash, 'hex'), r.round_no) end
      from r where r.round_no > r.p_no + 1
    union all
    select 'round', null, r.round_no, 'round broken', null, null,
           format('round %s does not link to round %s: one of them was replaced', r.round_no, r.round_no - 1)
      from r where r.p_no = r.round_no - 1 and r.prev_hash <> r.p_hash
    union all
    select 'round', null, r.round_no, 'round altered', null, null,
           format('round %s: round_hash does not match its contents', r.round_no)
      from r
     where r.round_hash <> clinicdb.audit_round_hash(r.prev_hash, r.round_no, r.horizon_txid, r.scan_from_txid,
                                                     r.clinic_ids, r.block_nos, r.block_hashes)
    union all
    select 'legacy', null, f.round_no - 1, case when l.block_no is null then 'block missing' else 'chain broken' end,
           null, null,
           case when l.block_no is null
                then format('block %s of the legacy chain, its last, is missing: its hash was %s (the prev_hash of '
                            'round %s, the cut-over). Restore it from a backup of clinicdb.audit_seals_legacy',
                            f.round_no - 1, encode(f.prev_hash, 'hex'), f.round_no)
                else format('block %s of the legacy chain is not the one the cut-over recorded (round %s''s '
                            'prev_hash): it was replaced', f.round_no - 1, f.round_no) end
      from first_round f
      left join clinicdb.audit_seals_legacy l on l.block_no = f.round_no - 1
     where f.round_no > 1 and (l.block_no is null or l.block_hash <> f.prev_hash)
    union all
    select 'round', null, f.round_no, 'round broken', null, null,
           'round 1 does not start from 32 zero bytes (there is no legacy chain before it)'
      from first_round f
     where f.round_no = 1 and f.prev_hash <> decode(repeat('00', 32), 'hex')
    union all
    select 'legacy', null, f.round_no, 'block added', null, count(*),
           format('blocks %s-%s of the legacy chain were added after the cut-over (round %s)', f.round_no,
                  max(l.block_no), f.round_no)
      from first_round f
      join clinicdb.audit_seals_legacy l on l.block_no >= f.round_no
     group by f.round_no
    union all
    select 'round', n.clinic_id, n.block_no, 'block altered', null, null,
           format('block %s of %s is not the one round %s recorded (its hash differs): it was replaced', n.block_no,
                  clinicdb.audit_chain_label(n.clinic_id), n.round_no)
      from named n
      join clinicdb.audit_seals s on s.clinic_id = n.clinic_id and s.block_no = n.block_no
     where s.block_hash <> n.block_hash
    union all
    select 'round', n.clinic_id, coalesce(h.head, 0) + 1, 'block missing', null, n.block_no - coalesce(h.head, 0),
           case when n.block_no = coalesce(h.head, 0) + 1
                then format('block %s of %s, its last, is missing: round %s recorded its hash %s. Restore it from a '
                            'backup of clinicdb.audit_seals; until then the rows it sealed are not protected',
                            n.block_no, clinicdb.audit_chain_label(n.clinic_id), n.round_no,
                            encode(n.block_hash, 'hex'))
                else format('blocks %s-%s of %s, its last, are missing: round %s recorded block %s with hash %s. '
                            'Restore them from a backup of clinicdb.audit_seals; until then the rows they sealed are '
                            'not protected', coalesce(h.head, 0) + 1, n.block_no,
                            clinicdb.audit_chain_label(n.clinic_id), n.round_no, n.block_no,
                            encode(n.block_hash, 'hex')) end
      from last_named n
      left join heads h on h.clinic_id = n.clinic_id
     where n.block_no > coalesce(h.head, 0)
    union all
    select 'round', h.clinic_id, coalesce(n.block_no, 0) + 1, 'block not in a round', null,
           h.head - coalesce(n.block_no, 0),
           format('%s of %s %s in no sealing round: written outside seal_audit() and prune_audit()',
                  case when h.head = coalesce(n.block_no, 0) + 1 then format('block %s', h.head)
                       else format('blocks %s-%s', coalesce(n.block_no, 0) + 1, h.head) end,
                  clinicdb.audit_chain_label(h.clinic_id),
                  case when h.head = coalesce(n.block_no, 0) + 1 then 'is' else 'are' end)
      from heads h
      left join last_named n on n.clinic_id = h.clinic_id
     where h.head > coalesce(n.block_no, 0)
    order by 2 nulls first, 3
$$;
comment on function clinicdb.verify_audit_rounds() is
    'clinicdb: the chain of sealing rounds, the legacy head at the cut-over, and the chain heads the rounds recorded.';
revoke execute on function clinicdb.verify_audit_rounds() from public;
grant execute on function clinicdb.verify_audit_rounds() to clinicdb_owner, clinicdb_auditor;

-- Months whose sealed rows are all gone from the trail (a TRUNCATE or a
-- dropped partition) although no sealed prune record covers them, one line
-- per month over every chain and the legacy chain. A month counts as pruned
-- only by a prune record in the chain (whose validity verify_audit_chains
-- checks); clinicdb.audit_pruned_months is not read.
create or replace function clinicdb.verify_audit_months()
returns table (scope text, clinic_id uuid, block_no bigint, problem text, audit_id bigint, row_count bigint,
               detail text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    with summaries as (
        select s.clinic_id, s.block_no, s.kind, u.month, u.n
          from clinicdb.audit_seals s cross join lateral unnest(s.months, s.month_rows) as u(month, n)
         where s.kind in ('rows', 'prune')
    ), unpruned as (
        select m.month, m.n,
               count(*) filter (where m.kind = 'prune')
                   over (partition by m.clinic_id, m.month order by m.block_no desc
                         rows between unbounded preceding and current row) as later_prunes
          from summaries m
    ), sealed as (
        select u.month, u.n::bigint as n from unpruned u where u.later_prunes = 0
        union all
        select u.month, 1 from clinicdb.audit_seals_legacy l cross join lateral unnest(l.row_months) as u(month)
         where u.month not in (select s.months[1] from clinicdb.audit_seals s
                                where s.clinic_id = '00000000-0000-0000-0000-000000000000' and s.kind = 'prune-legacy')
    ), by_month as (
        select s.month, sum(s.n)::bigint as n from sealed s group by s.month
    )
    select 'month', null::uuid, null::bigint, 'month missing', null::bigint, b.n,
           format('audit month %s: %s sealed rows missing and no sealed prune record', clinicdb.audit_month_text(b.month),
                  b.n)
      from by_month b
     where not clinicdb.audit_month_present(b.month)
     order by b.month
$$;
comment on function clinicdb.verify_audit_months() is
    'clinicdb: audit months whose sealed rows are gone without a sealed prune record, by name.';
revoke execute on function clinicdb.verify_audit_months() from public;
grant execute on function clinicdb.verify_audit_months() to clinicdb_owner, clinicdb_auditor;

-- How to split a verification into parts of about p_rows sealed rows:
-- legacy block ranges (first_no..last_no), ranges of clinics
-- (first_clinic..last_clinic; a large chain alone), and txid ranges
-- [first_no, last_no) of the rows after the cut-over, the last one open.
-- The txid bounds come from a sample of the trail (chains interleave, so
-- block ranges say little about where rows lie); a part is never smaller
-- than one transaction's rows.
create or replace function clinicdb.audit_verify_plan(p_rows integer default 100000)
returns table (part text, first_clinic uuid, last_clinic uuid, first_no bigint, last_no bigint, rows bigint)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_cut bigint := (select c.lo_txid from clinicdb.audit_cutover() c);
    v_sealed bigint := (select coalesce(sum(s.row_count), 0) from clinicdb.audit_seals s where s.kind = 'rows');
    v_parts integer := greatest(1, ceil(v_sealed::numeric / p_rows))::integer;
    v_trail numeric := greatest((select sum(greatest(c.reltuples, 0)) from pg_inherits i join pg_class c on c.oid = i.inhrelid
                                  where i.inhparent = 'clinicdb.audit_log'::regclass), 1);
    v_bounds bigint[];
begin
    return query
    select 'legacy', null::uuid, null::uuid, min(l.block_no), max(l.block_no), sum(l.row_count)::bigint
      from (select l.block_no, l.row_count, (sum(l.row_count) over (order by l.block_no) - 1)::bigint / p_rows as chunk
              from clinicdb.audit_seals_legacy l) l
     group by l.chunk order by 4;
    return query
    select 'chains', min(c.clinic_id::text collate "C")::uuid, max(c.clinic_id::text collate "C")::uuid, null::bigint,
           null::bigint, sum(c.n)::bigint
      from (select c.clinic_id, c.n, (sum(c.n) over (order by c.clinic_id) - c.n)::bigint / p_rows as chunk
              from (select s.clinic_id, sum(s.row_count)::bigint as n from clinicdb.audit_seals s group by s.clinic_id) c) c
     group by c.chunk order by 2;
    if v_parts > 1 then
        select array(select distinct b from unnest(percentile_disc(array(select k::float8 / v_parts
                                                                      from generate_series(1, v_parts - 1) k))
                                                   within group (order by a.txid)) b
                      where b > v_cut order by b)
          into v_bounds
          from clinicdb.audit_log a tablesample system (least(100, 100 * 20000 / v_trail))
         where a.txid >= v_cut;
    end if;
    return query
    select 'rows', null::uuid, null::uuid, coalesce(lag(b.upto) over (order by b.k), v_cut), b.upto,
           v_sealed / (cardinality(coalesce(v_bounds, '{}')) + 1)
      from unnest(coalesce(v_bounds, '{}') || 9223372036854775807::bigint) with ordinality as b(upto, k);
end
$$;
comment on function clinicdb.audit_verify_plan(integer) is
    'clinicdb: the parts of a seal verification (legacy blocks, clinics, txid ranges) of about p_rows rows each.';
revoke execute on function clinicdb.audit_verify_plan(integer) from public;
grant execute on function clinicdb.audit_verify_plan(integer) to clinicdb_owner, clinicdb_auditor;

-- Everything, in one call: rounds, months, the legacy chain, every chain,
-- every row. Row-level problems are listed up to p_max_rows in all, then
-- counted per kind.
create or replace function clinicdb.verify_audit(p_max_rows integer default 100)
returns table (scope text, clinic_id uuid, block_no bigint, problem text, audit_id bigint, row_count bigint,
               detail text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_part record;
    v_lines refcursor;
    v_line record;
    v_left integer := greatest(coalesce(p_max_rows, 100), 0);
    v_more jsonb := '{}';
    v_kind text;
begin
    return query select * from clinicdb.verify_audit_rounds();
    return query select * from clinicdb.verify_audit_months();
    return query select * from clinicdb.verify_audit_chains();
    for v_part in select * from clinicdb.audit_verify_plan() p where p.part in ('legacy', 'rows') loop
        if v_part.part = 'legacy' then
            open v_lines for select * from clinicdb.verify_audit_legacy(v_part.first_no, v_part.last_no, v_left);
        else
            open v_lines for select * from clinicdb.verify_audit_rows(v_part.first_no, v_part.last_no, v_left);
        end if;
        loop
            fetch v_lines into v_line;
            exit when not found;
            if v_line.audit_id is null and v_line.problem like 'rows %' then
                v_more := jsonb_set(v_more, array[v_line.problem],
                                    to_jsonb(coalesce((v_more ->> v_line.problem)::bigint, 0) + v_line.row_count));
                continue;
            end if;
            if v_line.audit_id is not null then
                v_left := greatest(v_left - 1, 0);
            end if;
            scope := v_line.scope; clinic_id := v_line.clinic_id; block_no := v_line.block_no;
            problem := v_line.problem; audit_id := v_line.audit_id; row_count := v_line.row_count;
            detail := v_line.detail;
            return next;
        end loop;
        close v_lines;
    end loop;
    for v_kind in select k from jsonb_object_keys(v_more) k order by 1 loop
        scope := 'rows'; clinic_id := null; block_no := null; problem := v_kind; audit_id := null;
        row_count := (v_more ->> v_kind)::bigint;
        detail := format('%s more %s row(s) not listed', row_count, replace(v_kind, 'rows ', ''));
        return next;
    end loop;
end
$$;
comment on function clinicdb.verify_audit(integer) is
    'clinicdb: verify every seal chain and sealed row; no rows means intact, else one row per problem.';
revoke execute on function clinicdb.verify_audit(integer) from public;
grant execute on function clinicdb.verify_audit(integer) to clinicdb_owner, clinicdb_auditor;
-- ---- sql/functions/audit_prune.sql ----
-- Retention: clinicdb.prune_audit(retention, dry_run) drops whole monthly
-- partitions of clinicdb.audit_log that ended before now() - retention, and
-- seals what it drops, so that verification can tell a month pruned by
-- retention from a month someone truncated or dropped.
--
-- For each month it drops, in one transaction:
--   1. Every row of the month must be sealed. It locks the months it drops
--      (refusing while a transaction still running writes into one: its rows
--      would be dropped unseen), runs a sealing round for every chain (no
--      threshold), and refuses when a row is still unsealed (a transaction
--      still running holds the horizon back): a month is never dropped with
--      rows nothing vouches for.
--   2. The rows must match what was sealed: it refuses when one differs,
--      since dropping the month would destroy the evidence
--      (`clinicdb audit verify` names the rows).
--   3. A sealed prune record in each chain holding rows of the month (kind
--      'prune': the month, how many of the chain's rows, a digest of their
--      sealed month digests, prev_hash = the chain's last block), and, for
--      rows the legacy chain sealed, one 'prune-legacy' record in the
--      no-clinic chain. A round then names the new heads.
--   4. The month's per-row entries leave the blocks (the month summaries,
--      hashed into each block, stay and anchor the chain), the partition is
--      detached and dropped, clinicdb.audit_pruned_months (a convenience
--      index nothing trusts) gets a row, and the trail a 'prune' row.
-- It never deletes single rows, never touches a month inside retention or
-- the default partition (rows there wait for ensure_audit_partitions).
-- dry_run (the default) only says what it would do.
--
-- SECURITY INVOKER, granted to clinicdb_owner: the owner or a superuser runs
-- it (by hand, `clinicdb audit prune`, or a scheduler).

-- A 'prune-legacy' record for a month of the legacy chain's rows, unless one
-- exists or the legacy chain holds no entry of that month. Returns whether it
-- wrote one. For prune_audit and the cut-over (sql/schema/audit_cutover.sql).
create or replace function clinicdb._audit_prune_legacy_month(p_month integer)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_nil constant uuid := '00000000-0000-0000-0000-000000000000';
    v_rows integer;
    v_digest bytea;
begin
    if exists (select 1 from clinicdb.audit_seals s
                where s.clinic_id = v_nil and s.kind = 'prune-legacy' and s.months[1] = p_month) then
        return false;
    end if;
    select count(*)::integer,
           sha256(string_agg(int8send(u.id) || int4send(u.month) || u.digest, ''::bytea order by l.block_no, u.ord))
      into v_rows, v_digest
      from clinicdb.audit_seals_legacy l
     cross join lateral unnest(l.row_ids, l.row_months, l.row_digests) with ordinality as u(id, month, digest, ord)
     where p_month = any (l.row_months) and u.month = p_month;
    if v_rows = 0 then
        return false;
    end if;
    perform clinicdb._audit_append_block(v_nil, 'prune-legacy', null, null, array[p_month], array[v_rows],
                                         array[v_digest]);
    return true;
end
$$;
comment on function clinicdb._audit_prune_legacy_month(integer) is
    'clinicdb: seal a prune record for the legacy chain''s rows of one month (once). Internal to pruning.';
revoke execute on function clinicdb._audit_prune_legacy_month(integer) from public;

create or replace function clinicdb.prune_audit(p_retention interval default interval '2555 days',
                                                p_dry_run boolean default true)
returns table (partition_name text, range_from timestamptz, range_to timestamptz, row_count bigint, action text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
set jit = off
as $$
#variable_conflict use_column
declare
    v_nil constant uuid := '00000000-0000-0000-0000-000000000000';
    v_part record;
    v_lock record;
    v_cutoff timestamptz;
    v_rows bigint;
    v_month integer;
    v_cut record;
    v_sealed boolean := false;
    v_bad bigint;
    v_chains uuid[] := '{}';
    v_record record;
    v_found record;
begin
    if p_retention is null or p_retention < interval '1 day' then
        raise exception 'retention must be at least 1 day, not %', coalesce(p_retention::text, 'NULL')
            using errcode = 'invalid_parameter_value', hint = 'the default is 2555 days (7 years)';
    end if;
    v_cutoff := now() - p_retention;
    for v_part in
        select p.* from clinicdb.audit_partitions() p
         where not p.is_default and p.range_to is not null and p.range_to <= v_cutoff
         order by p.range_from
    loop
        execute format('select count(*) from %s', v_part.partition_name) into v_rows;
        partition_name := v_part.partition_name;
        range_from := v_part.range_from;
        range_to := v_part.range_to;
        row_count := v_rows;
        if p_dry_run then
            action := 'would drop';
            return next;
            continue;
        end if;
        v_month := clinicdb.audit_month(v_part.range_from);
        if not v_sealed then
            -- First every month to drop is locked: a transaction still
            -- writing into one holds rows this transaction cannot see, which
            -- would otherwise be dropped unsealed once it commits. Then
            -- every chain is sealed, whatever its size or age.
            for v_lock in
                select p.partition_name, p.range_from from clinicdb.audit_partitions() p
                 where not p.is_default and p.range_to is not null and p.range_to <= v_cutoff
                 order by p.range_from
            loop
                begin
                    execute format('lock table %s in access exclusive mode nowait', v_lock.partition_name);
                exception when lock_not_available then
                    raise exception 'audit month %: a transaction still running is writing into it, so it cannot be '
                                    'pruned yet', clinicdb.audit_month_text(clinicdb.audit_month(v_lock.range_from))
                        using errcode = 'lock_not_available',
                              hint = 'when it ends (see pg_stat_activity), prune again';
                end;
            end loop;
            perform count(*) from clinicdb.seal_audit(10000, 1, interval '0');
            select * into v_cut from clinicdb.audit_cutover();
            v_sealed := true;
        end if;

        -- (counted again: rows committed before the lock was granted count too)
        execute format('select count(*) from %s', v_part.partition_name) into v_rows;
        row_count := v_rows;

        -- 1. Every row of the month sealed (by its chain, or by the legacy chain).
        with month_rows as (
            select clinicdb.audit_chain_key(a.clinic_id) as chain, a.id, a.txid
              from clinicdb.audit_log a
             where a.logged_at >= v_part.range_from and a.logged_at < v_part.range_to
               and (a.txid, a.id) >= (v_cut.lo_txid, v_cut.lo_id)
        ), heads as (
            select c.chain, h.hi_txid, h.hi_id
              from (select distinct m.chain from month_rows m) c
              left join lateral (select s.hi_txid, s.hi_id from clinicdb.audit_seals s
                                  where s.clinic_id = c.chain order by s.block_no desc limit 1) h on true
        )
        select count(*) into v_bad
          from month_rows m join heads h on h.chain = m.chain
         where h.hi_txid is null or (m.txid, m.id) >= (h.hi_txid, h.hi_id);
        if v_bad > 0 then
            raise exception 'audit month %: % rows are not sealed yet, so it cannot be pruned',
                            clinicdb.audit_month_text(v_month), v_bad
                using errcode = 'object_not_in_prerequisite_state',
                      hint = 'a transaction still running holds the sealing horizon back (see pg_stat_activity); '
                             'when it ends, run clinicdb audit seal, then prune again';
        end if;

        -- 2. The rows are what was sealed (by their chains, or by the
        -- legacy chain unless a sealed record already excused its month).
        select * into v_found from clinicdb._audit_differences(
            format('select s.clinic_id as chain, s.block_no, u.id, u.txid, u.digest
                      from clinicdb.audit_seals s
                     cross join lateral unnest(s.row_ids, s.row_txids, s.row_months, s.row_digests)
                                        as u(id, txid, month, digest)
                     where s.kind = %L and %s = any (s.row_months) and u.month = %s
                    union all
                    select %L::uuid, l.block_no, u.id, null, u.digest
                      from clinicdb.audit_seals_legacy l
                     cross join lateral unnest(l.row_ids, l.row_months, l.row_digests) as u(id, month, digest)
                     where %s = any (l.row_months) and u.month = %s
                       and not exists (select 1 from clinicdb.audit_seals p
                                        where p.clinic_id = %L and p.kind = %L and p.months[1] = %s)',
                   'rows', v_month, v_month, v_nil, v_month, v_month, v_nil, 'prune-legacy', v_month),
            format('select case when (a.txid, a.id) < (%s, %s) then %L::uuid
                                else clinicdb.audit_chain_key(a.clinic_id) end as chain,
                           null::bigint as block_no, a.id, a.txid, clinicdb.audit_row_digest(a) as digest
                      from clinicdb.audit_log a
                     where a.logged_at >= %L and a.logged_at < %L',
                   v_cut.lo_txid, v_cut.lo_id, v_nil, v_part.range_from, v_part.range_to));
        if cardinality(v_found.lost) + cardinality(v_found.extra) > 0 then
            raise exception 'audit month %: its rows differ from what was sealed, so pruning it would destroy the evidence',
                            clinicdb.audit_month_text(v_month)
                using errcode = 'object_not_in_prerequisite_state',
                      hint = 'run clinicdb audit verify: it names the altered, inserted or deleted rows';
        end if;

        -- 3. A sealed prune record in each chain holding rows of the month:
        -- what it covers is every month summary of the chain's blocks since
        -- the chain's last prune record of this month.
        for v_record in
            with events as (
                select s.clinic_id, s.block_no, s.kind, u.n, u.d
                  from clinicdb.audit_seals s
                 cross join lateral unnest(s.months, s.month_rows, s.month_digests) as u(month, n, d)
                 where s.kind in ('rows', 'prune') and v_month = any (s.months) and u.month = v_month
            ), last_prune as (
                select e.clinic_id, max(e.block_no) filter (where e.kind = 'prune') as block_no
                  from events e group by e.clinic_id
            )
            select e.clinic_id, sum(e.n)::integer as n,
                   sha256(string_agg(int8send(e.block_no) || int4send(e.n) || e.d, ''::bytea order by e.block_no)) as d
              from events e join last_prune l on l.clinic_id = e.clinic_id
             where e.kind = 'rows' and e.block_no > coalesce(l.block_no, 0)
             group by e.clinic_id
             order by e.clinic_id
        loop
            perform clinicdb._audit_append_block(v_record.clinic_id, 'prune', null, null, array[v_month],
                                                 array[v_record.n], array[v_record.d]);
            v_chains := v_chains || v_record.clinic_id;
        end loop;
        if clinicdb._audit_prune_legacy_month(v_month) then
            v_chains := v_chains || v_nil;
        end if;

        -- 4. Drop the month: its per-row entries, then its partition.
        perform set_config('clinicdb.audit_maintenance', 'on', true);
        update clinicdb.audit_seals s
           set row_ids = k.ids, row_txids = k.txids, row_months = k.months, row_digests = k.digests
          from (select s2.clinic_id, s2.block_no,
                       coalesce(array_agg(u.id order by u.ord) filter (where u.month <> v_month), '{}') as ids,
                       coalesce(array_agg(u.txid order by u.ord) filter (where u.month <> v_month), '{}') as txids,
                       coalesce(array_agg(u.month order by u.ord) filter (where u.month <> v_month), '{}') as months,
                       coalesce(array_agg(u.digest order by u.ord) filter (where u.month <> v_month), '{}') as digests
                  from clinicdb.audit_seals s2
                 cross join lateral unnest(s2.row_ids, s2.row_txids, s2.row_months, s2.row_digests)
                                    with ordinality as u(id, txid, month, digest, ord)
                 where s2.kind = 'rows' and v_month = any (s2.row_months)
                 group by s2.clinic_id, s2.block_no) k
         where s.clinic_id = k.clinic_id and s.block_no = k.block_no;
        perform set_config('clinicdb.audit_maintenance', '', true);
        execute format('alter table clinicdb.audit_log detach partition %s', v_part.partition_name);
        execute format('drop table %s', v_part.partition_name);
        insert into clinicdb.audit_pruned_months (month, partition_name, row_count)
        values ((v_part.range_from at time zone 'UTC')::date, v_part.partition_name, v_rows)
        on conflict (month) do update set row_count = clinicdb.audit_pruned_months.row_count + excluded.row_count,
                                          pruned_at = now(), pruned_by = session_user;
        insert into clinicdb.audit_log (clinic_id, table_name, action, new_values)
        values (null, v_part.partition_name, 'prune',
                jsonb_build_object('rows', v_rows, 'from', v_part.range_from, 'to', v_part.range_to,
                                   'retention', p_retention::text));
        action := 'dropped';
        return next;
    end loop;
    if cardinality(v_chains) > 0 then
        perform clinicdb._audit_close_round(null, null, v_chains);
    end if;
end
$$;
comment on function clinicdb.prune_audit(interval, boolean) is
    'clinicdb: drop whole audit partitions older than the retention (default 2555 days), sealing a prune record '
    'for each; dry_run (default) only lists them.';
revoke execute on function clinicdb.prune_audit(interval, boolean) from public;
grant execute on function clinicdb.prune_audit(interval, boolean) to clinicdb_owner;
-- ---- sql/schema/audit_cutover.sql ----
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
-- ---- migration only: row level security on the new tables (sql/schema/layer_tables.sql) ----
select clinicdb._secure_layer_table(t::regclass, true)
  from unnest(array['clinicdb.audit_seals', 'clinicdb.audit_seal_rounds', 'clinicdb.audit_seals_legacy']) as t;
reset role;
