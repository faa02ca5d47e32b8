-- A SECURITY DEFINER function runs as its owner. If the application path
-- (app, readonly, staff, auditor) may call one owned by a role that bypasses
-- RLS, every caller gets every clinic's rows; if its body resolves names at
-- run time through a search_path that does not end in pg_temp, a caller's
-- temporary table can stand in for the one it means. check_isolation()
-- reports both; the layer's own functions (and SQL-standard bodies) pass.
begin;
select plan(7);

select clinicdb_tap.create_clinic('Definer A') as a \gset
select clinicdb_tap.create_clinic('Definer B') as b \gset
select clinicdb_tap.seed_reference(:'a');
select clinicdb_tap.seed_reference(:'b');

create function pg_temp.fn_findings(p_signature text) returns text[] language sql as $$
    select coalesce(array_agg(finding order by finding), '{}') from clinicdb.check_isolation() where table_name = p_signature
$$;

select is((select count(*) from clinicdb.check_isolation()), 0::bigint,
          'the migrated schema has no finding, about SECURITY DEFINER functions or anything else');

-- A DBA's report function, created as the superuser and handed to the app.
create function public.tap_patient_total() returns bigint language sql security definer
    set search_path = pg_catalog, pg_temp as 'select count(*) from public.patients';
grant execute on function public.tap_patient_total() to clinicdb_app;
select clinicdb_tap.authenticate_as_app(:'a');
select cmp_ok(public.tap_patient_total(), '>', (select count(*) from public.patients),
              'the escape is real: the app counts other clinics'' patients through a superuser''s SECURITY DEFINER function');
select clinicdb_tap.clear_authentication();
select is(pg_temp.fn_findings('public.tap_patient_total()'),
          array[format('SECURITY DEFINER function owned by %s, which bypasses row level security, '
                       'is executable by the application or staff', current_user)],
          'check_isolation reports a SECURITY DEFINER function owned by a superuser that the app may call');
revoke execute on function public.tap_patient_total() from clinicdb_app, public;
select is(pg_temp.fn_findings('public.tap_patient_total()'), '{}',
          'not executable by the application path: no finding');

set local role clinicdb_owner;
create function clinicdb.tap_unpinned() returns bigint language plpgsql security definer
    as 'begin return (select count(*) from staff_members); end';
create function clinicdb.tap_pinned_wrong() returns bigint language plpgsql security definer
    set search_path = clinicdb as 'begin return (select count(*) from staff_members); end';
create function clinicdb.tap_pinned() returns bigint language plpgsql security definer
    set search_path = clinicdb, pg_temp as 'begin return (select count(*) from staff_members); end';
create function clinicdb.tap_atomic() returns bigint language sql security definer
    begin atomic select count(*) from clinicdb.staff_members; end;
grant execute on function clinicdb.tap_unpinned(), clinicdb.tap_pinned_wrong(), clinicdb.tap_pinned(),
    clinicdb.tap_atomic() to clinicdb_staff;
reset role;
select ok(pg_temp.fn_findings('clinicdb.tap_unpinned()') <> '{}',
          'check_isolation reports a SECURITY DEFINER function with no pinned search_path');
select ok(pg_temp.fn_findings('clinicdb.tap_pinned_wrong()') <> '{}',
          'check_isolation reports one whose search_path leaves pg_temp implicit (searched first for tables)');
select is(pg_temp.fn_findings('clinicdb.tap_pinned()') || pg_temp.fn_findings('clinicdb.tap_atomic()'), '{}',
          'a search_path ending in pg_temp, or a SQL-standard body, passes');

select * from finish();
rollback;
