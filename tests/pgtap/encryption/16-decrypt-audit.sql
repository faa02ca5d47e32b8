-- Decrypting a column (a migration rollback runs clinicdb.decrypt_column)
-- writes its plaintext back into the table, never into the audit trail,
-- which only ever held the column's ciphertext: the column is masked there.
begin;
select plan(4);

select clinicdb_tap.create_clinic('Decrypt Audit') as clinic \gset
select clinicdb_tap.use_test_keys(:'clinic');
insert into public.patients (clinic_id, mrn, given_name, family_name, ssn, phone)
values (:'clinic', 'DA-1', 'Pat', 'Plain', '219-09-9999', '+1 555 0199');

select is((select mode from clinicdb.audit_settings where table_name = 'public.patients'::regclass and column_name = 'ssn'),
          'mask', 'an encrypted column''s write slot is masked in the trail');
select clinicdb.decrypt_column('public.patients', 'ssn');
select is((select ssn from public.patients where mrn = 'DA-1' and clinic_id = :'clinic'), '219-09-9999',
          'decrypting puts the plaintext back into the column');
select ok(not exists (select 1 from clinicdb.audit_log
                       where clinic_id = :'clinic' and (old_values::text like '%219-09-9999%'
                                                        or new_values::text like '%219-09-9999%')),
          'no audit row holds the decrypted value');
select is((select new_values ->> 'ssn' from clinicdb.audit_log
            where clinic_id = :'clinic' and table_name = 'public.patients' and action = 'update'
            order by id desc limit 1),
          '[masked]', 'the decrypting update is audited with the column masked');

select * from finish();
rollback;
