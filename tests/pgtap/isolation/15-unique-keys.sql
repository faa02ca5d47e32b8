-- Unique indexes are checked across every clinic, below row level security:
-- with a key that leaves clinic_id out, inserting a value another clinic
-- already has fails, and so tells the inserter it exists -- an SSN oracle.
-- check_isolation() reports such keys; per-clinic keys and random uuid ids
-- pass (the uuid case is a documented residual risk).
begin;
select plan(5);

select clinicdb_tap.create_clinic('Uniq A') as a \gset
select clinicdb_tap.create_clinic('Uniq B') as b \gset

set local role clinicdb_owner;
create table public.tap_insured (
    id uuid primary key default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    ssn text unique,
    member_no text,
    unique (clinic_id, member_no)
);
select clinicdb.protect_table('public.tap_insured');
reset role;
insert into public.tap_insured (clinic_id, ssn, member_no) values (:'b', '078-05-1120', 'M-1');

select clinicdb_tap.authenticate_as_app(:'a');
select throws_ok($$insert into public.tap_insured (ssn) values ('078-05-1120')$$, '23505', null,
                 'the oracle is real: clinic A learns that an SSN it cannot read exists in another clinic');
select lives_ok($$insert into public.tap_insured (ssn, member_no) values ('111-22-3333', 'M-1')$$,
                'a per-clinic key (clinic_id, member_no) reveals nothing');
select clinicdb_tap.clear_authentication();

select is(array(select finding from clinicdb.check_isolation() where table_name = 'public.tap_insured'),
          array['unique index public.tap_insured_ssn_key leaves clinic_id out: a value another clinic has is refused, '
                'which reveals it'],
          'check_isolation reports a unique key without clinic_id, and only that one');
create unique index tap_insured_lower_ssn on public.tap_insured (lower(ssn));
select ok('unique index public.tap_insured_lower_ssn leaves clinic_id out: a value another clinic has is refused, which reveals it'
              = any (array(select finding from clinicdb.check_isolation() where table_name = 'public.tap_insured')),
          'check_isolation reports a unique expression index without clinic_id');
select is((select count(*) from clinicdb.check_isolation() where table_name not like 'public.tap\_%'), 0::bigint,
          'the reference schema''s keys (per clinic, or random uuid ids) are not reported');

select * from finish();
rollback;
