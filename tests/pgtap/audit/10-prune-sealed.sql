-- Retention is sealed into the chains (#13 item 5). prune_audit() drops a
-- month only once every row of it is sealed and matches its seal, and
-- writes into each chain that held rows of the month a sealed prune record
-- (the month, how many of the chain's rows, a digest of them, linked to the
-- chain's last block). Verification excuses a month only by such a record:
-- a TRUNCATE or a dropped partition is reported by the month's name even
-- with a row forged into clinicdb.audit_pruned_months, and a forged prune
-- record is reported.
--
-- As in 07-seal-verify.sql, the rows carry txids of finished transactions.
begin;
select plan(16);

\set c1 '''11111111-1111-1111-1111-111111111111'''
\set c2 '''22222222-2222-2222-2222-222222222222'''
\set none '''00000000-0000-0000-0000-000000000000'''

-- A month past retention: three rows of clinic 1, two of clinic 2, one
-- without a clinic; and a month inside retention.
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
select 3 + g, case when g <= 3 then :c1::uuid when g <= 5 then :c2::uuid end, now() - interval '2600 days',
       'public.patients', 'old-' || g, 'access', 'old ' || g
  from generate_series(1, 6) g;
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
values (12, :c1, now() - interval '2000 days', 'public.patients', 'kept', 'access', 'kept');
select count(*) from clinicdb.ensure_audit_partitions(0);
select count(*) from clinicdb.seal_audit(4, 1, interval '0');
select to_char((now() - interval '2600 days') at time zone 'UTC', 'YYYY-MM') as old_month,
       'clinicdb.audit_log_y' || to_char((now() - interval '2600 days') at time zone 'UTC', 'YYYY"m"MM') as old_part,
       clinicdb.audit_month(now() - interval '2600 days') as old_m,
       clinicdb.audit_month(now() - interval '2000 days') as kept_m \gset

-- A sealed month truncated, with the pruned-months table forged to match.
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
truncate :old_part;
insert into clinicdb.audit_pruned_months (month, partition_name, row_count)
values ((:'old_month' || '-01')::date, :'old_part', 6);
select results_eq('select problem, row_count, detail from clinicdb.verify_audit()',
                  format('values (%L, 6::bigint, %L)', 'month missing',
                         format('audit month %s (%s): 6 sealed rows missing and no sealed prune record',
                                :'old_month', :'old_part')),
                  'a truncated sealed month is reported by name, whatever clinicdb.audit_pruned_months says');
rollback to savepoint tamper;

-- A sealed month's partition dropped.
savepoint tamper;
alter table clinicdb.audit_log detach partition :old_part;
drop table :old_part;
select results_eq('select problem, row_count from clinicdb.verify_audit()', $$values ('month missing', 6::bigint)$$,
                  'a dropped partition of a sealed month is reported');
rollback to savepoint tamper;

-- Prune refuses a month with a row nothing seals yet (this running transaction's).
savepoint tamper;
insert into clinicdb.audit_log (clinic_id, logged_at, table_name, row_id, action, purpose)
values (:c1, now() - interval '2600 days', 'public.patients', 'open', 'access', 'still running');
select throws_ok($$select * from clinicdb.prune_audit(interval '2555 days', false)$$, '55000',
                 format('audit month %s (%s): 1 rows are not sealed yet, so it cannot be pruned', :'old_month',
                        :'old_part'),
                 'prune refuses a month with rows not sealed yet, and says which month');
rollback to savepoint tamper;

-- Prune refuses a month whose rows differ from their seals.
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
update clinicdb.audit_log set purpose = 'rewritten' where purpose = 'old 2';
select throws_ok($$select * from clinicdb.prune_audit(interval '2555 days', false)$$, '55000',
                 format('audit month %s (%s): its rows differ from what was sealed, so pruning it would destroy the '
                        'evidence', :'old_month', :'old_part'),
                 'prune refuses to destroy a month whose rows were tampered with');
rollback to savepoint tamper;

select results_eq($$select action, row_count from clinicdb.prune_audit(interval '2555 days', false)$$,
                  $$values ('dropped', 6::bigint)$$, 'prune drops the sealed month');
select results_eq($$select clinic_id, kind, months[1], month_rows[1] from clinicdb.audit_seals
                     where kind <> 'rows' order by clinic_id$$,
                  format('values (%L::uuid, %L, %s, 1), (%L::uuid, %L, %s, 3), (%L::uuid, %L, %s, 2)',
                         :none, 'prune', :old_m, :c1, 'prune', :old_m, :c2, 'prune', :old_m),
                  'each chain that held rows of the month gets a sealed prune record with its own count');
select ok(bool_and(p.prev_hash = b.block_hash), 'each prune record carries the hash of its chain''s last block')
  from clinicdb.audit_seals p
  join clinicdb.audit_seals b on b.clinic_id = p.clinic_id and b.block_no = p.block_no - 1
 where p.kind = 'prune';
select is((select month_digests[1] from clinicdb.audit_seals where kind = 'prune' and clinic_id = :c1),
          (select sha256(string_agg(int8send(s.block_no) || int4send(u.n) || u.d, ''::bytea order by s.block_no))
             from clinicdb.audit_seals s, unnest(s.months, s.month_rows, s.month_digests) u(m, n, d)
            where s.clinic_id = :c1 and s.kind = 'rows' and u.m = :old_m),
          'a prune record''s digest is taken over the sealed month digests of the rows it removed');
select ok(not exists (select 1 from clinicdb.audit_seals where :old_m = any (row_months))
          and exists (select 1 from clinicdb.audit_seals where kind = 'rows' and :old_m = any (months)),
          'the month''s per-row entries leave the blocks; their hashed month summaries stay');
select results_eq($$select clinic_ids from clinicdb.audit_seal_rounds order by round_no desc limit 1$$,
                  format('values (array[%L, %L, %L]::uuid[])', :none, :c1, :c2),
                  'a round names the chains the prune extended');
select is_empty('select * from clinicdb.verify_audit()', 'a month pruned by retention verifies');
delete from clinicdb.audit_pruned_months;
select is_empty('select * from clinicdb.verify_audit()',
                'verification does not read clinicdb.audit_pruned_months (emptying it changes nothing)');

-- A prune record whose count was changed and re-hashed.
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
update clinicdb.audit_seals
   set month_rows = array[2], row_count = 2, rows_digest = clinicdb.audit_summary_digest(months, array[2], month_digests)
 where clinic_id = :c1 and kind = 'prune';
update clinicdb.audit_seals
   set block_hash = clinicdb.audit_chain_block_hash(prev_hash, clinic_id, block_no, kind, lo_txid, lo_id, hi_txid,
                                                    hi_id, row_count, rows_digest)
 where clinic_id = :c1 and kind = 'prune';
select results_eq($$select clinic_id, problem from clinicdb.verify_audit() where scope = 'chain'$$,
                  format('values (%L::uuid, %L)', :c1, 'prune record forged'),
                  'a prune record with a wrong count is reported as forged');
select matches((select detail from clinicdb.verify_audit() where problem = 'prune record forged'),
               'it says 2 rows, they hold 3', 'the report says what the record claims and what the blocks hold');
rollback to savepoint tamper;

-- A well-formed prune record appended outside prune_audit (for the month
-- inside retention, by someone who can compute every hash).
savepoint tamper;
select count(*) from clinicdb._audit_append_block(
    :c1, 'prune', null, null, array[:kept_m],
    (select array[sum(u.n)::integer] from clinicdb.audit_seals s, unnest(s.months, s.month_rows) u(m, n)
      where s.clinic_id = :c1 and s.kind = 'rows' and u.m = :kept_m),
    (select array[sha256(string_agg(int8send(s.block_no) || int4send(u.n) || u.d, ''::bytea order by s.block_no))]
       from clinicdb.audit_seals s, unnest(s.months, s.month_rows, s.month_digests) u(m, n, d)
      where s.clinic_id = :c1 and s.kind = 'rows' and u.m = :kept_m));
select results_eq('select clinic_id, problem from clinicdb.verify_audit()',
                  format('values (%L::uuid, %L)', :c1, 'block not in a round'),
                  'a prune record appended outside the sealing functions is reported');
rollback to savepoint tamper;

select is((select count(*)::int from clinicdb.audit_log where action = 'prune'), 1,
          'pruning leaves an audit row of its own');

select * from finish();
rollback;
