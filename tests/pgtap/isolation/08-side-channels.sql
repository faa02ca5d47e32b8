-- Side channels an attacker tries after the front door is shut: planner
-- statistics, unique keys, error detail, function pushdown, and the cost of
-- the policy itself (evaluated once per statement, using the clinic index).
begin;
select plan(7);

select clinicdb_tap.create_clinic('Side A') as a \gset
select clinicdb_tap.create_clinic('Side B') as b \gset
select clinicdb_tap.seed_reference(:'a');
select clinicdb_tap.seed_reference(:'b');
insert into public.patients (clinic_id, mrn, given_name, family_name, ssn)
select :'b', 'B-' || g, 'Secret', 'Name' || g, '999-00-' || lpad(g::text, 4, '0') from generate_series(1, 200) g;
analyze public.patients;

select clinicdb_tap.authenticate_as_app(:'a');
select is((select count(*) from pg_stats where tablename = 'patients'), 0::bigint,
          'planner statistics (most common values, histograms) of a tenant table are hidden from the app');

select lives_ok($$insert into public.patients (mrn, given_name, family_name) values ('B-1', 'x', 'y')$$,
                'a medical record number used by another clinic can be used again: unique keys do not reveal it');

-- A function that raises when it sees a secret must not see other clinics' rows:
-- the policy runs before non-leakproof user predicates.
create function pg_temp.leak(p text) returns boolean language plpgsql cost 0.0001 as $$
begin
    if p like '999-00-%' then raise exception 'leaked %', p; end if;
    return true;
end $$;
select lives_ok($$select * from public.patients where pg_temp.leak(ssn)$$,
                'a cheap user function in WHERE never sees another clinic''s values');

select results_eq($$select count(*) from public.patients where ssn like '999-00-%'$$, array[0::bigint],
                   'searching for another clinic''s values finds nothing');

set local enable_seqscan = off;  -- plans as on a table large enough for the indexes to matter
select ok(exists (select 1 from clinicdb_tap.plan_nodes('select * from public.patients order by created_at desc limit 50')
                  where parent_relationship = 'InitPlan'),
          'the clinic is evaluated once per statement (InitPlan), not per row');
select ok(exists (select 1 from clinicdb_tap.plan_nodes('select * from public.patients order by created_at desc limit 50')
                  where relation = 'patients' and index_cond like '(clinic_id = %'),
          'the clinic filter is an index condition on the (clinic_id, ...) index');
select ok(not exists (select 1 from clinicdb_tap.plan_nodes('select count(*) from public.patients')
                      where node_type = 'Seq Scan'),
          'a count of one clinic does not scan the whole table');

select * from finish();
rollback;
