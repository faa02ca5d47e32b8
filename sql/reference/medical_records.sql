-- Clinical notes and diagnoses: the most sensitive rows in the schema.
create table if not exists public.medical_records (
    id uuid not null default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    patient_id uuid not null,
    appointment_id uuid,
    recorded_by uuid,
    kind text not null default 'note' check (kind in ('note', 'diagnosis', 'lab_result', 'imaging')),
    diagnosis_code text,
    notes text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    -- The key carries the clinic: foreign keys stay inside one clinic, and the
    -- table can be distributed by clinic_id (Citus) as it is.
    primary key (clinic_id, id),
    foreign key (clinic_id, patient_id) references public.patients (clinic_id, id),
    foreign key (clinic_id, appointment_id) references public.appointments (clinic_id, id),
    foreign key (clinic_id, recorded_by) references public.staff (clinic_id, id)
);
alter table public.medical_records owner to clinicdb_owner;
comment on table public.medical_records is 'Clinical notes, diagnoses and results of a patient.';
create index if not exists medical_records_clinic_patient_idx on public.medical_records (clinic_id, patient_id);
create index if not exists medical_records_clinic_appointment_idx on public.medical_records (clinic_id, appointment_id);
create index if not exists medical_records_clinic_recorded_by_idx on public.medical_records (clinic_id, recorded_by);
