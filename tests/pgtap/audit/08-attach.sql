-- Every protected table is audited: the migration attached the trail to
-- every table protect_table() had protected (except policy_reference, which
-- never holds rows), and protect_table() attaches it to every new one.
-- clinicdb.audit_findings() reports a table whose triggers are missing or
-- disabled.
begin;
set local client_min_messages = warning;
select plan(10);

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
    clinic_id uuid not null references public.clinics (id),
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
    clinic_id uuid not null references public.clinics (id),
    a int, b int, label text,
    primary key (clinic_id, a, b)
);
select clinicdb.protect_table('public.audit_test_pairs');
insert into public.audit_test_pairs values (:'clinic', 1, 2, 'x');
select is((select row_id from clinicdb.audit_log where table_name = 'public.audit_test_pairs'),
          format('["%s", 1, 2]', :'clinic'), 'a composite key is recorded as a JSON array');

truncate public.audit_test_pairs;
select is((select count(*)::int from clinicdb.audit_log where table_name = 'public.audit_test_pairs' and action = 'truncate'),
          1, 'a TRUNCATE (owner or superuser only) leaves a system row');

create table public.audit_test_nokey (clinic_id uuid not null references public.clinics (id), label text);
select throws_ok($$select clinicdb.protect_table('public.audit_test_nokey')$$, '42P16', null,
                 'a table without a primary key cannot be audited, and so is not protected half-way');

alter table public.audit_test_things disable trigger clinicdb_audit_update;
select results_eq($$select finding from clinicdb.audit_findings() where table_name = 'public.audit_test_things'$$,
                  $$values ('audit trigger clinicdb_audit_update is disabled')$$,
                  'a disabled audit trigger is a finding');
select clinicdb.detach_audit('public.audit_test_things');
select is((select count(*)::int from clinicdb.audit_findings() where table_name = 'public.audit_test_things'), 4,
          'detached triggers are findings');

select * from finish();
rollback;
