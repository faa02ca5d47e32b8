-- Maps human psql logins (members of clinicdb_staff) to the clinic(s) they
-- work for. current_clinic_id() reads it for staff instead of app.clinic_id,
-- which a staff session can set to anything. Maintained only through
-- clinicdb.grant_staff() / clinicdb.revoke_staff().
create table if not exists clinicdb.staff_members (
    role_name name not null,
    -- The role's oid at grant time: a later role that reuses the name is a
    -- different person and must not inherit the mapping (fails closed).
    role_oid oid not null,
    clinic_id uuid not null references clinicdb.clinics (id) on delete cascade,
    granted_at timestamptz not null default now(),
    granted_by name not null default session_user,
    primary key (role_name, clinic_id)
);
comment on table clinicdb.staff_members is
    'clinicdb: which clinic each staff login may act for. A renamed role loses its mapping (fails closed).';

-- A staff login may read its own mapping (current_clinic_id needs it) and
-- nothing else: other logins' names and clinics are not its business. Not
-- forced, so the owner and DBAs see every row.
alter table clinicdb.staff_members enable row level security;
drop policy if exists staff_members_own on clinicdb.staff_members;
create policy staff_members_own on clinicdb.staff_members
    for select using (role_name = current_user);
grant select on clinicdb.staff_members to clinicdb_staff;
