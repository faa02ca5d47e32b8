-- Patients of a clinic. The medical record number is unique per clinic only:
-- a key unique across clinics would tell one clinic that another has it.
create table if not exists public.patients (
    id uuid not null default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    mrn text not null,
    given_name text not null,
    family_name text not null,
    birth_date date,
    sex text check (sex in ('female', 'male', 'other', 'unknown')),
    ssn text,
    phone text,
    email text,
    address text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    -- The key carries the clinic: foreign keys stay inside one clinic, and the
    -- table can be distributed by clinic_id (Citus) as it is.
    primary key (clinic_id, id),
    unique (clinic_id, mrn)
);
alter table public.patients owner to clinicdb_owner;
comment on table public.patients is 'Patients; one row per person per clinic.';
-- The questions every screen asks, always inside one clinic.
create index if not exists patients_clinic_created_idx on public.patients (clinic_id, created_at desc);
create index if not exists patients_clinic_name_idx on public.patients (clinic_id, family_name, given_name);
