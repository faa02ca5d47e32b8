-- The WITH CHECK half of the policy on its own, on a table protect_table()
-- protects without the touch_row trigger (no updated_at column): an update
-- cannot move a row to another clinic, because the policy refuses the new row.
begin;
select plan(3);

select clinicdb_tap.create_clinic('Check A') as a \gset
select clinicdb_tap.create_clinic('Check B') as b \gset
create table public.tap_notes (id uuid primary key default gen_random_uuid(),
                               clinic_id uuid not null references clinicdb.clinics (id), body text);
grant select, insert, update, delete on public.tap_notes to clinicdb_app;
select clinicdb.protect_table('public.tap_notes');

select clinicdb_tap.authenticate_as_app(:'a');
insert into public.tap_notes (body) values ('mine');
select throws_ok(format('update public.tap_notes set clinic_id = %L', :'b'),
                 '42501', 'new row violates row-level security policy for table "tap_notes"',
                 'the update policy''s WITH CHECK refuses a row moved to another clinic');
select throws_ok(format($$insert into public.tap_notes (clinic_id, body) values (%L, 'theirs')$$, :'b'),
                 '42501', 'new row violates row-level security policy for table "tap_notes"',
                 'the insert policy refuses a row for another clinic');
select is((select count(*) from public.tap_notes), 1::bigint, 'only the row of the clinic in force exists');

select * from finish();
rollback;
