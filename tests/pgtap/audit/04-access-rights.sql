-- Who can do what with the trail. Append-only for every role the layer
-- creates (app, staff, readonly, auditor): none can UPDATE, DELETE or
-- TRUNCATE it; the app and staff may only add 'access' rows about
-- themselves. clinicdb_auditor reads every clinic's trail; the app,
-- readonly and staff roles read only their own clinic's.
begin;
select plan(43);

select clinicdb_tap.create_clinic('Audit Rights A') as clinic_a \gset
select clinicdb_tap.create_clinic('Audit Rights B') as clinic_b \gset
select clinicdb_tap.seed_reference(:'clinic_a') as patient_a \gset
select clinicdb_tap.seed_reference(:'clinic_b') as patient_b \gset
select clinicdb_tap.create_staff_login('audit_staff_a', :'clinic_a');

-- Privileges, role by role.
select ok(not has_table_privilege(r, 'clinicdb.audit_log', p),
          format('%s cannot %s the audit trail', r, p))
  from unnest(array['clinicdb_app', 'clinicdb_staff', 'clinicdb_readonly', 'clinicdb_auditor']) r,
       unnest(array['UPDATE', 'DELETE', 'TRUNCATE']) p;
select ok(not has_any_column_privilege('clinicdb_readonly', 'clinicdb.audit_log', 'INSERT')
          and not has_any_column_privilege('clinicdb_auditor', 'clinicdb.audit_log', 'INSERT'),
          'readonly and the auditor cannot insert into the trail at all');
select ok(not has_column_privilege('clinicdb_app', 'clinicdb.audit_log', c, 'INSERT'),
          format('the app cannot choose %s of a row it adds', c))
  from unnest(array['txid', 'logged_at', 'clinic_id', 'app_user', 'session_role', 'acting_role', 'new_values']) c;
select ok(not has_sequence_privilege(r, 'clinicdb.audit_log_id_seq', p),
          format('%s cannot %s the audit id sequence (nextval would count every clinic''s activity)', r, lower(p)))
  from unnest(array['clinicdb_app', 'clinicdb_staff']) r, unnest(array['USAGE']) p;
select ok(not has_table_privilege('clinicdb_app', 'clinicdb.audit_log_default', 'SELECT')
          and not has_table_privilege('clinicdb_auditor', 'clinicdb.audit_log_default', 'SELECT'),
          'partitions are not readable directly (only through the trail and its policy)');

-- Reading: the application sees its own clinic's trail only.
select clinicdb_tap.authenticate_as_app(:'clinic_a');
select clinicdb_tap.sees_only_clinic('clinicdb.audit_log', :'clinic_a', 'the app reads only its own clinic''s trail');
select clinicdb_tap.authenticate_as_app(null);
select clinicdb_tap.sees_nothing('clinicdb.audit_log', 'the app with no clinic in force reads no audit row');
select clinicdb_tap.authenticate_as_app(:'clinic_b', 'clinicdb_readonly');
select clinicdb_tap.sees_only_clinic('clinicdb.audit_log', :'clinic_b', 'readonly reads only its own clinic''s trail');
select clinicdb_tap.authenticate_as('audit_staff_a');
select set_config('app.clinic_id', :'clinic_b', true);
select clinicdb_tap.sees_only_clinic('clinicdb.audit_log', :'clinic_a',
                                     'staff read only their mapped clinic''s trail, whatever app.clinic_id says');
select clinicdb_tap.authenticate_as('clinicdb_auditor');
select ok((select count(distinct clinic_id) from clinicdb.audit_log where clinic_id in (:'clinic_a', :'clinic_b')) = 2,
          'the auditor reads every clinic''s trail');
select throws_ok('select count(*) from public.patients', '42501', null, 'the auditor still cannot read PHI tables');
select clinicdb_tap.clear_authentication();

-- Writing: no change rows, no other clinic, no rewriting history.
select clinicdb_tap.authenticate_as_app(:'clinic_a');
select throws_ok($$insert into clinicdb.audit_log (table_name, row_id, action) values ('public.patients', 'x', 'delete')$$,
                 '42501', null, 'the app cannot forge a change row');
select throws_ok($$insert into clinicdb.audit_log (table_name, row_id, action, clinic_id)
                   values ('public.patients', 'x', 'access', '$$ || :'clinic_b' || $$')$$,
                 '42501', null, 'the app cannot write into another clinic''s trail');
select throws_ok($$insert into clinicdb.audit_log (table_name, row_id, action, app_user)
                   values ('public.patients', 'x', 'access', 'somebody-else')$$,
                 '42501', null, 'the app cannot write an access row in another user''s name');
select lives_ok(format($$insert into clinicdb.audit_log (id, table_name, row_id, action, purpose)
                         values (-7, 'public.patients', %L, 'access', 'direct')$$, :'patient_a'),
                'the app may add an access row about a row of its own clinic (what log_access does)');
select ok((select bool_and(id > 0) from clinicdb.audit_log where purpose = 'direct'),
          'the id the app gives an access row is replaced from the trail''s sequence');
select throws_ok(format($$insert into clinicdb.audit_log (id, table_name, row_id, action, purpose)
                          values (0, 'public.patients', %L, 'access', 'direct')$$, :'patient_b'),
                 '42501', 'new row violates row-level security policy for table "audit_log"',
                 'the app cannot log a read of another clinic''s row');
select throws_ok('update clinicdb.audit_log set purpose = $$x$$', '42501', null, 'the app cannot update audit rows');
select throws_ok('delete from clinicdb.audit_log', '42501', null, 'the app cannot delete audit rows');
select throws_ok('truncate clinicdb.audit_log', '42501', null, 'the app cannot truncate the trail');
select throws_ok('delete from clinicdb.audit_log_default', '42501', null, 'the app cannot delete from a partition');
select clinicdb_tap.authenticate_as('audit_staff_a');
select throws_ok('delete from clinicdb.audit_log', '42501', null, 'staff cannot delete audit rows');
select clinicdb_tap.authenticate_as('clinicdb_auditor');
select throws_ok('update clinicdb.audit_log set purpose = $$x$$', '42501', null, 'the auditor cannot update audit rows');
select clinicdb_tap.authenticate_as('clinicdb_owner');
select throws_like('delete from clinicdb.audit_log', 'the audit trail is append-only: DELETE on audit_log_% refused',
                   'even the owner is stopped by the append-only guard outside the retention path');
select throws_ok('truncate clinicdb.audit_log', '42501', null, 'the owner cannot truncate the trail either');
select clinicdb_tap.clear_authentication();

select * from finish();
rollback;
