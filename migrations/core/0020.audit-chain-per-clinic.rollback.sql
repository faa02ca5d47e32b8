-- 0020.audit-chain-per-clinic: undo 0020.audit-chain-per-clinic.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/schema/audit_chain.rollback.sql
-- when it was written, then the definitions of sql/schema/audit_seals.sql, sql/functions/audit_seal.sql
-- and prune_audit as 0004.audit froze them (migration 0020 replaced them). migrations/migrations.lock
-- pins it: change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/schema/audit_chain.rollback.sql ----
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
-- ---- sql/schema/audit_seals.sql, as 0004.audit froze it ----
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
-- ---- sql/functions/audit_seal.sql, as 0004.audit froze it ----
-- Tamper evidence for the audit trail: a hash chain over blocks of rows.
--
-- clinicdb.seal_audit(block_rows) is the sealing job (schedule it every few
-- minutes); clinicdb.verify_audit(from, to) recomputes the chain and the
-- rows and names the first altered, deleted or inserted row.
--
-- How blocks are cut without a lock in the write path:
--   Writers never touch the seal tables and take no lock for sealing. A row
--   is only sealed once no transaction can still add a row before it: the
--   sealer reads the oldest running transaction id (the xmin of its
--   snapshot); every row with txid below it is final (committed, or never
--   visible), while every running transaction has txid >= it (txid is the
--   top-level id). The round seals rows with key (txid, id) from the last
--   block's hi up to (xmin, 0), in (txid, id) order, in blocks of block_rows.
--   Consecutive key ranges touch (clinicdb.audit_seals), so any row later
--   added under the sealed horizon lands inside some block and is caught.
--   Sealers serialize among themselves with an advisory lock only.
--
-- What a block commits to: for each row, its id, its month and a SHA-256
-- digest of all its columns (clinicdb.audit_row_digest, a canonical JSON
-- text that depends on no session setting); the block hash covers the
-- previous block's hash, so altering any sealed row, block or link breaks
-- every hash after it.
--
-- Retention: a pruned month's rows are expected to be missing; the blocks
-- keep their digests (or, once entirely pruned, just rows_digest), so the
-- chain through them and every row still present stay verifiable.
--
-- What this cannot catch from inside the database: someone who can write
-- the seal table (owner, superuser) rewriting the chain from some block on.
-- Copy the head hash that `clinicdb audit seal` prints to somewhere they
-- cannot write, and check it with `clinicdb audit verify --expect BLOCK:HASH`.
-- Rows not sealed yet (newer than the last round) are not covered.

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
    'clinicdb: the hash of one seal block, chaining it to the previous one.';
grant execute on function clinicdb.audit_block_hash(bytea, bigint, bigint, bigint, bigint, bigint, integer, bytea)
    to clinicdb_owner, clinicdb_auditor;

create or replace function clinicdb.seal_audit(p_block_rows integer default 10000)
returns table (block_no bigint, row_count integer, block_hash text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
as $$
declare
    v_last record;
    v_horizon bigint;
    v_lo_txid bigint := 0;
    v_lo_id bigint := 0;
    v_prev bytea := decode(repeat('00', 32), 'hex');
    v_no bigint := 0;
    v_chunk record;
    v_hash bytea;
begin
    if p_block_rows is null or p_block_rows < 1 or p_block_rows > 1000000 then
        raise exception 'block_rows must be between 1 and 1000000, not %', coalesce(p_block_rows::text, 'NULL')
            using errcode = 'invalid_parameter_value';
    end if;
    -- One sealer at a time; writers never take this lock.
    perform pg_advisory_xact_lock(hashtext('clinicdb.seal_audit'));
    v_horizon := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;

    select s.block_no, s.hi_txid, s.hi_id, s.block_hash into v_last
      from clinicdb.audit_seals s order by s.block_no desc limit 1;
    if found then
        v_no := v_last.block_no;
        v_lo_txid := v_last.hi_txid;
        v_lo_id := v_last.hi_id;
        v_prev := v_last.block_hash;
    end if;
    if v_lo_txid >= v_horizon then
        return;
    end if;

    for v_chunk in
        with rows as (
            select a.id, a.txid, clinicdb.audit_month(a.logged_at) as month, clinicdb.audit_row_digest(a) as digest,
                   (row_number() over (order by a.txid, a.id) - 1) / p_block_rows as chunk
              from clinicdb.audit_log a
             where a.txid >= v_lo_txid and a.txid < v_horizon and (a.txid, a.id) >= (v_lo_txid, v_lo_id)
        ), chunks as (
            -- rows arrive sorted by (txid, id) from the window's sort; each
            -- chunk is aggregated in that order (one sort, not one per array).
            select r.chunk, count(*)::integer as n, min(r.txid) as first_txid,
                   array_agg(r.id) as ids,
                   array_agg(r.month) as months,
                   array_agg(r.digest) as digests,
                   sha256(string_agg(int8send(r.id) || int4send(r.month) || r.digest, ''::bytea)) as rows_digest
              from (select * from rows order by rows.chunk, rows.txid, rows.id) r
             group by r.chunk
        )
        select c.*, lead(c.first_txid) over (order by c.chunk) as next_txid,
               lead(c.ids[1]) over (order by c.chunk) as next_id
          from chunks c
         order by c.chunk
    loop
        v_no := v_no + 1;
        v_hash := clinicdb.audit_block_hash(v_prev, v_no, v_lo_txid, v_lo_id,
                                            coalesce(v_chunk.next_txid, v_horizon), coalesce(v_chunk.next_id, 0),
                                            v_chunk.n, v_chunk.rows_digest);
        insert into clinicdb.audit_seals (block_no, lo_txid, lo_id, hi_txid, hi_id, row_count, row_ids, row_months,
                                          row_digests, rows_digest, prev_hash, block_hash)
        values (v_no, v_lo_txid, v_lo_id, coalesce(v_chunk.next_txid, v_horizon), coalesce(v_chunk.next_id, 0),
                v_chunk.n, v_chunk.ids, v_chunk.months, v_chunk.digests, v_chunk.rows_digest, v_prev, v_hash);
        v_lo_txid := coalesce(v_chunk.next_txid, v_horizon);
        v_lo_id := coalesce(v_chunk.next_id, 0);
        v_prev := v_hash;
        block_no := v_no;
        row_count := v_chunk.n;
        block_hash := encode(v_hash, 'hex');
        return next;
    end loop;
end
$$;
comment on function clinicdb.seal_audit(integer) is
    'clinicdb: seal every final, unsealed audit row into hash-chained blocks; returns the new blocks. Schedule it.';
revoke execute on function clinicdb.seal_audit(integer) from public;
grant execute on function clinicdb.seal_audit(integer) to clinicdb_owner;

-- The chain's head and how much is sealed, for `clinicdb audit seal` and monitoring.
create or replace function clinicdb.audit_seal_status(
    out blocks bigint, out sealed_rows bigint, out head_block bigint, out head_hash text,
    out sealed_until_txid bigint, out unsealed_rows bigint, out last_sealed_at timestamptz)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_head record;
begin
    select count(*), coalesce(sum(s.row_count), 0) into blocks, sealed_rows from clinicdb.audit_seals s;
    select s.block_no, s.block_hash, s.hi_txid, s.hi_id, s.sealed_at into v_head
      from clinicdb.audit_seals s order by s.block_no desc limit 1;
    head_block := v_head.block_no;
    head_hash := encode(v_head.block_hash, 'hex');
    sealed_until_txid := v_head.hi_txid;
    last_sealed_at := v_head.sealed_at;
    select count(*) into unsealed_rows from clinicdb.audit_log a
     where a.txid >= coalesce(v_head.hi_txid, 0) and (a.txid, a.id) >= (coalesce(v_head.hi_txid, 0), coalesce(v_head.hi_id, 0));
end
$$;
comment on function clinicdb.audit_seal_status() is
    'clinicdb: number of seal blocks and sealed rows, the head block and hash, and rows not sealed yet.';
revoke execute on function clinicdb.audit_seal_status() from public;
grant execute on function clinicdb.audit_seal_status() to clinicdb_owner, clinicdb_auditor;

-- Verify blocks p_from..p_to (all by default): the chain links and hashes,
-- then every row in their key ranges against the digests they committed to.
-- Returns nothing when all is well; otherwise the first problem found.
create or replace function clinicdb.verify_audit(p_from bigint default 1, p_to bigint default null)
returns table (block_no bigint, problem text, audit_id bigint, detail text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
as $$
declare
    v_prev bytea;
    v_expect bigint := p_from;
    v_block record;
    v_first record;
    v_last record;
    v_exp_ids bigint[];
    v_exp_digests bytea[];
    v_exp_blocks bigint[];
    v_act_ids bigint[];
    v_act_digests bytea[];
    v_act_txids bigint[];
    v_i integer;
    v_n integer;
    v_id bigint;
    v_kind text;
    v_row record;
begin
    p_to := coalesce(p_to, (select max(s.block_no) from clinicdb.audit_seals s));
    if p_to is null or p_from > p_to then
        return;
    end if;
    if p_from = 1 then
        v_prev := decode(repeat('00', 32), 'hex');
    else
        select s.block_hash into v_prev from clinicdb.audit_seals s where s.block_no = p_from - 1;
        if not found then
            return query select p_from - 1, 'block missing'::text, null::bigint, 'the seal chain has a gap'::text;
            return;
        end if;
    end if;

    -- 1. The chain: contiguous numbers, links, digests and hashes.
    for v_block in select s.* from clinicdb.audit_seals s where s.block_no between p_from and p_to order by s.block_no loop
        if v_block.block_no <> v_expect then
            return query select v_expect, 'block missing'::text, null::bigint, 'the seal chain has a gap'::text;
            return;
        end if;
        if v_block.prev_hash <> v_prev then
            return query select v_block.block_no, 'chain broken'::text, null::bigint,
                'prev_hash does not match the previous block''s hash (a block was altered or replaced)'::text;
            return;
        end if;
        if v_block.row_ids is not null and v_block.rows_digest <> (
            select sha256(string_agg(int8send(u.id) || int4send(u.month) || u.digest, ''::bytea order by u.ord))
              from unnest(v_block.row_ids, v_block.row_months, v_block.row_digests) with ordinality as u(id, month, digest, ord)) then
            return query select v_block.block_no, 'block altered'::text, null::bigint,
                'the stored row digests do not match rows_digest'::text;
            return;
        end if;
        if v_block.block_hash <> clinicdb.audit_block_hash(v_prev, v_block.block_no, v_block.lo_txid, v_block.lo_id,
                                                          v_block.hi_txid, v_block.hi_id, v_block.row_count,
                                                          v_block.rows_digest) then
            return query select v_block.block_no, 'block altered'::text, null::bigint,
                'block_hash does not match its contents'::text;
            return;
        end if;
        v_prev := v_block.block_hash;
        v_expect := v_expect + 1;
    end loop;
    if v_expect <= p_to then
        return query select v_expect, 'block missing'::text, null::bigint, 'the seal chain has a gap'::text;
        return;
    end if;

    -- 2. The rows: what the blocks committed to (minus pruned months) against
    -- every row now in their key ranges, in (txid, id) order.
    select s.* into v_first from clinicdb.audit_seals s where s.block_no = p_from;
    select s.* into v_last from clinicdb.audit_seals s where s.block_no = p_to;
    -- Each side is sorted once in a subquery and aggregated in that order
    -- (an ORDER BY per aggregate would sort once per array).
    select coalesce(array_agg(e.id), '{}'), coalesce(array_agg(e.digest), '{}'), coalesce(array_agg(e.block_no), '{}')
      into v_exp_ids, v_exp_digests, v_exp_blocks
      from (select u.id, u.digest, s.block_no
              from clinicdb.audit_seals s
             cross join lateral unnest(s.row_ids, s.row_months, s.row_digests) with ordinality as u(id, month, digest, ord)
             where s.block_no between p_from and p_to
               and u.month not in (select clinicdb.audit_month(pm.month::timestamp at time zone 'UTC')
                                     from clinicdb.audit_pruned_months pm)
             order by s.block_no, u.ord) e;
    select coalesce(array_agg(r.id), '{}'), coalesce(array_agg(r.digest), '{}'), coalesce(array_agg(r.txid), '{}')
      into v_act_ids, v_act_digests, v_act_txids
      from (select a.id, a.txid, clinicdb.audit_row_digest(a) as digest
              from clinicdb.audit_log a
             where a.txid >= v_first.lo_txid and a.txid <= v_last.hi_txid
               and (a.txid, a.id) >= (v_first.lo_txid, v_first.lo_id)
               and (a.txid, a.id) < (v_last.hi_txid, v_last.hi_id)
             order by a.txid, a.id) r;
    if v_exp_ids = v_act_ids and v_exp_digests = v_act_digests then
        return;
    end if;

    -- Something differs: find the first position and say what it is.
    v_n := greatest(cardinality(v_exp_ids), cardinality(v_act_ids));
    v_i := 1;
    while v_i <= v_n
          and v_exp_ids[v_i] is not distinct from v_act_ids[v_i]
          and v_exp_digests[v_i] is not distinct from v_act_digests[v_i] loop
        v_i := v_i + 1;
    end loop;
    if v_exp_ids[v_i] is not null and v_exp_ids[v_i] = v_act_ids[v_i] and v_act_ids[v_i + 1] = v_act_ids[v_i] then
        -- Two rows with one id, the first not the sealed one: a forged copy.
        v_kind := 'row inserted';
        v_id := v_act_ids[v_i];
    elsif v_exp_ids[v_i] is not null and v_exp_ids[v_i] = v_act_ids[v_i] then
        v_kind := 'row altered';
        v_id := v_act_ids[v_i];
    elsif v_exp_ids[v_i] is null
          or (v_act_ids[v_i] is not null and v_exp_ids[v_i] = any (v_act_ids[v_i + 1:])) then
        v_kind := 'row inserted';
        v_id := v_act_ids[v_i];
    else
        v_kind := 'row deleted';
        v_id := v_exp_ids[v_i];
    end if;
    if v_kind = 'row inserted' then
        select s.block_no into v_block from clinicdb.audit_seals s
         where (v_act_txids[v_i], v_id) >= (s.lo_txid, s.lo_id) and (v_act_txids[v_i], v_id) < (s.hi_txid, s.hi_id);
        block_no := v_block.block_no;
    else
        block_no := v_exp_blocks[v_i];
    end if;
    problem := v_kind;
    audit_id := v_id;
    select a.table_name, a.row_id, a.action, a.logged_at into v_row
      from clinicdb.audit_log a
     where a.id = v_id and a.txid >= v_first.lo_txid and a.txid <= v_last.hi_txid
     limit 1;
    if found then
        detail := format('audit row %s (%s %s %s at %s)', v_id, v_row.action, v_row.table_name,
                         coalesce(v_row.row_id, '-'), v_row.logged_at);
    else
        detail := format('audit row %s is missing', v_id);
    end if;
    return next;
end
$$;
comment on function clinicdb.verify_audit(bigint, bigint) is
    'clinicdb: recompute the seal chain and rows of blocks from..to; no rows means intact, else the first problem.';
revoke execute on function clinicdb.verify_audit(bigint, bigint) from public;
grant execute on function clinicdb.verify_audit(bigint, bigint) to clinicdb_owner, clinicdb_auditor;
-- ---- sql/functions/audit_partitions.sql (prune_audit), as 0004.audit froze it ----
create or replace function clinicdb.prune_audit(p_retention interval default interval '2555 days',
                                                p_dry_run boolean default true)
returns table (partition_name text, range_from timestamptz, range_to timestamptz, row_count bigint, action text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_part record;
    v_cutoff timestamptz;
    v_rows bigint;
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
        execute format('alter table clinicdb.audit_log detach partition %s', v_part.partition_name);
        execute format('drop table %s', v_part.partition_name);
        insert into clinicdb.audit_pruned_months (month, partition_name, row_count)
        values ((v_part.range_from at time zone 'UTC')::date, v_part.partition_name, v_rows)
        on conflict (month) do update set row_count = clinicdb.audit_pruned_months.row_count + excluded.row_count,
                                          pruned_at = now(), pruned_by = session_user;
        -- Blocks whose every row is now pruned keep only rows_digest, which
        -- still anchors the chain; their per-row arrays are no longer needed.
        update clinicdb.audit_seals s
           set row_ids = null, row_months = null, row_digests = null
         where s.row_months is not null
           and not exists (select 1 from unnest(s.row_months) m
                            where m not in (select clinicdb.audit_month(pm.month::timestamp at time zone 'UTC')
                                              from clinicdb.audit_pruned_months pm));
        insert into clinicdb.audit_log (clinic_id, table_name, action, new_values)
        values (null, v_part.partition_name, 'prune',
                jsonb_build_object('rows', v_rows, 'from', v_part.range_from, 'to', v_part.range_to,
                                   'retention', p_retention::text));
        action := 'dropped';
        return next;
    end loop;
end
$$;
comment on function clinicdb.prune_audit(interval, boolean) is
    'clinicdb: drop whole audit partitions older than the retention (default 2555 days); dry_run (default) only lists them.';
revoke execute on function clinicdb.prune_audit(interval, boolean) from public;
grant execute on function clinicdb.prune_audit(interval, boolean) to clinicdb_owner;
-- ---- migration only: the rows after the cut-over sealed again, into the global chain ----
select count(*) from clinicdb.seal_audit();
reset role;
