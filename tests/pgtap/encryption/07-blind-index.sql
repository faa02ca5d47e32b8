-- Find a patient by SSN through the keyed blind index: the lookup finds the
-- row, uses the (clinic_id, ssn_blind_index) index, and decrypts only the rows
-- it returns.
begin;
select plan(6);

select set_config('app.master_key', repeat('7f', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('blind index')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into patients (mrn, given_name, family_name, ssn)
select 'BI-' || g, 'Pat', 'Number ' || g, format('%s-%s-%s', 100 + g % 800, 10 + g % 89, 1000 + g)
  from generate_series(1, 2000) g;
select clinicdb_tap.clear_authentication();
analyze public.patients;
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);

select is((select mrn from patients_decrypted
            where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '842-40-1742'))),
    'BI-742', 'a lookup by SSN through the blind index finds the patient');
select is((select count(*)::int from patients_decrypted
            where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '000-00-0000'))),
    0, 'an SSN nobody has finds nothing');
select ok(exists (select 1 from clinicdb_tap.plan_nodes($$select mrn, ssn from patients_decrypted
                    where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '842-40-1742'))$$) p
                  where p.index_name = 'patients_ssn_blind_index_idx'
                    and p.index_cond like '%clinic_id = %' and p.index_cond like '%ssn_blind_index = ANY%'),
    'the lookup is answered by the (clinic_id, ssn_blind_index) index');
select unalike(clinicdb_tap.plan_of($$select mrn, ssn from patients_decrypted
                                   where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '842-40-1742'))$$),
    '%Seq Scan on patients%', 'the lookup does not scan (and so does not decrypt) the table');
select throws_ok($$select clinicdb.blind_index('public.patients', 'phone', '+1 555 0100')$$, '42704', null,
    'only columns declared with a blind index can be looked up by value');
select set_config('app.master_key', '', true);
select throws_ok($$select mrn from patients where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '842-40-1742'))$$,
    '42501', null, 'without the master key there is no lookup by SSN');

select * from finish();
rollback;
