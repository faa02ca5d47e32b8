-- clinicdb.protect_report() and clinicdb.adopt_table_sql(): the DBA's path to
-- adopting an existing table from psql. The report names what protect_table()
-- cannot decide (and what check_isolation() would find), each with its fix,
-- and reading it changes nothing.
begin;
select plan(9);

create table public.tap_adopt_nulls (id uuid primary key default gen_random_uuid(), clinic_id uuid);
insert into public.tap_adopt_nulls (clinic_id) values (null), (null), (null);
create table public.tap_adopt_parent (id uuid primary key, clinic_id uuid not null, unique (clinic_id, id));
create table public.tap_adopt_child (id uuid primary key, clinic_id uuid not null,
                                     parent_id uuid references public.tap_adopt_parent (id), code text unique);
create table public.tap_adopt_clean (id uuid primary key, clinic_id uuid not null references clinicdb.clinics (id));

select results_eq(
    $$select blocker, detail from clinicdb.protect_report('public.tap_adopt_nulls') where blocking$$,
    $$values ('rows without a clinic', '3 rows of public.tap_adopt_nulls have no clinic_id')$$,
    'rows without a clinic are a blocker, counted');
select ok((select fix like 'give each its clinic%' from clinicdb.protect_report('public.tap_adopt_nulls') where blocking),
          'and the fix says how to give them one');
select set_eq(
    $$select blocker from clinicdb.protect_report('public.tap_adopt_child') where blocking$$,
    array['foreign key without clinic_id', 'unique key without clinic_id'],
    'a foreign key and a unique key that leave clinic_id out are both blockers, in one report');
select ok((select fix from clinicdb.protect_report('public.tap_adopt_child') where blocker = 'foreign key without clinic_id')
          like '%foreign key (clinic_id, parent_id) references public.tap_adopt_parent (clinic_id, id)%',
          'the foreign key''s fix carries clinic_id on both sides');
select is((select count(*) from clinicdb.protect_report('public.tap_adopt_clean') where blocking), 0::bigint,
          'a clean table has no blocker');
select ok((select bool_or(blocker = 'owner') from clinicdb.protect_report('public.tap_adopt_clean')),
          'a table not owned by clinicdb_owner gets a note that adoption hands it over');
select is((select array_agg(s) from clinicdb.adopt_table_sql('public.tap_adopt_clean') s),
          array['alter table public.tap_adopt_clean owner to clinicdb_owner',
                'grant select, insert, update, delete on public.tap_adopt_clean to clinicdb_app, clinicdb_staff',
                'grant select on public.tap_adopt_clean to clinicdb_readonly',
                'select clinicdb.protect_table(''public.tap_adopt_clean'')'],
          'adopt_table_sql() hands the table to the owner, grants the usual rights, then protects it');
select ok(not (select relrowsecurity from pg_class where oid = 'public.tap_adopt_clean'::regclass)
          and not exists (select 1 from clinicdb.protected_tables where table_name = 'public.tap_adopt_clean'::regclass),
          'reading the report and the SQL changes nothing');
select throws_ok($$select * from clinicdb.protect_report('public.tap_adopt_absent')$$, '42P01',
                 'relation "public.tap_adopt_absent" does not exist',
                 'a table that does not exist is an error naming it');

select * from finish();
rollback;
