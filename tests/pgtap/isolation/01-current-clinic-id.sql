-- clinicdb.current_clinic_id(): who decides the clinic in force.
begin;
select plan(15);

select clinicdb_tap.create_clinic('CCI A') as a \gset
select clinicdb_tap.create_clinic('CCI B') as b \gset
select clinicdb_tap.create_clinic('CCI C') as c \gset
select clinicdb_tap.create_staff_login('tap_cci_alice', :'a');
select clinicdb_tap.create_staff_login('tap_cci_multi', :'a');
select clinicdb.grant_staff('tap_cci_multi', :'b');
create role tap_cci_nobody login;
grant clinicdb_staff to tap_cci_nobody;

-- The application: the transaction's app.clinic_id.
select clinicdb_tap.authenticate_as_app(:'a');
select is(clinicdb.current_clinic_id(), :'a'::uuid, 'the app gets the clinic it set with set_config(..., true)');
select clinicdb_tap.authenticate_as_app(:'a', 'clinicdb_readonly');
select is(clinicdb.current_clinic_id(), :'a'::uuid, 'the readonly role gets the clinic it set');
select clinicdb_tap.authenticate_as_app(null);
select is(clinicdb.current_clinic_id(), null, 'an empty app.clinic_id (what a pooled connection keeps after commit) means no clinic');
select set_config('app.clinic_id', 'not-a-uuid', true);
select throws_ok('select clinicdb.current_clinic_id()', '22023', 'app.clinic_id is not a clinic uuid: not-a-uuid',
                 'a malformed app.clinic_id is an error naming the setting, not an empty result');
select set_config('app.clinic_id', :'a' || ' or true', true);
select throws_ok('select clinicdb.current_clinic_id()', '22023', null,
                 'a uuid with anything appended is rejected, not truncated');

-- Roles that are not the application get no clinic from the setting.
select clinicdb_tap.clear_authentication();
select set_config('app.clinic_id', :'a', true);
select clinicdb_tap.authenticate_as('clinicdb_owner');
select is(clinicdb.current_clinic_id(), null, 'the owner gets no clinic from app.clinic_id');
select clinicdb_tap.authenticate_as('clinicdb_auditor');
select is(clinicdb.current_clinic_id(), null, 'the auditor gets no clinic from app.clinic_id');

-- Staff: the login's mapping, whatever the setting says.
select clinicdb_tap.authenticate_as('tap_cci_alice');
select is(clinicdb.current_clinic_id(), :'a'::uuid, 'a staff login gets its mapped clinic');
select set_config('app.clinic_id', :'b', true);
select is(clinicdb.current_clinic_id(), :'a'::uuid, 'a staff login that sets app.clinic_id to another clinic still gets its own');
select set_config('app.clinic_id', 'garbage', false);
select is(clinicdb.current_clinic_id(), :'a'::uuid, 'a staff login cannot break its scope with a malformed session setting');

select clinicdb_tap.authenticate_as('tap_cci_multi');
select set_config('app.clinic_id', :'b', true);
select is(clinicdb.current_clinic_id(), :'b'::uuid, 'staff mapped to several clinics may choose one of them');
select set_config('app.clinic_id', :'c', true);
select is(clinicdb.current_clinic_id(), null, 'staff mapped to several clinics cannot choose one outside the set');
select set_config('app.clinic_id', '', true);
select is(clinicdb.current_clinic_id(), null, 'staff mapped to several clinics who choose none get none');

select clinicdb_tap.authenticate_as('tap_cci_nobody');
select set_config('app.clinic_id', :'a', true);
select is(clinicdb.current_clinic_id(), null, 'a staff member with no mapping gets no clinic, whatever it sets');

select clinicdb_tap.clear_authentication();
select is(
    (select array[provolatile::text, proparallel::text] from pg_proc where oid = 'clinicdb.current_clinic_id()'::regprocedure),
    array['s', 's'], 'current_clinic_id() is STABLE and PARALLEL SAFE (evaluated once per statement)');

select * from finish();
rollback;
