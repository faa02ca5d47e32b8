-- A partitioned tenant table: row level security is checked on the table a
-- query NAMES. Selecting from a partition directly skips the parent's
-- policies, and partitions get the default grants. So protect_table() on a
-- partitioned table protects its partitions too, and check_isolation()
-- sweeps partitions, reporting one created later until it is protected.
begin;
select plan(8);

select clinicdb_tap.create_clinic('Part A') as a \gset
select clinicdb_tap.create_clinic('Part B') as b \gset
select clinicdb_tap.create_staff_login('tap_part_alice', :'a');

set local role clinicdb_owner;
create table public.tap_visits (
    id uuid not null default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    visit_on date not null,
    note text,
    updated_at timestamptz not null default now(),
    primary key (clinic_id, id, visit_on)
) partition by range (visit_on);
create table public.tap_visits_2026 partition of public.tap_visits for values from ('2026-01-01') to ('2027-01-01');
create table public.tap_visits_2027 partition of public.tap_visits
    for values from ('2027-01-01') to ('2028-01-01') partition by list (clinic_id);
create table public.tap_visits_2027_rest partition of public.tap_visits_2027 default;
select clinicdb.protect_table('public.tap_visits');
reset role;
insert into public.tap_visits (clinic_id, visit_on, note)
values (:'a', '2026-03-01', 'A note'), (:'b', '2026-03-01', 'B secret'), (:'b', '2027-03-01', 'B secret 2');

select is((select count(*) from clinicdb.check_isolation() where table_name like 'public.tap_visits%'), 0::bigint,
          'protect_table on a partitioned table protects every partition, nested ones too');

select clinicdb_tap.authenticate_as('tap_part_alice');
select clinicdb_tap.sees_only_clinic('public.tap_visits_2026', :'a',
    'staff of clinic A selecting from a partition directly reads only clinic A rows');
select clinicdb_tap.sees_nothing('public.tap_visits_2027_rest',
    'staff of clinic A reads no clinic B row from a nested partition');
select is((select count(*) from public.tap_visits where note like 'B%'), 0::bigint,
          'staff of clinic A reads no clinic B row through the partitioned table');
select clinicdb_tap.authenticate_as_app(:'a');
select clinicdb_tap.sees_only_clinic('public.tap_visits_2026', :'a',
    'the app of clinic A selecting from a partition directly reads only clinic A rows');
select is(clinicdb_tap.rows_changed('update %s set note = ''x'' where clinic_id = $1', 'public.tap_visits_2027_rest', :'b'),
          0::bigint, 'the app of clinic A updates no clinic B row through a partition');
select clinicdb_tap.clear_authentication();

set local role clinicdb_owner;
create table public.tap_visits_2028 partition of public.tap_visits for values from ('2028-01-01') to ('2029-01-01');
reset role;
select ok('row level security is not enabled' = any (
              array(select finding from clinicdb.check_isolation() where table_name = 'public.tap_visits_2028')),
          'check_isolation reports a partition created after protect_table');
set local role clinicdb_owner;
select clinicdb.protect_table('public.tap_visits');
reset role;
select is((select count(*) from clinicdb.check_isolation() where table_name like 'public.tap_visits%'), 0::bigint,
          'protect_table again on the parent protects the new partition');

select * from finish();
rollback;
