-- The tenants. Every tenant table references clinicdb.clinics (id). A clinic
-- row is itself tenant data (name, contact), so clinics carries a clinic_id
-- too -- generated as a copy of id -- and is protected by the very same
-- policy as every other tenant table: an application transaction sees only
-- its clinic. Clinics are created by operators through
-- clinicdb.create_clinic(). It lives in the layer's schema, so installing
-- clinicdb adds no table to the application's schemas.
create table if not exists clinicdb.clinics (
    id uuid primary key default gen_random_uuid(),
    clinic_id uuid generated always as (id) stored not null,
    name text not null check (length(btrim(name)) > 0),
    timezone text not null default 'UTC',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    unique (clinic_id, id)
);
alter table clinicdb.clinics owner to clinicdb_owner;
-- Operators create and retire clinics (create_clinic, deleted_at); the app and
-- staff only read and edit their own row (the policies), readonly reads it.
-- No INSERT or DELETE: a hostile staff login could otherwise delete its
-- clinic's row and, by cascade, every colleague's staff mapping.
grant select, update on clinicdb.clinics to clinicdb_app, clinicdb_staff;
grant select on clinicdb.clinics to clinicdb_readonly;
comment on table clinicdb.clinics is 'clinicdb: the tenants; each row is one clinic.';
comment on column clinicdb.clinics.clinic_id is 'Always equal to id, so the standard tenant policy applies unchanged.';
