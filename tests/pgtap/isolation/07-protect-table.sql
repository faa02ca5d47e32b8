-- clinicdb.protect_table(): idempotent, complete, and refuses what it cannot protect.
begin;
select plan(10);

create table public.tap_visits (id uuid primary key default gen_random_uuid(),
                                clinic_id uuid references clinicdb.clinics (id),
                                updated_at timestamptz not null default now());
create table public.tap_no_clinic (id int);
create table public.tap_text_clinic (clinic_id text);

select lives_ok($$select clinicdb.protect_table('public.tap_visits')$$, 'protect_table() protects a table with clinic_id');
select lives_ok($$select clinicdb.protect_table('public.tap_visits')$$, 'protect_table() can run again on the same table');
select is((select count(*) from pg_policy where polrelid = 'public.tap_visits'::regclass), 4::bigint,
          'running it twice leaves exactly the four standard policies');
select policies_are('public', 'tap_visits',
    array['clinicdb_tenant_select', 'clinicdb_tenant_insert', 'clinicdb_tenant_update', 'clinicdb_tenant_delete'],
    'the four standard policies: select, insert, update, delete');
select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'public.tap_visits'::regclass),
          'row level security is enabled and forced');
select col_not_null('public', 'tap_visits', 'clinic_id', 'clinic_id is made not null');
select has_trigger('public', 'tap_visits', 'clinicdb_touch_row', 'a table with updated_at gets the touch_row trigger');
select ok(exists (select 1 from clinicdb.protected_tables where table_name = 'public.tap_visits'::regclass),
          'the table is recorded in the registry');

select throws_ok($$select clinicdb.protect_table('public.tap_no_clinic')$$, '42703',
                 'table public.tap_no_clinic has no clinic_id column', 'a table without clinic_id is refused by name');
select throws_ok($$select clinicdb.protect_table('public.tap_text_clinic')$$, '42804',
                 'table public.tap_text_clinic: clinic_id is text, not uuid', 'a clinic_id of the wrong type is refused');

select * from finish();
rollback;
