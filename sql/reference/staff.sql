-- Application users who work at a clinic (doctors, nurses, front desk).
-- Not to be confused with clinicdb_staff, the database role for psql logins.
create table if not exists public.staff (
    id uuid not null default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    display_name text not null,
    email text not null,
    job_role text not null default 'clinician'
        check (job_role in ('clinician', 'nurse', 'front_desk', 'admin')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    -- The key carries the clinic: foreign keys stay inside one clinic, and the
    -- table can be distributed by clinic_id (Citus) as it is.
    primary key (clinic_id, id),
    -- One account per e-mail within a clinic; the same person may work at two.
    unique (clinic_id, email)
);
alter table public.staff owner to clinicdb_owner;
comment on table public.staff is 'Application users of a clinic.';
