-- A row can only reference rows of its own clinic: the composite foreign
-- keys (clinic_id, x_id) make a cross-clinic reference impossible, for any
-- role, whatever the policies.
begin;
select plan(5);

select clinicdb_tap.create_clinic('Refs A') as a \gset
select clinicdb_tap.create_clinic('Refs B') as b \gset
select clinicdb_tap.seed_reference(:'a') as patient_a \gset
select clinicdb_tap.seed_reference(:'b') as patient_b \gset
select id as staff_b from public.staff where clinic_id = :'b' \gset
select id as record_b from public.medical_records where clinic_id = :'b' \gset

select throws_ok(
    format($$insert into public.appointments (clinic_id, patient_id, starts_at, ends_at)
             values (%L, %L, now(), now() + interval '1 hour')$$, :'a', :'patient_b'),
    '23503', null, 'an appointment of clinic A cannot point at a patient of clinic B');
select throws_ok(
    format($$insert into public.appointments (clinic_id, patient_id, staff_id, starts_at, ends_at)
             values (%L, %L, %L, now(), now() + interval '1 hour')$$, :'a', :'patient_a', :'staff_b'),
    '23503', null, 'an appointment of clinic A cannot be with a staff member of clinic B');
select throws_ok(
    format($$insert into public.prescriptions (clinic_id, patient_id, medical_record_id, prescribed_by, medication, dosage)
             values (%L, %L, %L, %L, 'x', 'y')$$, :'a', :'patient_a', :'record_b', :'staff_b'),
    '23503', null, 'a prescription of clinic A cannot cite a record of clinic B');
select throws_ok(
    format($$insert into public.medical_records (clinic_id, patient_id) values (%L, %L)$$, :'a', :'patient_b'),
    '23503', null, 'a medical record of clinic A cannot belong to a patient of clinic B');
select lives_ok(
    format($$insert into public.appointments (clinic_id, patient_id, starts_at, ends_at)
             values (%L, %L, now(), now() + interval '1 hour')$$, :'a', :'patient_a'),
    'the same reference inside one clinic works');

select * from finish();
rollback;
