-- Partitions and retention. A row for a month with no partition lands in
-- the default partition (never refused); ensure_audit_partitions() then
-- creates that month's partition and moves the row into it, unchanged.
-- prune_audit() drops only whole partitions that ended before the retention
-- period, says first what it would do (dry run), and leaves a row of its own.
begin;
select plan(16);

select ok(to_regclass('clinicdb.audit_log_y' || to_char(now() at time zone 'UTC', 'YYYY"m"MM')) is not null,
          'this month''s partition exists after migrating');
select ok(to_regclass('clinicdb.audit_log_y' || to_char((now() + interval '3 months') at time zone 'UTC', 'YYYY"m"MM')) is not null,
          'partitions exist three months ahead');
select is((select relowner::regrole::text from pg_class where oid = 'clinicdb.audit_log_default'::regclass),
          'clinicdb_owner', 'partitions are owned by clinicdb_owner');

-- A row far in the future (clock skew, or a month nobody prepared): five
-- years from today, whenever the suite runs.
select to_char((now() + interval '5 years') at time zone 'UTC', 'YYYY"m"MM') as future_month \gset
insert into clinicdb.audit_log (logged_at, table_name, action, purpose)
values (date_trunc('month', now() + interval '5 years') + interval '16 days 10 hours', 'public.patients', 'access',
        'future row');
select is((select tableoid::regclass::text from clinicdb.audit_log where purpose = 'future row'),
          'clinicdb.audit_log_default', 'a row for a month without a partition lands in the default partition');
select id as future_id from clinicdb.audit_log where purpose = 'future row' \gset

select results_eq(format($$select partition_name, moved_rows from clinicdb.ensure_audit_partitions(0)
                           where partition_name = 'clinicdb.audit_log_y%s'$$, :'future_month'),
                  format($$values ('clinicdb.audit_log_y%s', 1::bigint)$$, :'future_month'),
                  'ensure_audit_partitions creates the month''s partition and moves its row there');
select is((select tableoid::regclass::text from clinicdb.audit_log where purpose = 'future row'),
          'clinicdb.audit_log_y' || :'future_month', 'the row now lives in its month''s partition');
select is((select id from clinicdb.audit_log where purpose = 'future row'), :future_id::bigint,
          'the moved row is the same row (same id)');
select is((select count(*)::int from clinicdb.audit_log_default), 0, 'the default partition is empty again');
select is((select count(*)::int from clinicdb.ensure_audit_partitions(3)), 0,
          'ensure_audit_partitions is idempotent');
select throws_ok('select clinicdb.ensure_audit_partitions(-1)', '22023', null, 'a negative months_ahead is refused');

-- Retention: an old month, a month inside retention, and this month. The
-- old rows carry the txid of a finished transaction, as rows written years
-- ago do: prune_audit seals a month before dropping it, and the rows of a
-- transaction still running (this test's) cannot be sealed
-- (tests/pgtap/audit/10-prune-sealed.sql).
insert into clinicdb.audit_log (txid, logged_at, table_name, action, purpose) values
    (3, now() - interval '2600 days', 'public.patients', 'access', 'old row'),
    (3, now() - interval '2000 days', 'public.patients', 'access', 'kept row');
select count(*) from clinicdb.ensure_audit_partitions(0);
select set_eq($$select partition_name from clinicdb.prune_audit(interval '2555 days', true)$$,
              $$select 'clinicdb.audit_log_y' || to_char((now() - interval '2600 days') at time zone 'UTC', 'YYYY"m"MM')$$,
              'the dry run lists only partitions that ended before the retention period');
select is((select count(*)::int from clinicdb.audit_log where purpose = 'old row'), 1, 'the dry run drops nothing');
select results_eq($$select action, row_count from clinicdb.prune_audit(interval '2555 days', false)$$,
                  $$values ('dropped', 1::bigint)$$, 'prune drops the expired partition and counts its rows');
select is((select count(*)::int from clinicdb.audit_log where purpose in ('kept row', 'future row')), 2,
          'rows inside the retention period are untouched');
select is((select new_values ->> 'rows' from clinicdb.audit_log where action = 'prune'), '1',
          'pruning leaves an audit row of its own');
select throws_ok($$select * from clinicdb.prune_audit(interval '1 hour', false)$$, '22023', null,
                 'a retention shorter than a day is refused');

select * from finish();
rollback;
