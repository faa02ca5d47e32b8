-- Tamper evidence, one chain per clinic. seal_audit() chains each clinic's
-- final audit rows (and, apart, the rows without a clinic) into hashed
-- blocks, each committing to the previous block of its own chain;
-- verify_audit() recomputes them and names every altered, deleted or
-- inserted row, even when a superuser made the change, with its clinic and
-- block. Rows of transactions still running are never sealed (that sealing
-- never blocks writers is proven in tests/py/test_audit_cli.py).
--
-- The test runs in one transaction, which is still running while it seals:
-- so the rows it seals are written with the txids of finished transactions
-- (as a superuser can), exactly as old committed rows look to the sealer.
begin;
select plan(19);

\set c1 '''11111111-1111-1111-1111-111111111111'''
\set c2 '''22222222-2222-2222-2222-222222222222'''
\set none '''00000000-0000-0000-0000-000000000000'''

-- Twelve rows: four of clinic 1, four of clinic 2, four without a clinic.
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
select 3 + g / 4, case g % 3 when 0 then :c1::uuid when 1 then :c2::uuid end, now() - interval '1 minute',
       'public.patients', 'row-' || g, 'access', 'sealed ' || g
  from generate_series(1, 12) g;
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
values (4, :c1, now() - interval '1 minute', 'public.patients', 'row-13', 'access', 'sealed 13');
-- A row of this (running) transaction.
insert into clinicdb.audit_log (clinic_id, table_name, row_id, action, purpose)
values (:c1, 'public.patients', 'row-new', 'access', 'running');

select results_eq($$select clinic_id, block_no, row_count from clinicdb.seal_audit(4, 1, interval '0')$$,
                  format('values (%L::uuid, 1::bigint, 4), (%L::uuid, 1::bigint, 4), (%L::uuid, 2::bigint, 1), '
                         '(%L::uuid, 1::bigint, 4)', :none, :c1, :c1, :c2),
                  'each clinic''s rows, and the rows without a clinic, are sealed into their own chain');
select is((select unsealed_rows from clinicdb.audit_seal_status()), 1::bigint,
          'the row of a transaction still running is not sealed');
select is((select count(*)::int from clinicdb.seal_audit(4, 1, interval '0')), 0,
          'sealing again with nothing new adds no block');
select is_empty('select * from clinicdb.verify_audit()', 'verify finds untouched chains intact');
select ok(bool_and(links), 'each block commits to the previous block of its own chain, never to another clinic''s')
  from (select prev_hash = coalesce(lag(block_hash) over (partition by clinic_id order by block_no),
                                    decode(repeat('00', 32), 'hex')) as links
          from clinicdb.audit_seals) x;
select results_eq($$select clinic_ids, block_nos from clinicdb.audit_seal_rounds order by round_no desc limit 1$$,
                  format('values (array[%L, %L, %L]::uuid[], array[1, 2, 1]::bigint[])', :none, :c1, :c2),
                  'the round names the new head of every chain it extended');

select id as victim from clinicdb.audit_log where purpose = 'sealed 6' \gset
select id as victim_deleted from clinicdb.audit_log where purpose = 'sealed 7' \gset

-- Altered by a superuser (who turned the append-only guard off).
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
update clinicdb.audit_log set purpose = 'harmless' where id = :victim;
select results_eq('select clinic_id, block_no, problem, audit_id from clinicdb.verify_audit()',
                  format('values (%L::uuid, 1::bigint, %L, %s::bigint)', :c1, 'row altered', :victim),
                  'an edited audit row is reported as altered, by id, clinic and block');
select matches((select detail from clinicdb.verify_audit()), 'public\.patients row-6 .* block 1 of clinic 1111',
               'the report names the table and row the audit row is about, and the block of its clinic');
rollback to savepoint tamper;

-- Deleted.
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
delete from clinicdb.audit_log where id = :victim_deleted;
select results_eq('select clinic_id, problem, audit_id from clinicdb.verify_audit()',
                  format('values (%L::uuid, %L, %s::bigint)', :c2, 'row deleted', :victim_deleted),
                  'a deleted audit row is reported as deleted, by id and clinic');
rollback to savepoint tamper;

-- Inserted inside a sealed range, with a fresh id and with a copied id.
savepoint tamper;
insert into clinicdb.audit_log (id, txid, clinic_id, logged_at, table_name, row_id, action, purpose)
values (999999, 4, :c2, now() - interval '1 minute', 'public.patients', 'row-x', 'access', 'forged');
select results_eq('select clinic_id, problem, audit_id from clinicdb.verify_audit()',
                  format('values (%L::uuid, %L, 999999::bigint)', :c2, 'row inserted'),
                  'an inserted audit row is reported as inserted, in its clinic''s chain');
rollback to savepoint tamper;
savepoint tamper;
insert into clinicdb.audit_log (id, txid, clinic_id, logged_at, table_name, row_id, action, purpose)
values (:victim, 4, :c1, now() - interval '1 minute', 'public.patients', 'row-6', 'access', 'forged copy');
select is((select problem from clinicdb.verify_audit()), 'row inserted',
          'a forged row that copies an existing id is still reported as inserted');
rollback to savepoint tamper;
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
update clinicdb.audit_log set clinic_id = :c2 where id = :victim;
select set_eq('select clinic_id, problem, audit_id from clinicdb.verify_audit()',
              format('values (%L::uuid, %L, %s::bigint), (%L::uuid, %L, %s::bigint)', :c1, 'row deleted', :victim,
                     :c2, 'row inserted', :victim),
              'a row moved to another clinic is missing from one chain and inserted into the other');
rollback to savepoint tamper;

-- The chains themselves.
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
update clinicdb.audit_seals set row_digests[1] = sha256('x') where clinic_id = :c2 and block_no = 1;
select results_eq('select clinic_id, block_no, problem from clinicdb.verify_audit() where scope = ''chain''',
                  format('values (%L::uuid, 1::bigint, %L)', :c2, 'block altered'),
                  'an edited seal block is reported, by clinic and number');
rollback to savepoint tamper;
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
select encode(prev_hash, 'hex') as lost_hash from clinicdb.audit_seals where clinic_id = :c1 and block_no = 2 \gset
delete from clinicdb.audit_seals where clinic_id = :c1 and block_no = 1;
select results_eq('select clinic_id, block_no, problem from clinicdb.verify_audit() where scope = ''chain''',
                  format('values (%L::uuid, 1::bigint, %L)', :c1, 'block missing'),
                  'a deleted seal block is reported, by clinic and number');
select matches((select detail from clinicdb.verify_audit() where problem = 'block missing'),
               'block 1 of clinic 1111.* is missing: its hash was ' || :'lost_hash' || ' .*Restore it from a backup',
               'the report gives the missing block''s hash, from the next block''s prev_hash, and what to do');
rollback to savepoint tamper;
savepoint tamper;
select set_config('clinicdb.audit_maintenance', 'on', true);
update clinicdb.audit_seals set prev_hash = sha256('x'), block_hash = clinicdb.audit_chain_block_hash(
    sha256('x'), clinic_id, block_no, kind, lo_txid, lo_id, hi_txid, hi_id, row_count, rows_digest)
 where clinic_id = :c1 and block_no = 2;
select results_eq('select clinic_id, block_no, problem from clinicdb.verify_audit() where scope = ''chain''',
                  format('values (%L::uuid, 2::bigint, %L)', :c1, 'chain broken'),
                  'a block re-hashed on its own no longer links to its predecessor');
rollback to savepoint tamper;

-- One clinic's chain verifies on its own, as on the shard that holds it.
select is_empty(format('select * from clinicdb.verify_audit_chains(%L, %L)', :c2, :c2),
                'the chain of one clinic verifies on its own');

-- The auditor can verify; the application cannot seal.
select clinicdb_tap.authenticate_as('clinicdb_auditor');
select is_empty('select * from clinicdb.verify_audit()', 'the auditor can run verification');
select clinicdb_tap.authenticate_as_app(:c1);
select throws_ok('select * from clinicdb.seal_audit()', '42501', 'permission denied for function seal_audit',
                 'the application cannot seal');
select clinicdb_tap.clear_authentication();

select * from finish();
rollback;
