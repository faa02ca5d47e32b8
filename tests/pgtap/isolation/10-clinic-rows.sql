-- The clinics row is tenant data like any other: the clinic in force can
-- update its own row (name, timezone) and nothing else, cannot move it
-- to another clinic's id, and cannot create or delete clinic rows. clinic_id is generated from id there, which
-- touch_row() cannot see in a BEFORE trigger: it must not refuse every
-- update of a clinic because of it.
begin;
select plan(9);

select clinicdb_tap.create_clinic('Rows A') as a \gset
select clinicdb_tap.create_clinic('Rows B') as b \gset
select clinicdb_tap.create_staff_login('tap_rows_alice', :'a');

select lives_ok(format($$update clinicdb.clinics set name = 'Rows A renamed' where id = %L$$, :'a'),
                'a DBA can rename a clinic (the generated clinic_id does not trip touch_row)');

select clinicdb_tap.authenticate_as_app(:'a');
select lives_ok($$update clinicdb.clinics set timezone = 'Europe/Paris'$$,
                'the app can update its own clinic row');
select is((select timezone from clinicdb.clinics), 'Europe/Paris', 'and the change is made');
select is(clinicdb_tap.rows_changed('update %s set name = ''pwned'' where id = $1', 'clinicdb.clinics', :'b'), 0::bigint,
          'the app updates no other clinic''s row');
select throws_ok(format($$update clinicdb.clinics set id = %L$$, gen_random_uuid()), '42501', null,
                 'the app cannot give its clinic row another id (WITH CHECK on the generated clinic_id)');
select throws_ok($$delete from clinicdb.clinics$$, '42501', null,
                 'the app cannot delete its clinic row (operators retire clinics)');
select throws_ok($$insert into clinicdb.clinics (name) values ('Mine now')$$, '42501', null,
                 'the app cannot create clinics');

select clinicdb_tap.authenticate_as('tap_rows_alice');
select is(clinicdb_tap.rows_changed('update %s set name = ''pwned'' where id = $1', 'clinicdb.clinics', :'b'), 0::bigint,
          'staff of clinic A updates no other clinic''s row');
select throws_ok($$delete from clinicdb.clinics$$, '42501', null,
                 'staff cannot delete their clinic row (it would cascade away every colleague''s staff mapping)');
select clinicdb_tap.clear_authentication();

select * from finish();
rollback;
