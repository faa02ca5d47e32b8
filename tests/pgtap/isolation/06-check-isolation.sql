-- clinicdb.check_isolation() passes on the reference schema and names every
-- kind of hole a DBA can open: each case below is made deliberately and must
-- show up as a finding for that table.
begin;
select plan(20);

select is((select count(*) from clinicdb.check_isolation()), 0::bigint,
          'the migrated reference schema has no isolation finding');
select clinicdb_tap.is_tenant_isolated(t::regclass)
  from unnest(array['clinicdb.clinics', 'public.staff', 'public.patients', 'public.appointments',
                    'public.medical_records', 'public.prescriptions']) t;

create function pg_temp.findings(p_table text) returns text[] language sql as $$
    select coalesce(array_agg(finding order by finding), '{}') from clinicdb.check_isolation() where table_name = p_table
$$;

-- A table someone added and forgot to protect.
create table public.tap_forgotten (id uuid primary key, clinic_id uuid references clinicdb.clinics (id));
select ok('row level security is not enabled' = any (pg_temp.findings('public.tap_forgotten')),
          'a new clinic_id table without protect_table() is reported');
select ok('clinic_id allows NULL' = any (pg_temp.findings('public.tap_forgotten')), 'a nullable clinic_id is reported');
select ok('not registered by clinicdb.protect_table()' = any (pg_temp.findings('public.tap_forgotten')),
          'a table missing from the registry is reported');

-- Protected, then weakened in each way.
select clinicdb.protect_table('public.tap_forgotten');
select is(pg_temp.findings('public.tap_forgotten'), '{}', 'after protect_table() the new table has no finding');

alter table public.tap_forgotten no force row level security;
select ok('row level security is not forced (the owner bypasses it)' = any (pg_temp.findings('public.tap_forgotten')),
          'RLS enabled but not forced is reported');
alter table public.tap_forgotten force row level security;

alter policy clinicdb_tenant_select on public.tap_forgotten using (true);
select ok('policy clinicdb_tenant_select differs from the standard definition' = any (pg_temp.findings('public.tap_forgotten')),
          'a standard policy edited by hand is reported');
select clinicdb.protect_table('public.tap_forgotten');

drop policy clinicdb_tenant_delete on public.tap_forgotten;
select ok('standard policy clinicdb_tenant_delete is missing' = any (pg_temp.findings('public.tap_forgotten')),
          'a dropped standard policy is reported');
select clinicdb.protect_table('public.tap_forgotten');

create policy backdoor on public.tap_forgotten for select using (true);
select ok('extra permissive policy backdoor widens the tenant policy' = any (pg_temp.findings('public.tap_forgotten')),
          'an extra permissive policy is reported');
drop policy backdoor on public.tap_forgotten;

grant truncate on public.tap_forgotten to clinicdb_app;
select ok('clinicdb_app holds TRUNCATE, which row level security does not cover' = any (pg_temp.findings('public.tap_forgotten')),
          'a TRUNCATE grant to the app is reported');
revoke truncate on public.tap_forgotten from clinicdb_app;

create view public.tap_leaky as select * from public.tap_forgotten;
select ok('view public.tap_leaky reads it without security_invoker' = any (pg_temp.findings('public.tap_forgotten')),
          'a view without security_invoker over a tenant table is reported');
alter view public.tap_leaky set (security_invoker = true);
select is(pg_temp.findings('public.tap_forgotten'), '{}', 'the same view with security_invoker is fine');

create materialized view public.tap_cached as select * from public.tap_forgotten;
select ok('materialized view public.tap_cached reads it and stores rows outside the policy' = any (pg_temp.findings('public.tap_forgotten')),
          'a materialized view over a tenant table is reported');

create role tap_app_owner nologin in role clinicdb_app;
grant create on schema public to tap_app_owner;
alter table public.tap_forgotten owner to tap_app_owner;
select ok('owned by tap_app_owner, which holds an application or staff role' = any (pg_temp.findings('public.tap_forgotten')),
          'a tenant table owned by a role the app can act as (and so disable RLS) is reported');

select * from finish();
rollback;
