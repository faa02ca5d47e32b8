-- 0008.reference-schema: The reference healthcare schema (opt-in: clinicdb migrate --reference-schema): staff, patients,
-- appointments, medical_records and prescriptions in public, each protected and audited, with their
-- PHI inventory. On a clinicdb 0.1 database, which has these tables already, every statement finds its
-- object in place.
-- depends: 0007.encryption-keeps-audit-current
--
-- Frozen: the SQL below is what this migration runs, copied from sql/reference/staff.sql,
-- sql/reference/patients.sql, sql/reference/appointments.sql, sql/reference/medical_records.sql,
-- sql/reference/prescriptions.sql, sql/reference/phi.sql, sql/reference/protect.sql when it was
-- written. migrations/migrations.lock pins it: change sql/ and add a new migration instead of editing
-- this file.

set local role clinicdb_owner;
-- ---- sql/reference/staff.sql ----
-- Application users who work at a clinic (doctors, nurses, front desk).
-- Not to be confused with clinicdb_staff, the database role for psql logins.
create table if not exists public.staff (
    id uuid primary key default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    display_name text not null,
    email text not null,
    job_role text not null default 'clinician'
        check (job_role in ('clinician', 'nurse', 'front_desk', 'admin')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    unique (clinic_id, id),
    -- One account per e-mail within a clinic; the same person may work at two.
    unique (clinic_id, email)
);
alter table public.staff owner to clinicdb_owner;
comment on table public.staff is 'Application users of a clinic.';
-- ---- sql/reference/patients.sql ----
-- Patients of a clinic. The medical record number is unique per clinic only:
-- a key unique across clinics would tell one clinic that another has it.
create table if not exists public.patients (
    id uuid primary key default gen_random_uuid(),
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
    unique (clinic_id, id),
    unique (clinic_id, mrn)
);
alter table public.patients owner to clinicdb_owner;
comment on table public.patients is 'Patients; one row per person per clinic.';
-- The questions every screen asks, always inside one clinic.
create index if not exists patients_clinic_created_idx on public.patients (clinic_id, created_at desc);
create index if not exists patients_clinic_name_idx on public.patients (clinic_id, family_name, given_name);
-- ---- sql/reference/appointments.sql ----
-- Visits. Composite foreign keys carry clinic_id, so an appointment can only
-- point at a patient and a staff member of its own clinic.
create table if not exists public.appointments (
    id uuid primary key default gen_random_uuid(),
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
    unique (clinic_id, id),
    check (ends_at > starts_at),
    foreign key (clinic_id, patient_id) references public.patients (clinic_id, id),
    foreign key (clinic_id, staff_id) references public.staff (clinic_id, id)
);
alter table public.appointments owner to clinicdb_owner;
comment on table public.appointments is 'Appointments of a patient with a staff member.';
create index if not exists appointments_clinic_patient_idx on public.appointments (clinic_id, patient_id);
create index if not exists appointments_clinic_staff_idx on public.appointments (clinic_id, staff_id);
create index if not exists appointments_clinic_starts_idx on public.appointments (clinic_id, starts_at);
-- ---- sql/reference/medical_records.sql ----
-- Clinical notes and diagnoses: the most sensitive rows in the schema.
create table if not exists public.medical_records (
    id uuid primary key default gen_random_uuid(),
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
    unique (clinic_id, id),
    foreign key (clinic_id, patient_id) references public.patients (clinic_id, id),
    foreign key (clinic_id, appointment_id) references public.appointments (clinic_id, id),
    foreign key (clinic_id, recorded_by) references public.staff (clinic_id, id)
);
alter table public.medical_records owner to clinicdb_owner;
comment on table public.medical_records is 'Clinical notes, diagnoses and results of a patient.';
create index if not exists medical_records_clinic_patient_idx on public.medical_records (clinic_id, patient_id);
create index if not exists medical_records_clinic_appointment_idx on public.medical_records (clinic_id, appointment_id);
create index if not exists medical_records_clinic_recorded_by_idx on public.medical_records (clinic_id, recorded_by);
-- ---- sql/reference/prescriptions.sql ----
-- Medication orders, tied to the patient and optionally to the record that
-- justified them.
create table if not exists public.prescriptions (
    id uuid primary key default gen_random_uuid(),
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
    unique (clinic_id, id),
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
-- ---- sql/reference/phi.sql ----
-- Which reference columns hold protected health information. Audit and
-- encryption read this registry; reviewers read it as the PHI inventory.
insert into clinicdb.phi_columns (table_name, column_name, note) values
    ('public.patients', 'given_name', 'identifier: name'),
    ('public.patients', 'family_name', 'identifier: name'),
    ('public.patients', 'birth_date', 'identifier: date of birth'),
    ('public.patients', 'ssn', 'identifier: social security number'),
    ('public.patients', 'phone', 'identifier: telephone'),
    ('public.patients', 'email', 'identifier: e-mail'),
    ('public.patients', 'address', 'identifier: address'),
    ('public.patients', 'mrn', 'identifier: medical record number'),
    ('public.appointments', 'reason', 'health information'),
    ('public.medical_records', 'diagnosis_code', 'health information'),
    ('public.medical_records', 'notes', 'health information'),
    ('public.prescriptions', 'medication', 'health information'),
    ('public.prescriptions', 'dosage', 'health information')
on conflict do nothing;

do $$
declare
    v_col record;
begin
    for v_col in select table_name, column_name, note from clinicdb.phi_columns loop
        execute format('comment on column %s.%I is %L', v_col.table_name, v_col.column_name, 'PHI: ' || v_col.note);
    end loop;
end
$$;
-- ---- sql/reference/protect.sql ----
-- Every reference table is a tenant table: one call each, nothing hand-written.
-- (clinicdb.clinics is the core's and protected there.)
select clinicdb.protect_table(t::regclass)
  from unnest(array['public.staff', 'public.patients', 'public.appointments',
                    'public.medical_records', 'public.prescriptions']) as t;
reset role;
