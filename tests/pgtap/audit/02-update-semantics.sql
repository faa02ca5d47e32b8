-- What an update writes: only the changed columns, plus the key, before and
-- after. An update that changes no audited column -- nothing at all, or only
-- excluded columns such as updated_at -- writes no audit row (documented in
-- docs/audit.md): the trail records changes of data, not statements.
begin;
select plan(11);

select clinicdb_tap.create_clinic('Audit Updates') as clinic \gset
select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'upd', true);
insert into public.patients (mrn, given_name, family_name, address, email) values ('U-1', 'Una', 'Date', '1 Old Road', 'a@x.test');
update public.patients set address = '2 New Road', email = 'b@x.test' where mrn = 'U-1';
select clinicdb_tap.clear_authentication();

select is((select old_values from clinicdb.audit_log where app_user = 'upd' and action = 'update'),
          jsonb_build_object('id', (select id from public.patients where mrn = 'U-1'), 'address', '1 Old Road', 'email', 'a@x.test'),
          'old_values holds the changed columns and the key, before');
select is((select new_values from clinicdb.audit_log where app_user = 'upd' and action = 'update'),
          jsonb_build_object('id', (select id from public.patients where mrn = 'U-1'), 'address', '2 New Road', 'email', 'b@x.test'),
          'new_values holds the changed columns and the key, after');

select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'noop', true);
update public.patients set address = address where mrn = 'U-1';
select clinicdb_tap.clear_authentication();
select is((select count(*)::int from clinicdb.audit_log where app_user = 'noop'), 0,
          'an update that changes nothing writes no audit row (updated_at, excluded, still moved)');

select ok((select updated_at > created_at from public.patients where mrn = 'U-1'),
          'the no-op update did run (touch_row moved updated_at)');
select ok(not exists (select 1 from clinicdb.audit_log
                       where table_name = 'public.patients' and (old_values ? 'updated_at' or new_values ? 'updated_at')),
          'updated_at is left out of the trail by default');

-- Setting NULL is a change.
select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'tonull', true);
update public.patients set email = null where mrn = 'U-1';
select clinicdb_tap.clear_authentication();
select is((select new_values from clinicdb.audit_log where app_user = 'tonull'),
          jsonb_build_object('id', (select id from public.patients where mrn = 'U-1'), 'email', null),
          'setting a column to NULL is recorded as a change to null');

-- Including updated_at again makes every update visible.
select clinicdb.set_audit_column('public.patients', 'updated_at', 'include');
select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'noop2', true);
update public.patients set address = address where mrn = 'U-1';
select clinicdb_tap.clear_authentication();
select is((select count(*)::int from clinicdb.audit_log where app_user = 'noop2'), 1,
          'with updated_at included, the same statement writes one row');
select is((select array(select jsonb_object_keys(new_values) order by 1) from clinicdb.audit_log where app_user = 'noop2'),
          array['id', 'updated_at'], '...holding only the key and updated_at');

-- A changed primary key: one update row, the old key before and the new after.
select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'rekey', true);
update public.patients set id = '00000000-0000-4000-8000-000000000001' where mrn = 'U-1';
select clinicdb_tap.clear_authentication();
select is((select new_values ->> 'id' from clinicdb.audit_log where app_user = 'rekey'),
          '00000000-0000-4000-8000-000000000001', 'an update of the key records the new key after...');
select is((select old_values ->> 'id' from clinicdb.audit_log where app_user = 'rekey'),
          (select row_id from clinicdb.audit_log where app_user = 'upd' and action = 'update'),
          '...and the old key before');

-- A column added after the table was audited is audited at once.
alter table public.patients add column audit_test_extra text;
select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'newcol', true);
update public.patients set audit_test_extra = 'added later' where mrn = 'U-1';
select clinicdb_tap.clear_authentication();
select is((select new_values ->> 'audit_test_extra' from clinicdb.audit_log where app_user = 'newcol'),
          'added later', 'a column added after auditing began is recorded without re-attaching');

select * from finish();
rollback;
