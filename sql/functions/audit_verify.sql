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
