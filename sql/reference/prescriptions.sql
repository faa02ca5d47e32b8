-- Medication orders, tied to the patient and optionally to the record that
-- justified them.
create table if not exists public.prescriptions (
    id uuid not null default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    patient_id uuid not null,
    medical_record_id uuid,
    prescribed_by uuid not null,
    medication text not null,
    dosage text not null,
    starts_on date not null default current_date,
    ends_on date,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    -- The key carries the clinic: foreign keys stay inside one clinic, and the
    -- table can be distributed by clinic_id (Citus) as it is.
    primary key (clinic_id, id),
    check (ends_on is null or ends_on >= starts_on),
    foreign key (clinic_id, patient_id) references public.patients (clinic_id, id),
    foreign key (clinic_id, medical_record_id) references public.medical_records (clinic_id, id),
    foreign key (clinic_id, prescribed_by) references public.staff (clinic_id, id)
);
alter table public.prescriptions owner to clinicdb_owner;
comment on table public.prescriptions is 'Medication prescribed to a patient.';
create index if not exists prescriptions_clinic_patient_idx on public.prescriptions (clinic_id, patient_id);
create index if not exists prescriptions_clinic_record_idx on public.prescriptions (clinic_id, medical_record_id);
create index if not exists prescriptions_clinic_prescriber_idx on public.prescriptions (clinic_id, prescribed_by);
