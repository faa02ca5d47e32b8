-- Paths row level security does not cover are closed: TRUNCATE, COPY FROM,
-- REFERENCES, TRIGGER; the owner is subject to the policies (forced RLS) and
-- is not the application's path; the auditor has no PHI table at all.
begin;
select plan(17);

select clinicdb_tap.create_clinic('Denied A') as a \gset
select clinicdb_tap.seed_reference(:'a');

select ok(not has_table_privilege(r, 'public.patients', 'TRUNCATE'), format('%s holds no TRUNCATE on patients', r))
  from unnest(array['clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor']) r;
select ok(not has_table_privilege(r, 'public.patients', 'REFERENCES'), format('%s holds no REFERENCES on patients', r))
  from unnest(array['clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor']) r;

select clinicdb_tap.authenticate_as_app(:'a');
select throws_ok('truncate public.patients', '42501', null, 'the app cannot TRUNCATE a tenant table');
-- COPY FROM STDIN (refused by PostgreSQL under RLS) cannot run inside
-- PL/pgSQL; tests/py/test_staff_sessions.py proves it over a real session.
select throws_ok($$copy public.patients (mrn, given_name, family_name) from '/dev/null'$$, '42501', null,
                 'the app cannot COPY FROM a server file into a tenant table');
select throws_ok('create trigger t before insert on public.patients for each row execute function clinicdb.touch_row()',
                 '42501', null, 'the app cannot put a trigger on a tenant table');
select throws_ok('alter table public.patients disable row level security', '42501', null,
                 'the app cannot turn row level security off');
select throws_ok('drop policy clinicdb_tenant_select on public.patients', '42501', null,
                 'the app cannot drop a tenant policy');

select clinicdb_tap.authenticate_as_app(:'a', 'clinicdb_readonly');
select throws_ok($$insert into public.patients (mrn, given_name, family_name) values ('R', 'x', 'y')$$, '42501', null,
                 'the readonly role cannot write');

-- The owner: policies are forced on it too, and it is not the app.
select clinicdb_tap.clear_authentication();
select set_config('app.clinic_id', :'a', true);
select clinicdb_tap.authenticate_as('clinicdb_owner');
select clinicdb_tap.sees_nothing('public.patients', 'the table owner is bound by the policies (forced) and sees nothing');

select clinicdb_tap.authenticate_as('clinicdb_auditor');
select throws_ok('select count(*) from public.patients', '42501', null, 'the auditor cannot read patients');
select throws_ok('select count(*) from public.medical_records', '42501', null, 'the auditor cannot read medical records');

select * from finish();
rollback;
