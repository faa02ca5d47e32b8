-- Tamper evidence. seal_audit() chains every final audit row into hashed
-- blocks, each committing to the previous; verify_audit() recomputes them
-- and names the first altered, deleted or inserted row, even when a
-- superuser made the change. Dropping an expired partition leaves the rest
-- verifiable. Rows of transactions still running are never sealed (that
-- sealing never blocks writers is proven in tests/py/test_audit_cli.py).
--
-- The test runs in one transaction, which is still running while it seals:
-- so the rows it seals are written with the txids of finished transactions
-- (as a superuser can), exactly as old committed rows look to the sealer.
begin;
select plan(18);

select txid_current() as me \gset
insert into clinicdb.audit_log (txid, logged_at, table_name, row_id, action, purpose)
select 3 + g / 4, now() - interval '1 minute', 'public.patients', 'row-' || g, 'access', 'sealed ' || g
  from generate_series(1, 10) g;
insert into clinicdb.audit_log (txid, logged_at, table_name, row_id, action, purpose)
values (3, now() - interval '2600 days', 'public.patients', 'row-old', 'access', 'sealed old');
select count(*) from clinicdb.ensure_audit_partitions(0);
-- A row of this (running) transaction.
insert into clinicdb.audit_log (table_name, row_id, action, purpose) values ('public.patients', 'row-new', 'access', 'running');

select results_eq($$select block_no, row_count from clinicdb.seal_audit(4)$$,
                  $$values (1::bigint, 4), (2::bigint, 4), (3::bigint, 3)$$,
                  'seal_audit seals the 11 final rows in blocks of at most 4');
select is((select unsealed_rows from clinicdb.audit_seal_status()), 1::bigint,
          'the row of a transaction still running is not sealed');
select is((select count(*)::int from clinicdb.seal_audit(4)), 0, 'sealing again with nothing new adds no block');
select is_empty('select * from clinicdb.verify_audit()', 'verify finds an untouched chain intact');
select ok(bool_and(links), 'each block commits to the previous block''s hash')
  from (select prev_hash = coalesce(lag(block_hash) over (order by block_no), decode(repeat('00', 32), 'hex')) as links
          from clinicdb.audit_seals) x;

select id as victim from clinicdb.audit_log where purpose = 'sealed 5' \gset
select id as victim_deleted from clinicdb.audit_log where purpose = 'sealed 9' \gset

-- Altered by a superuser (who turned the append-only guard off).
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
update clinicdb.audit_log set purpose = 'harmless' where id = :victim;
select results_eq('select block_no, problem, audit_id from clinicdb.verify_audit()',
                  format('values (2::bigint, %L, %s::bigint)', 'row altered', :victim),
                  'an edited audit row is reported as altered, by id and block');
select matches((select detail from clinicdb.verify_audit()), 'public\.patients row-5',
               'the report names the table and row the audit row is about');
rollback to savepoint tamper;

-- Deleted.
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
delete from clinicdb.audit_log where id = :victim_deleted;
select results_eq('select problem, audit_id from clinicdb.verify_audit()',
                  format('values (%L, %s::bigint)', 'row deleted', :victim_deleted),
                  'a deleted audit row is reported as deleted, by id');
rollback to savepoint tamper;

-- Inserted inside the sealed range, with a fresh id and with a copied id.
savepoint tamper;
insert into clinicdb.audit_log (id, txid, logged_at, table_name, row_id, action, purpose)
values (999999, 4, now() - interval '1 minute', 'public.patients', 'row-x', 'access', 'forged');
select results_eq('select problem, audit_id from clinicdb.verify_audit()',
                  $$values ('row inserted', 999999::bigint)$$, 'an inserted audit row is reported as inserted');
rollback to savepoint tamper;
savepoint tamper;
insert into clinicdb.audit_log (id, txid, logged_at, table_name, row_id, action, purpose)
values (:victim, 4, now() - interval '1 minute', 'public.patients', 'row-5', 'access', 'forged copy');
select is((select problem from clinicdb.verify_audit()), 'row inserted',
          'a forged row that copies an existing id is still reported as inserted');
rollback to savepoint tamper;

-- The seal chain itself.
savepoint tamper;
update clinicdb.audit_seals set row_digests[1] = sha256('x') where block_no = 2;
select results_eq('select block_no, problem from clinicdb.verify_audit()', $$values (2::bigint, 'block altered')$$,
                  'an edited seal block is reported');
rollback to savepoint tamper;
savepoint tamper;
delete from clinicdb.audit_seals where block_no = 2;
select results_eq('select block_no, problem from clinicdb.verify_audit()', $$values (2::bigint, 'block missing')$$,
                  'a deleted seal block is reported');
rollback to savepoint tamper;
savepoint tamper;
update clinicdb.audit_seals set prev_hash = sha256('x'), block_hash = clinicdb.audit_block_hash(
    sha256('x'), block_no, lo_txid, lo_id, hi_txid, hi_id, row_count, rows_digest) where block_no = 3;
select results_eq('select block_no, problem from clinicdb.verify_audit()', $$values (3::bigint, 'chain broken')$$,
                  'a block re-hashed on its own no longer links to its predecessor');
rollback to savepoint tamper;

-- Verifying part of the chain, as the CLI does for its progress bar.
select is_empty('select * from clinicdb.verify_audit(2, 3)', 'a range of blocks verifies on its own');

-- Retention: the old month's partition goes, the chain and the rest still verify.
select results_eq($$select action from clinicdb.prune_audit(interval '2555 days', false)$$, $$values ('dropped')$$,
                  'the partition of the old row is dropped by retention');
select is_empty('select * from clinicdb.verify_audit()', 'after pruning, what remains still verifies');
select is((select count(*)::int from clinicdb.audit_pruned_months), 1, 'the pruned month is recorded');

-- The auditor can verify, the application cannot seal or verify.
select clinicdb_tap.authenticate_as('clinicdb_auditor');
select is_empty('select * from clinicdb.verify_audit()', 'the auditor can run verification');
select clinicdb_tap.clear_authentication();

select * from finish();
rollback;
