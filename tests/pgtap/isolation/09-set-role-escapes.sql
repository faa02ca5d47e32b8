-- SET ROLE needs only membership. A role on the application path (app,
-- readonly, staff, auditor) that also holds a role with another way in --
-- BYPASSRLS, the owner, the app for a staff login, another staff login --
-- escapes its clinic. grant_staff refuses such logins; a GRANT made later
-- is reported by clinicdb.check_isolation(). Staff mappings are by role
-- name, so a mapping left behind by a dropped role must not be inherited.
begin;
select plan(21);

select clinicdb_tap.create_clinic('Escape A') as a \gset
select clinicdb_tap.create_clinic('Escape B') as b \gset
select clinicdb_tap.seed_reference(:'a');
select clinicdb_tap.seed_reference(:'b');
select clinicdb_tap.create_staff_login('tap_esc_alice', :'a');
select clinicdb_tap.create_staff_login('tap_esc_bob', :'b');
create role tap_esc_app login in role clinicdb_app;
create role tap_esc_bypass nologin bypassrls;

create function pg_temp.role_findings(p_role text) returns text[] language sql as $$
    select coalesce(array_agg(finding order by finding), '{}') from clinicdb.check_isolation() where table_name = p_role
$$;

-- Why it matters: a staff login given the readonly group reads clinic B.
grant clinicdb_readonly to tap_esc_alice;
select clinicdb_tap.authenticate_as('tap_esc_alice');
set local role clinicdb_readonly;
select set_config('app.clinic_id', :'b', true);
select ok((select count(*) from public.patients where clinic_id = :'b') > 0,
          'the escape is real: acting as clinicdb_readonly (what SET ROLE gives a staff login that holds it) reads clinic B');
select clinicdb_tap.clear_authentication();
select is(pg_temp.role_findings('tap_esc_alice'),
          array['can SET ROLE to clinicdb_readonly, which lets a staff login choose any clinic with app.clinic_id'],
          'check_isolation reports a staff login that holds clinicdb_readonly');
revoke clinicdb_readonly from tap_esc_alice;

grant clinicdb_app to tap_esc_alice;
select ok('can SET ROLE to clinicdb_app, which lets a staff login choose any clinic with app.clinic_id'
              = any (pg_temp.role_findings('tap_esc_alice')),
          'check_isolation reports a staff login that holds clinicdb_app');
revoke clinicdb_app from tap_esc_alice;

grant tap_esc_bob to tap_esc_alice;
select is(pg_temp.role_findings('tap_esc_alice'),
          array['can SET ROLE to tap_esc_bob, which is another staff login, mapped to its own clinics'],
          'check_isolation reports a staff login that holds another clinic''s staff login');
revoke tap_esc_bob from tap_esc_alice;

grant clinicdb_owner to tap_esc_app;
select is(pg_temp.role_findings('tap_esc_app'),
          array['can SET ROLE to clinicdb_owner, which owns tables or functions of the layer and can turn its protection off'],
          'check_isolation reports an app login that holds the owner (which can disable row level security)');
revoke clinicdb_owner from tap_esc_app;

grant tap_esc_bypass to tap_esc_app;
select is(pg_temp.role_findings('tap_esc_app'),
          array['can SET ROLE to tap_esc_bypass, which bypasses row level security'],
          'check_isolation reports an app login that holds a BYPASSRLS role');
revoke tap_esc_bypass from tap_esc_app;

grant clinicdb_readonly to clinicdb_auditor;
select is(pg_temp.role_findings('clinicdb_auditor'),
          array['can SET ROLE to clinicdb_readonly, which gives the auditor the rows of a clinic'],
          'check_isolation reports an auditor that holds an application role');
revoke clinicdb_readonly from clinicdb_auditor;

select is((select count(*) from clinicdb.check_isolation()), 0::bigint,
          'with the grants revoked, check_isolation has no finding again');

-- Predefined roles whose rights sit below row level security.
grant pg_read_server_files to tap_esc_app;
select is(pg_temp.role_findings('tap_esc_app'),
          array['can SET ROLE to pg_read_server_files, which reads or writes the server''s files (table files included) '
                'or runs programs as the server'],
          'check_isolation reports an app login that may read server files (the table files of every clinic)');
revoke pg_read_server_files from tap_esc_app;
grant pg_read_all_stats to tap_esc_alice;
select is(pg_temp.role_findings('tap_esc_alice'),
          array['can SET ROLE to pg_read_all_stats, which shows the text of every session''s queries, other clinics'' '
                'values included'],
          'check_isolation reports a staff login that may read every session''s query text');
revoke pg_read_all_stats from tap_esc_alice;

-- CREATEROLE can grant membership in any non-superuser role.
alter role tap_esc_alice createrole;
select is(pg_temp.role_findings('tap_esc_alice'),
          array['role on the application path has CREATEROLE and can grant itself any role'],
          'check_isolation reports a staff login with CREATEROLE (it could grant itself clinicdb_readonly)');
alter role tap_esc_alice nocreaterole;
alter role tap_esc_alice replication;
select is(pg_temp.role_findings('tap_esc_alice'),
          array['role on the application path has REPLICATION and can stream every clinic''s data'],
          'check_isolation reports a staff login with REPLICATION (the WAL holds every clinic''s rows)');
alter role tap_esc_alice noreplication;

-- grant_staff refuses logins that can SET ROLE or grant their way out.
create role tap_esc_dave login createrole;
select throws_ok(format($$select clinicdb.grant_staff('tap_esc_dave', %L)$$, :'a'), '42501', null,
                 'grant_staff refuses a login with CREATEROLE');
create role tap_esc_erin login replication;
select throws_ok(format($$select clinicdb.grant_staff('tap_esc_erin', %L)$$, :'a'), '42501', null,
                 'grant_staff refuses a login with REPLICATION');
create role tap_esc_carol login;
grant tap_esc_dave to tap_esc_carol;
select throws_ok(format($$select clinicdb.grant_staff('tap_esc_carol', %L)$$, :'a'), '42501', null,
                 'grant_staff refuses a login that holds a CREATEROLE role');
revoke tap_esc_dave from tap_esc_carol;
grant tap_esc_bypass to tap_esc_carol;
select throws_ok(format($$select clinicdb.grant_staff('tap_esc_carol', %L)$$, :'a'), '42501', null,
                 'grant_staff refuses a login that holds a BYPASSRLS role');
revoke tap_esc_bypass from tap_esc_carol;
grant tap_esc_bob to tap_esc_carol;
select throws_ok(format($$select clinicdb.grant_staff('tap_esc_carol', %L)$$, :'a'), '42501', null,
                 'grant_staff refuses a login that holds another staff login');
revoke tap_esc_bob from tap_esc_carol;

-- A role dropped without revoke_staff leaves its mapping behind.
drop role tap_esc_bob;
select is(pg_temp.role_findings('tap_esc_bob'),
          array['staff mapping of a role that no longer exists (or was recreated): run clinicdb.revoke_staff'],
          'check_isolation reports the mapping a dropped staff login left behind');
create role tap_esc_bob login;
set local client_min_messages = error;  -- the warning about the stale mapping is expected
select clinicdb.grant_staff('tap_esc_bob', :'a');
reset client_min_messages;
select clinicdb_tap.authenticate_as('tap_esc_bob');
select clinicdb_tap.sees_only_clinic('public.patients', :'a',
    'a new login of a dropped staff login''s name, mapped by grant_staff, does not inherit the old clinic');
select set_config('app.clinic_id', :'b', true);
select clinicdb_tap.sees_only_clinic('public.patients', :'a',
    'nor can it pick the old clinic with app.clinic_id (the stale mapping is gone)');
select clinicdb_tap.clear_authentication();

-- The path grant_staff does not see: a DBA grants the group by hand to a new
-- login of a dropped staff login's name. Mappings record the role's oid, so
-- the new role (another oid) inherits nothing.
select clinicdb.revoke_staff('tap_esc_alice');
select clinicdb.grant_staff('tap_esc_alice', :'b');
drop role tap_esc_alice;
create role tap_esc_alice login in role clinicdb_staff;
select clinicdb_tap.authenticate_as('tap_esc_alice');
select clinicdb_tap.sees_nothing('public.patients',
    'a new login of a dropped staff login''s name, granted clinicdb_staff by hand, inherits no clinic');
select clinicdb_tap.clear_authentication();

select * from finish();
rollback;
