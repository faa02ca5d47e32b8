-- Rotation: new writes use the new key version at once, old values stay
-- readable and findable, and re-encryption leaves no value on the old version.
begin;
select plan(8);

select set_config('app.master_key', repeat('8e', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('rotation')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into patients (mrn, given_name, family_name, ssn, phone)
select 'RO-' || g, 'Pat', 'Rot', format('555-%s-%s', 10 + g % 89, 1000 + g), '+1 555 ' || g from generate_series(1, 250) g;
insert into medical_records (patient_id, notes) select id, 'note of ' || mrn from patients where mrn like 'RO-%';
create temporary table expected on commit drop as
    select p.mrn, p.ssn, p.phone, m.notes from patients_decrypted p join medical_records_decrypted m on m.patient_id = p.id;
select clinicdb_tap.clear_authentication();

select is(clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid), 2, 'rotation creates key version 2');
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into patients (mrn, given_name, family_name, ssn) values ('RO-new', 'New', 'Write', '999-99-9999');
select is((select clinicdb.key_version(ssn_ciphertext) from patients where mrn = 'RO-new'), 2,
    'a write after rotation uses the new version');
select is((select count(*)::int from patients_decrypted p join expected e using (mrn) where p.ssn = e.ssn), 250,
    'values on the old version stay readable after rotation');
select is((select mrn from patients where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '555-17-1007'))),
    'RO-7', 'a value not yet re-encrypted is still found through the blind index');

-- What `clinicdb keys reencrypt` does, batch after batch (here in one transaction).
do $$
declare
    v_after uuid;
    v_batch record;
begin
    loop
        select * into v_batch from clinicdb.reencrypt_batch('public.patients', v_after, 64);
        exit when v_batch.rows_scanned = 0;
        v_after := v_batch.last_id;
    end loop;
    v_after := null;
    loop
        select * into v_batch from clinicdb.reencrypt_batch('public.medical_records', v_after, 64);
        exit when v_batch.rows_scanned = 0;
        v_after := v_batch.last_id;
    end loop;
end $$;

select is(clinicdb.reencrypt_remaining('public.patients') + clinicdb.reencrypt_remaining('public.medical_records'), 0::bigint,
    're-encryption leaves no value on the old key version');
select is((select count(*)::int from patients where clinicdb.key_version(ssn_ciphertext) = 1
                                                  or clinicdb.key_version(phone_ciphertext) = 1), 0,
    'no row of patients is left on version 1');
select set_eq(
    $$select p.mrn, p.ssn, p.phone, m.notes from patients_decrypted p join medical_records_decrypted m on m.patient_id = p.id$$,
    $$select * from expected$$,
    'every value reads the same after re-encryption');
select is((select mrn from patients where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', '555-17-1007'))),
    'RO-7', 're-encryption recomputes the blind index under the new version');

select * from finish();
rollback;
