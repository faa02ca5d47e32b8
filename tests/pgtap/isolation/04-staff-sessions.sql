-- A staff login (a human in psql) sees and changes only its clinic and
-- cannot switch clinic with SET, set_config, RESET or SET ROLE. (A real
-- login session, including RESET ROLE and SET SESSION AUTHORIZATION, is
-- exercised in tests/py/test_staff_sessions.py.)
begin;
select plan(37);

select clinicdb_tap.create_clinic('Staff A') as a \gset
select clinicdb_tap.create_clinic('Staff B') as b \gset
select clinicdb_tap.seed_reference(:'a');
select clinicdb_tap.seed_reference(:'b');
select clinicdb_tap.create_staff_login('tap_alice', :'a');
select clinicdb_tap.create_staff_login('tap_bob', :'b');

select clinicdb_tap.authenticate_as('tap_alice');
select clinicdb_tap.sees_only_clinic(t, :'a', format('staff of clinic A reads only clinic A rows of %s', t)) from clinicdb_tap.reference_tables() t;

-- Trying to switch clinic with the application's setting.
select set_config('app.clinic_id', :'b', true);
select clinicdb_tap.sees_only_clinic('public.patients', :'a', 'staff that set_config()s app.clinic_id to clinic B still reads only clinic A');
set app.clinic_id = 'ffffffff-ffff-ffff-ffff-ffffffffffff';
select clinicdb_tap.sees_only_clinic('public.patients', :'a', 'staff that SETs app.clinic_id still reads only clinic A');
reset app.clinic_id;
select clinicdb_tap.sees_only_clinic('public.patients', :'a', 'staff that RESETs app.clinic_id still reads only clinic A');
select is(clinicdb_tap.rows_changed('update %s set updated_at = now() where clinic_id = $1', t, :'b'), 0::bigint,
          format('staff of clinic A updates no clinic B row of %s, whatever it set', t)) from clinicdb_tap.reference_tables() t;
-- (clinicdb.clinics grants no delete at all: there the proof is the refusal.)
select case when has_table_privilege(t, 'delete')
            then is(clinicdb_tap.rows_changed('delete from %s where clinic_id = $1', t, :'b'), 0::bigint,
                    format('staff of clinic A deletes no clinic B row of %s', t))
            else throws_ok(format('delete from %s where clinic_id = %L', t, :'b'), '42501', null,
                           format('staff of clinic A may not delete from %s at all', t)) end
  from clinicdb_tap.reference_tables() t;
select throws_ok(format($$insert into public.patients (clinic_id, mrn, given_name, family_name) values (%L, 'S', 'x', 'y')$$, :'b'),
                 '42501', null, 'staff of clinic A cannot insert into clinic B');
select lives_ok($$insert into public.patients (mrn, given_name, family_name) values ('STAFF-1', 'x', 'y')$$,
                'staff of clinic A can insert into its own clinic');

-- Trying to become someone else.
-- SET ROLE is checked against the session user (the superuser running this
-- file), so attempts to SET ROLE elsewhere are proven with a real staff login
-- in tests/py/test_staff_sessions.py. Here: the one role staff does hold.
select ok(not pg_has_role('tap_alice', 'tap_bob', 'MEMBER') and not pg_has_role('tap_alice', 'clinicdb_app', 'MEMBER')
          and not pg_has_role('tap_alice', 'clinicdb_owner', 'MEMBER'),
          'a staff login holds no other staff login, nor the app or owner role');
set role clinicdb_staff;
select clinicdb_tap.sees_nothing('public.patients', 'staff that SET ROLE to the clinicdb_staff group (which it holds) sees nothing');
select clinicdb_tap.authenticate_as('tap_alice');

-- Trying the layer's functions and tables.
select throws_ok(format('select clinicdb.grant_staff(%L, %L)', 'tap_alice', :'b'), '42501', null,
                 'staff cannot map itself to another clinic');
select throws_ok(format('select clinicdb.create_clinic(%L)', 'Mine now'), '42501', null,
                 'staff cannot create clinics');
select is((select count(*) from clinicdb.staff_members), 1::bigint,
          'staff sees only its own staff mapping, not who works where');
select throws_ok('truncate public.patients', '42501', null, 'staff cannot TRUNCATE a tenant table');
select throws_ok($$copy public.patients (mrn, given_name, family_name) from program 'true'$$, '42501', null,
                 'staff cannot COPY FROM into a tenant table');

-- A staff login with no mapping: nothing readable, nothing writable.
select clinicdb_tap.clear_authentication();
create role tap_unmapped login in role clinicdb_staff;
select clinicdb_tap.authenticate_as('tap_unmapped');
select set_config('app.clinic_id', :'a', true);
select clinicdb_tap.sees_nothing(t, format('unmapped staff reads nothing from %s, whatever it sets', t)) from clinicdb_tap.reference_tables() t;
select throws_ok($$insert into public.patients (mrn, given_name, family_name) values ('U', 'x', 'y')$$,
                 '42501', 'no clinic is in force for this transaction', 'unmapped staff cannot write');

select * from finish();
rollback;
