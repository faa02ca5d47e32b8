-- Verification reports every problem, not only the first (#13 item 6):
-- every missing block or range of blocks (in the middle of a chain or at its
-- end), every vanished month, and every altered, inserted, deleted or
-- unsealed row, listed up to a limit and then counted. A missing block is
-- named by clinic and number, with the hash it had and what to do.
--
-- As in 07-seal-verify.sql, the rows carry txids of finished transactions.
begin;
select plan(8);

\set c1 '''11111111-1111-1111-1111-111111111111'''
\set c2 '''22222222-2222-2222-2222-222222222222'''
\set none '''00000000-0000-0000-0000-000000000000'''

-- Eight rows in each of three chains (txids 11..18), sealed two per block,
-- and two rows of clinic 2 in an old month (txids 19, 20; its fifth block).
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
select 10 + g, c, now() - interval '1 minute', 'public.patients', 'row-' || g, 'access', c::text || ' ' || g
  from generate_series(1, 8) g, unnest(array[:c1::uuid, :c2::uuid, null]) c;
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
select 18 + g, :c2::uuid, now() - interval '2600 days', 'public.patients', 'old-' || g, 'access', 'old ' || g
  from generate_series(1, 2) g;
select count(*) from clinicdb.ensure_audit_partitions(0);
select count(*) from clinicdb.seal_audit(2, 1, interval '0');
select encode(prev_hash, 'hex') as c2_lost from clinicdb.audit_seals where clinic_id = :c2 and block_no = 3 \gset
select encode(prev_hash, 'hex') as none_lost from clinicdb.audit_seals where clinic_id = :none and block_no = 4 \gset
select encode(block_hash, 'hex') as c1_lost from clinicdb.audit_seals where clinic_id = :c1 and block_no = 4 \gset

-- Everything at once.
select set_config('clinicdb.audit_maintenance', 'on', true);
update clinicdb.audit_log set purpose = 'rewritten' where clinic_id = :c1 and txid = 11;
delete from clinicdb.audit_log where clinic_id = :c2 and txid = 17;
insert into clinicdb.audit_log (txid, clinic_id, logged_at, table_name, row_id, action, purpose)
values (11, null, now() - interval '1 minute', 'public.patients', 'forged', 'access', 'forged');
delete from clinicdb.audit_seals where clinic_id = :c1 and block_no = 4;
delete from clinicdb.audit_seals where clinic_id = :c2 and block_no = 2;
delete from clinicdb.audit_seals where clinic_id = :none and block_no in (2, 3);
select 'clinicdb.audit_log_y' || to_char((now() - interval '2600 days') at time zone 'UTC', 'YYYY"m"MM') as old_part \gset
truncate :old_part;

select set_eq($$select scope, clinic_id, block_no, problem from clinicdb.verify_audit() where audit_id is null$$,
              format('values (%L, %L::uuid, 4::bigint, %L), (%L, %L::uuid, 2::bigint, %L), '
                     '(%L, %L::uuid, 2::bigint, %L), (%L, null::uuid, null::bigint, %L)',
                     'round', :c1, 'block missing', 'chain', :c2, 'block missing', 'chain', :none, 'block missing',
                     'month', 'month missing'),
              'every missing block and range, in the middle or at the end of a chain, and the vanished month');
select set_eq($$select problem, clinic_id, count(*)::int from clinicdb.verify_audit()
                 where audit_id is not null group by 1, 2$$,
              format('values (%L, %L::uuid, 1), (%L, %L::uuid, 1), (%L, %L::uuid, 1), (%L, %L::uuid, 2), '
                     '(%L, %L::uuid, 2), (%L, %L::uuid, 4)',
                     'row altered', :c1, 'row deleted', :c2, 'row inserted', :none, 'row unsealed', :c1,
                     'row unsealed', :c2, 'row unsealed', :none),
              'every altered, deleted, inserted row, and every row left without a seal');
select matches((select detail from clinicdb.verify_audit() where scope = 'chain' and clinic_id = :c2),
               '^block 2 of clinic 2222.* is missing: its hash was ' || :'c2_lost'
               || ' \(block 3''s prev_hash\)\. Restore it from a backup of clinicdb\.audit_seals',
               'a missing block is named by clinic and number, with its hash and what to do');
select matches((select detail from clinicdb.verify_audit() where scope = 'chain' and clinic_id = :none),
               '^blocks 2-3 of the no-clinic chain are missing \(block 3''s hash was ' || :'none_lost'
               || ', block 4''s prev_hash\)\. Restore them',
               'a missing range of blocks is named as a range');
select matches((select detail from clinicdb.verify_audit() where scope = 'round'),
               '^block 4 of clinic 1111.*, its last, is missing: round [0-9]+ recorded its hash ' || :'c1_lost',
               'a chain''s missing last block is named with the hash its round recorded');
select matches((select detail from clinicdb.verify_audit() where scope = 'month'),
               '^audit month [0-9]{4}-[0-9]{2} \(' || :'old_part' || '\): 2 sealed rows missing and no sealed prune record$',
               'the vanished month is named with its partition and count');
select is((select count(*)::int from clinicdb.verify_audit(3) where audit_id is not null), 3,
          'the per-row listing stops at the limit');
select is((select sum(row_count)::int from clinicdb.verify_audit(3) where problem like 'rows %'), 8,
          'and counts the rows it did not list');

select * from finish();
rollback;
