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
