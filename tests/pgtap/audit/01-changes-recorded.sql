-- Every insert, update and delete on every reference table writes exactly
-- the expected audit rows, with the acting context, in the same transaction:
-- a rolled-back change leaves none, and a multi-row statement writes one
-- audit row per changed row.
begin;
select plan(21);

select clinicdb_tap.create_clinic('Audit One') as clinic \gset
select clinicdb_tap.seed_reference(:'clinic') as patient \gset

-- The seed (run as the superuser) wrote one insert row per reference row.
select results_eq(
    $$select table_name, count(*)::int from clinicdb.audit_log
       where clinic_id = '$$ || :'clinic' || $$' and action = 'insert' group by table_name order by table_name$$,
    $$values ('clinicdb.clinic_keys', 1), ('clinicdb.clinics', 1), ('public.appointments', 1), ('public.medical_records', 1),
             ('public.patients', 1), ('public.prescriptions', 1), ('public.staff', 1)$$,
    'one insert row per row inserted into every reference table (clinics included) and for the clinic''s data key');

select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'user-42', true), set_config('app.request_id', 'req-7', true);

-- Insert, update, delete of each reference table as the application.
insert into public.staff (display_name, email) values ('Dr Two', 'two@example.test');
update public.staff set job_role = 'nurse' where email = 'two@example.test';
delete from public.staff where email = 'two@example.test';
insert into public.patients (mrn, given_name, family_name) values ('A-2', 'Ann', 'Two');
update public.patients set phone = '555-0199' where mrn = 'A-2';
insert into public.appointments (patient_id, starts_at, ends_at)
    select id, now(), now() + interval '1 hour' from public.patients where mrn = 'A-2';
update public.appointments set status = 'checked_in' where patient_id = (select id from public.patients where mrn = 'A-2');
insert into public.medical_records (patient_id, notes) select id, 'n' from public.patients where mrn = 'A-2';
update public.medical_records set diagnosis_code = 'J06.9' where patient_id = (select id from public.patients where mrn = 'A-2');
insert into public.prescriptions (patient_id, prescribed_by, medication, dosage)
    select p.id, s.id, 'ibuprofen', '200mg' from public.patients p, public.staff s where p.mrn = 'A-2' limit 1;
update public.prescriptions set dosage = '400mg' where medication = 'ibuprofen';
delete from public.prescriptions where medication = 'ibuprofen';
delete from public.medical_records where patient_id = (select id from public.patients where mrn = 'A-2');
delete from public.appointments where patient_id = (select id from public.patients where mrn = 'A-2');
delete from public.patients where mrn = 'A-2';
select clinicdb_tap.clear_authentication();

select results_eq(
    $$select table_name, action, count(*)::int from clinicdb.audit_log
       where clinic_id = '$$ || :'clinic' || $$' and app_user = 'user-42'
       group by table_name, action order by table_name, action$$,
    $$values ('public.appointments', 'delete', 1), ('public.appointments', 'insert', 1), ('public.appointments', 'update', 1),
             ('public.medical_records', 'delete', 1), ('public.medical_records', 'insert', 1), ('public.medical_records', 'update', 1),
             ('public.patients', 'delete', 1), ('public.patients', 'insert', 1), ('public.patients', 'update', 1),
             ('public.prescriptions', 'delete', 1), ('public.prescriptions', 'insert', 1), ('public.prescriptions', 'update', 1),
             ('public.staff', 'delete', 1), ('public.staff', 'insert', 1), ('public.staff', 'update', 1)$$,
    'insert, update and delete on every reference table each wrote exactly one audit row');

-- The context of an application change.
select is((select count(*)::int from clinicdb.audit_log where app_user = 'user-42' and request_id = 'req-7'),
          15, 'every audit row carries app.user_id and app.request_id');
select is((select count(*)::int from clinicdb.audit_log where app_user = 'user-42' and acting_role = 'clinicdb_app'),
          15, 'acting_role is the role in force (clinicdb_app), not the trigger''s owner');
select is((select count(*)::int from clinicdb.audit_log where app_user = 'user-42' and session_role = session_user),
          15, 'session_role is the login of the session');
select is((select count(distinct txid)::int from clinicdb.audit_log where app_user = 'user-42'), 1,
          'all rows of one transaction share its txid');
select is((select min(txid) from clinicdb.audit_log where app_user = 'user-42'), txid_current(),
          'txid is the changing transaction''s id: the audit row is written in the same transaction');
select ok((select bool_and(statement_at <= logged_at and logged_at <= clock_timestamp())
             from clinicdb.audit_log where app_user = 'user-42'),
          'statement time precedes the wall-clock time of each audit row');
select is((select row_id from clinicdb.audit_log
            where table_name = 'public.patients' and action = 'delete' and app_user = 'user-42'),
          (select old_values ->> 'id' from clinicdb.audit_log
            where table_name = 'public.patients' and action = 'delete' and app_user = 'user-42'),
          'row_id is the primary key of the changed row');
select is((select new_values ->> 'given_name' from clinicdb.audit_log
            where table_name = 'public.patients' and action = 'insert' and app_user = 'user-42'),
          'Ann', 'an insert row holds the new row');
select is((select old_values ->> 'family_name' from clinicdb.audit_log
            where table_name = 'public.patients' and action = 'delete' and app_user = 'user-42'),
          'Two', 'a delete row holds the old row');
select is((select count(*)::int from clinicdb.audit_log
            where app_user = 'user-42' and application_name is not distinct from current_setting('application_name')),
          15, 'application_name is recorded');
select is((select count(*)::int from clinicdb.audit_log
            where app_user = 'user-42' and client_addr is not distinct from inet_client_addr()),
          15, 'the client address is recorded');

-- A rolled-back change leaves no audit row.
select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'user-rollback', true);
savepoint before_change;
insert into public.patients (mrn, given_name, family_name) values ('RB-1', 'Roll', 'Back');
update public.patients set phone = '1' where mrn = 'RB-1';
rollback to savepoint before_change;
select clinicdb_tap.clear_authentication();
select is((select count(*)::int from clinicdb.audit_log where app_user = 'user-rollback'), 0,
          'a rolled-back change leaves no audit row');

-- A failing statement leaves no audit row either.
select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'user-fails', true);
select throws_ok($$insert into public.patients (mrn, given_name, family_name) values ('F-1', 'A', 'B'), ('F-1', 'C', 'D')$$,
                 '23505', null, 'a statement that fails (duplicate mrn) is refused');
select clinicdb_tap.clear_authentication();
select is((select count(*)::int from clinicdb.audit_log where app_user = 'user-fails'), 0,
          'a failed statement leaves no audit row');

-- Multi-row statements: one audit row per changed row.
select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'user-multi', true);
insert into public.patients (mrn, given_name, family_name)
    select 'M-' || g, 'Many', 'Rows' from generate_series(1, 25) g;
update public.patients set phone = '555' where family_name = 'Rows' and mrn <= 'M-2';
update public.patients set sex = 'unknown' where family_name = 'Rows' and sex is null;
delete from public.patients where family_name = 'Rows';
select clinicdb_tap.clear_authentication();
select is((select count(*)::int from clinicdb.audit_log where app_user = 'user-multi' and action = 'insert'), 25,
          'an INSERT ... SELECT of 25 rows writes 25 insert rows');
select is((select count(distinct row_id)::int from clinicdb.audit_log where app_user = 'user-multi' and action = 'insert'), 25,
          'each insert row names a different row');
select is((select count(*)::int from clinicdb.audit_log where app_user = 'user-multi' and action = 'update'), 25 + 12,
          'multi-row updates write one row per changed row (12 + 25)');
select is((select count(*)::int from clinicdb.audit_log where app_user = 'user-multi' and action = 'delete'), 25,
          'a 25-row delete writes 25 delete rows');

-- Changes by the owner or a superuser are audited too.
delete from public.prescriptions where clinic_id = :'clinic';
select is((select count(*)::int from clinicdb.audit_log
            where table_name = 'public.prescriptions' and action = 'delete' and acting_role = session_user
              and clinic_id = :'clinic'),
          1, 'a superuser''s delete is audited like anyone''s');

select * from finish();
rollback;
