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
