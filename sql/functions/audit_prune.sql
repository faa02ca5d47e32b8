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
