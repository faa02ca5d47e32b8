-- Referential checks and actions run below row level security. A foreign
-- key between tenant tables that leaves clinic_id out therefore lets clinic
-- A point a row at clinic B's row, which also confirms that B's key exists,
-- and lets B's delete cascade into A's rows. The reference schema uses
-- composite keys (clinic_id, x_id); check_isolation() reports any other.
begin;
select plan(6);

select clinicdb_tap.create_clinic('Keys A') as a \gset
select clinicdb_tap.create_clinic('Keys B') as b \gset
select clinicdb_tap.seed_reference(:'a');
select clinicdb_tap.seed_reference(:'b');

set local role clinicdb_owner;
-- A parent keyed by id alone (the reference tables are keyed by (clinic_id, id)).
create table public.tap_parents (
    id uuid primary key default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    unique (clinic_id, id)
);
create table public.tap_notes (
    id uuid primary key default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    parent_id uuid references public.tap_parents (id),
    body text
);
create table public.tap_good_notes (
    id uuid primary key default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    parent_id uuid,
    body text,
    foreign key (clinic_id, parent_id) references public.tap_parents (clinic_id, id)
);
select clinicdb.protect_table('public.tap_parents');
select clinicdb.protect_table('public.tap_notes');
select clinicdb.protect_table('public.tap_good_notes');
reset role;
insert into public.tap_parents (clinic_id) values (:'b') returning id as parent_b \gset

select throws_ok($$create table public.tap_by_id (id uuid primary key, clinic_id uuid not null,
                                                   patient_id uuid references public.patients (id))$$,
                 '42830', 'there is no unique constraint matching given keys for referenced table "patients"',
                 'a reference table can only be pointed at with clinic_id: its key is (clinic_id, id)');
select clinicdb_tap.authenticate_as_app(:'a');
select lives_ok(format($$insert into public.tap_notes (parent_id, body) values (%L, 'x')$$, :'parent_b'),
                'the hole is real: with a key that leaves clinic_id out, clinic A points a note at clinic B''s row');
select throws_ok(format($$insert into public.tap_good_notes (parent_id, body) values (%L, 'x')$$, :'parent_b'),
                 '23503', null, 'with a composite (clinic_id, parent_id) key it cannot');
select clinicdb_tap.clear_authentication();

select is(array(select finding from clinicdb.check_isolation() where table_name = 'public.tap_notes'),
          array['foreign key tap_notes_parent_id_fkey references public.tap_parents without clinic_id: '
                'a row can point at another clinic''s row'],
          'check_isolation reports a foreign key between tenant tables without clinic_id');
select is(array(select finding from clinicdb.check_isolation() where table_name = 'public.tap_good_notes'), '{}'::text[],
          'a composite key carrying clinic_id is not reported');
select is((select count(*) from clinicdb.check_isolation() where table_name not like 'public.tap\_%'), 0::bigint,
          'the reference schema''s keys (composite, and clinic_id -> clinics) are not reported');

select * from finish();
rollback;
