-- Sealing many clinics without a flood of tiny blocks, and without losing
-- the guarantee that a row added later below the sealed horizon is caught.
-- A round seals a chain once it holds min_rows final rows or its oldest
-- unsealed row is max_wait old; the others wait, and the round's floor
-- (scan_from_txid) stays at the first row left waiting. Every row below the
-- floor is sealed; a row that appears there later is reported, and so is a
-- row added below a chain's head, whatever the other chains do.
--
-- As in 07-seal-verify.sql, the rows carry txids of finished transactions.
begin;
select plan(13);

\set c1 '''11111111-1111-1111-1111-111111111111'''
\set c2 '''22222222-2222-2222-2222-222222222222'''
\set c3 '''33333333-3333-3333-3333-333333333333'''
\set none '''00000000-0000-0000-0000-000000000000'''

-- Clinic 1 is busy (5 rows), clinic 2 quiet but its row is two hours old,
-- the no-clinic chain has one fresh row written at txid 10.
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
select 3 + g, :c1::uuid, now() - interval '1 minute', 'public.patients', 'busy-' || g, 'access', 'busy ' || g
  from generate_series(1, 5) g;
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
values (4, :c2, now() - interval '2 hours', 'public.patients', 'quiet', 'access', 'quiet'),
       (10, null, now() - interval '1 minute', 'clinicdb.audit_log_y2019m01', null, 'prune', null);

select results_eq($$select clinic_id, row_count from clinicdb.seal_audit(2, 3, interval '1 hour')$$,
                  format('values (%L::uuid, 2), (%L::uuid, 2), (%L::uuid, 1), (%L::uuid, 1)', :c1, :c1, :c1, :c2),
                  'a round seals the chains with enough rows or an old enough row, and leaves the others waiting');
select is((select scan_from_txid from clinicdb.audit_seal_rounds order by round_no desc limit 1), 10::bigint,
          'the round''s floor is the first row left waiting');
select is((select count(*)::int from clinicdb.seal_audit(100, 3, interval '1 hour')), 0,
          'a chain below both thresholds keeps waiting');
select is((select count(*)::int from clinicdb._audit_pending(null) where chain = :none), 1,
          'its row is reported as not sealed yet');

-- Below clinic 1's head, while the no-clinic chain lags behind it.
savepoint tamper;
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
values (5, :c1, now() - interval '1 minute', 'public.patients', 'late', 'access', 'late');
select results_eq($$select clinic_id, problem from clinicdb.verify_audit()$$,
                  format('values (%L::uuid, %L)', :c1, 'row inserted'),
                  'a row added below a chain''s head is caught while other chains lag');
rollback to savepoint tamper;

-- Below the floor, for a clinic that has no chain yet.
savepoint tamper;
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
values (5, :c3, now() - interval '1 minute', 'public.patients', 'under', 'access', 'under the floor');
select results_eq($$select clinic_id, problem from clinicdb.verify_audit()$$,
                  format('values (%L::uuid, %L)', :c3, 'row unsealed'),
                  'a row that appears below the floor, where every row was sealed, is reported');
select matches((select detail from clinicdb.verify_audit()), 'is in no block .* below the sealing floor',
               'the report says why it is suspect');
rollback to savepoint tamper;

-- No threshold: the waiting chain is sealed too, from where the chains begin.
select results_eq($$select clinic_id, row_count from clinicdb.seal_audit(100, 1, interval '0')$$,
                  format('values (%L::uuid, 1)', :none),
                  'with min_rows 1 and max_wait 0 every chain with a final row is sealed');
select is((select (s.lo_txid, s.lo_id) = (c.lo_txid, c.lo_id) from clinicdb.audit_seals s, clinicdb.audit_cutover() c
            where s.clinic_id = :none and s.block_no = 1), true,
          'a new chain''s first block starts where the chains begin (the cut-over)');

-- (Rounds after this one continue each chain from its head: proven with
-- real transactions in tests/py/test_audit_cli.py.)
select ok((select bool_and((s.lo_txid, s.lo_id) = (p.hi_txid, p.hi_id))
             from clinicdb.audit_seals s
             join clinicdb.audit_seals p on p.clinic_id = s.clinic_id and p.block_no = s.block_no - 1),
          'each block of a chain starts where the previous block of that chain ends');
select is_empty('select * from clinicdb.verify_audit()', 'every chain verifies');

select throws_ok($$select * from clinicdb.seal_audit(100, 0)$$, '22023', 'min_rows must be 1 or more, not 0',
                 'min_rows below 1 is refused');
select throws_ok($$select * from clinicdb.seal_audit(100, 1, interval '-1 minute')$$, '22023',
                 'max_wait must be an interval of 0 or more, not -00:01:00', 'a negative max_wait is refused');

select * from finish();
rollback;
