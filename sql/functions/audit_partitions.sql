-- Partitions of clinicdb.audit_log: one per calendar month (UTC), named
-- clinicdb.audit_log_yYYYYmMM, plus clinicdb.audit_log_default.
--
--   * clinicdb.audit_partitions(): what exists (for `clinicdb audit partitions`).
--   * clinicdb.ensure_audit_partitions(months_ahead): creates this month's
--     and the next months' partitions, and a partition for every month that
--     has rows in the default partition, moving those rows into it (same
--     rows, same ids: the seal chain is unaffected). Schedule it daily.
--   * clinicdb.prune_audit(retention, dry_run), which drops old partitions
--     and seals what it drops: sql/functions/audit_prune.sql.
--
-- SECURITY INVOKER, granted to clinicdb_owner: the owner or a superuser runs
-- them (by hand, from the CLI or from a scheduler). Partitions they create
-- are handed to clinicdb_owner whoever runs them.

create or replace function clinicdb.audit_partitions()
returns table (partition_name text, range_from timestamptz, range_to timestamptz, is_default boolean,
               estimated_rows bigint, total_bytes bigint)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select c.oid::regclass::text,
           m.month_start,
           m.month_start + interval '1 month',
           c.relname = 'audit_log_default',
           greatest(c.reltuples, 0)::bigint,
           pg_total_relation_size(c.oid)
      from pg_inherits i
      join pg_class c on c.oid = i.inhrelid
      cross join lateral (
          select case when c.relname ~ '^audit_log_y[0-9]{4}m[0-9]{2}$'
                      then make_timestamptz(substr(c.relname, 12, 4)::int, substr(c.relname, 17, 2)::int, 1, 0, 0, 0, 'UTC')
                 end as month_start
      ) m
     where i.inhparent = 'clinicdb.audit_log'::regclass
     order by m.month_start nulls last
$$;
comment on function clinicdb.audit_partitions() is
    'clinicdb: the audit trail''s partitions with their month range (NULL for the default partition).';
revoke execute on function clinicdb.audit_partitions() from public;
grant execute on function clinicdb.audit_partitions() to clinicdb_owner, clinicdb_auditor;

-- The month (UTC) an audit row belongs to, as a number: year * 12 + month - 1.
create or replace function clinicdb.audit_month(p_at timestamptz)
returns integer
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select (extract(year from p_at at time zone 'UTC') * 12 + extract(month from p_at at time zone 'UTC') - 1)::integer
$$;
comment on function clinicdb.audit_month(timestamptz) is
    'clinicdb: the UTC calendar month of a time as year * 12 + month - 1 (the unit of audit partitions).';
grant execute on function clinicdb.audit_month(timestamptz) to public;

create or replace function clinicdb.ensure_audit_partitions(p_months_ahead integer default 3)
returns table (partition_name text, range_from timestamptz, range_to timestamptz, moved_rows bigint)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_month timestamptz;
    v_name text;
    v_moved bigint;
    v_this_month timestamptz := date_trunc('month', now() at time zone 'UTC') at time zone 'UTC';
begin
    if p_months_ahead is null or p_months_ahead < 0 or p_months_ahead > 120 then
        raise exception 'months_ahead must be between 0 and 120, not %', coalesce(p_months_ahead::text, 'NULL')
            using errcode = 'invalid_parameter_value';
    end if;
    -- Rows cannot be routed to the default partition while it is emptied of
    -- a month and that month's partition attached; other months are unaffected.
    lock table clinicdb.audit_log_default in share row exclusive mode;

    for v_month in
        select m from generate_series(v_this_month, v_this_month + make_interval(months => p_months_ahead),
                                      interval '1 month') m
        union
        select distinct date_trunc('month', d.logged_at at time zone 'UTC') at time zone 'UTC'
          from clinicdb.audit_log_default d
        order by 1
    loop
        v_name := format('audit_log_y%sm%s', to_char(v_month at time zone 'UTC', 'YYYY'),
                         to_char(v_month at time zone 'UTC', 'MM'));
        continue when to_regclass('clinicdb.' || v_name) is not null;

        execute format('create table clinicdb.%I (like clinicdb.audit_log including defaults including constraints)',
                       v_name);
        -- A move, not a removal: the guard lets this transaction take the
        -- month's rows out of the default partition to put them back here.
        perform set_config('clinicdb.audit_maintenance', 'on', true);
        execute format('with moved as (delete from clinicdb.audit_log_default where logged_at >= $1 and logged_at < $2 '
                       'returning *) insert into clinicdb.%I select * from moved', v_name)
          using v_month, v_month + interval '1 month';
        get diagnostics v_moved = row_count;
        perform set_config('clinicdb.audit_maintenance', '', true);
        execute format('alter table clinicdb.audit_log attach partition clinicdb.%I for values from (%L) to (%L)',
                       v_name, v_month, v_month + interval '1 month');
        execute format('alter table clinicdb.%I owner to clinicdb_owner', v_name);
        execute format('revoke all on clinicdb.%I from public', v_name);
        execute format('create trigger audit_log_guard_truncate before truncate on clinicdb.%I '
                       'for each statement execute function clinicdb.audit_log_guard()', v_name);
        execute format('comment on table clinicdb.%I is %L', v_name,
                       format('clinicdb: audit rows of %s (UTC).', to_char(v_month at time zone 'UTC', 'YYYY-MM')));

        partition_name := 'clinicdb.' || v_name;
        range_from := v_month;
        range_to := v_month + interval '1 month';
        moved_rows := v_moved;
        return next;
    end loop;
end
$$;
comment on function clinicdb.ensure_audit_partitions(integer) is
    'clinicdb: create monthly audit partitions up to months_ahead, moving matching rows out of the default partition.';
revoke execute on function clinicdb.ensure_audit_partitions(integer) from public;
grant execute on function clinicdb.ensure_audit_partitions(integer) to clinicdb_owner;
