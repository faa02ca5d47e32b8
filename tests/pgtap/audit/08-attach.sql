-- Every protected table is audited: the migration attached the trail to
-- every table protect_table() had protected (except policy_reference, which
-- never holds rows), and protect_table() attaches it to every new one.
-- clinicdb.audit_findings() reports a table whose triggers are missing or
-- disabled.
begin;
set local client_min_messages = warning;
select plan(21);

select is_empty('select * from clinicdb.audit_findings()', 'every protected table has its audit triggers, enabled');
select set_eq($$select tgrelid::regclass::text from pg_trigger where tgname = 'clinicdb_audit_insert'$$,
              $$select table_name::text from clinicdb.protected_tables
                 where table_name <> 'clinicdb.policy_reference'::regclass$$,
              'the audit triggers are on exactly the protected tables, policy_reference excepted');
select ok(not exists (select 1 from pg_trigger where tgrelid = 'clinicdb.policy_reference'::regclass
                       and tgname like 'clinicdb_audit%'),
          'policy_reference (which never holds rows) is not audited');

create table public.audit_test_things (
    id bigint generated always as identity primary key,
    clinic_id uuid not null references clinicdb.clinics (id),
    label text
);
select clinicdb.protect_table('public.audit_test_things');
select is((select count(*)::int from pg_trigger where tgrelid = 'public.audit_test_things'::regclass
             and tgname like 'clinicdb_audit%'), 4, 'protect_table attaches the four audit triggers to a new table');

select clinicdb_tap.create_clinic('Audit Attach') as clinic \gset
insert into public.audit_test_things (clinic_id, label) values (:'clinic', 'a');
select is((select row_id from clinicdb.audit_log where table_name = 'public.audit_test_things'),
          (select id::text from public.audit_test_things), 'a table with a bigint key is audited by that key');

create table public.audit_test_pairs (
    clinic_id uuid not null references clinicdb.clinics (id),
    a int, b int, label text,
    primary key (clinic_id, a, b)
);
select clinicdb.protect_table('public.audit_test_pairs');
insert into public.audit_test_pairs values (:'clinic', 1, 2, 'x');
select is((select row_id from clinicdb.audit_log where table_name = 'public.audit_test_pairs'),
          '[1, 2]', 'a composite key is recorded as a JSON array, without the clinic (a column of its own)');

truncate public.audit_test_pairs;
select is((select count(*)::int from clinicdb.audit_log where table_name = 'public.audit_test_pairs' and action = 'truncate'),
          1, 'a TRUNCATE (owner or superuser only) leaves a system row');

create table public.audit_test_nokey (clinic_id uuid not null references clinicdb.clinics (id), label text);
select throws_ok($$select clinicdb.protect_table('public.audit_test_nokey')$$, '42P16', null,
                 'a table without a primary key cannot be audited, and so is not protected half-way');

-- Each audited table has its own generated capture functions.
select is((select count(*)::int from pg_trigger t join pg_proc p on p.oid = t.tgfoid
            where t.tgrelid = 'public.audit_test_things'::regclass
              and t.tgname in ('clinicdb_audit_insert', 'clinicdb_audit_update', 'clinicdb_audit_delete')
              and p.prosecdef and pg_get_userbyid(p.proowner) = 'clinicdb_owner'
              and not has_function_privilege('public', p.oid, 'EXECUTE')),
          3, 'the generated capture functions are SECURITY DEFINER, owned by clinicdb_owner, not executable by others');
select clinicdb.attach_audit('public.audit_test_things');
select is((select count(*)::int from pg_proc where proname like 'audit\_audit\_test\_things\_%'), 3,
          're-attaching replaces the generated functions instead of adding more');

-- The table changes after the trail was attached: a column added later is
-- still recorded when it changes (and only then); a dropped column breaks nothing.
alter table public.audit_test_things add column added_later text, add column dropped_later text;
update public.audit_test_things set added_later = 'new value';
select is((select new_values from clinicdb.audit_log where table_name = 'public.audit_test_things' and action = 'update'),
          jsonb_build_object('id', (select id from public.audit_test_things), 'added_later', 'new value'),
          'a change of a column added after the trail was attached is recorded (only it and the key)');
update public.audit_test_things set label = 'b';
select is((select new_values from clinicdb.audit_log where table_name = 'public.audit_test_things' and action = 'update'
            order by id desc limit 1),
          jsonb_build_object('id', (select id from public.audit_test_things), 'label', 'b'),
          'an unchanged column added later stays out of an update''s images');
update public.audit_test_things set added_later = added_later;
select is((select count(*)::int from clinicdb.audit_log where table_name = 'public.audit_test_things' and action = 'update'),
          2, 'an update that changes nothing writes no row, with columns added later too');
-- A column the capture functions know of is dropped: updates fail (none
-- goes unaudited) until attach_audit() regenerates them.
select clinicdb.attach_audit('public.audit_test_things');
alter table public.audit_test_things drop column dropped_later;
select throws_ok($$update public.audit_test_things set label = 'c'$$, '42703', null,
                 'after a known column is dropped, an update fails rather than go unaudited');
select results_eq($$select finding from clinicdb.audit_findings() where table_name = 'public.audit_test_things'$$,
                  $$values ('audit capture functions are out of date (column dropped_later dropped or renamed): '
                            'updates fail until select clinicdb.attach_audit(''public.audit_test_things'')')$$,
                  'out-of-date capture functions are a finding that says what to run');
select clinicdb.attach_audit('public.audit_test_things');
select is_empty($$select * from clinicdb.audit_findings() where table_name = 'public.audit_test_things'$$,
                'after attach_audit() again the finding is gone');
update public.audit_test_things set label = 'c';
delete from public.audit_test_things;
select is((select count(*)::int from clinicdb.audit_log where table_name = 'public.audit_test_things'
             and action in ('update', 'delete')),
          4, 'after attach_audit() again, updates and deletes are recorded');

alter table public.audit_test_things disable trigger clinicdb_audit_update;
select results_eq($$select finding from clinicdb.audit_findings() where table_name = 'public.audit_test_things'$$,
                  $$values ('audit trigger clinicdb_audit_update is disabled')$$,
                  'a disabled audit trigger is a finding');
alter table public.audit_test_things enable trigger clinicdb_audit_update;
alter table public.audit_test_things drop constraint audit_test_things_pkey, add primary key (label);
select results_eq($$select finding from clinicdb.audit_findings() where table_name = 'public.audit_test_things'$$,
                  $$values ('audit capture functions are out of date (primary key changed): '
                            'updates fail until select clinicdb.attach_audit(''public.audit_test_things'')')$$,
                  'a new primary key is a finding too');
select clinicdb.detach_audit('public.audit_test_things');
select is((select count(*)::int from clinicdb.audit_findings() where table_name = 'public.audit_test_things'), 4,
          'detached triggers are findings');
select is((select count(*)::int from pg_proc where proname like 'audit\_audit\_test\_things\_%'), 0,
          'detaching drops the table''s generated capture functions');

select * from finish();
rollback;
