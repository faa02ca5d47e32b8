-- Visits. Composite foreign keys carry clinic_id, so an appointment can only
-- point at a patient and a staff member of its own clinic.
create table if not exists public.appointments (
    id uuid not null default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    patient_id uuid not null,
    staff_id uuid,
    starts_at timestamptz not null,
    ends_at timestamptz not null,
    status text not null default 'scheduled'
        check (status in ('scheduled', 'checked_in', 'completed', 'cancelled', 'no_show')),
    reason text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    -- The key carries the clinic: foreign keys stay inside one clinic, and the
    -- table can be distributed by clinic_id (Citus) as it is.
    primary key (clinic_id, id),
    check (ends_at > starts_at),
    foreign key (clinic_id, patient_id) references public.patients (clinic_id, id),
    foreign key (clinic_id, staff_id) references public.staff (clinic_id, id)
);
alter table public.appointments owner to clinicdb_owner;
comment on table public.appointments is 'Appointments of a patient with a staff member.';
create index if not exists appointments_clinic_patient_idx on public.appointments (clinic_id, patient_id);
create index if not exists appointments_clinic_staff_idx on public.appointments (clinic_id, staff_id);
create index if not exists appointments_clinic_starts_idx on public.appointments (clinic_id, starts_at);
