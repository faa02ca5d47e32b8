-- The application role sees and changes only the clinic in force, on every
-- reference table; with no clinic in force it reads nothing and cannot write.
begin;
select plan(33);

select clinicdb_tap.create_clinic('App A') as a \gset
select clinicdb_tap.create_clinic('App B') as b \gset
select clinicdb_tap.seed_reference(:'a');
select clinicdb_tap.seed_reference(:'b');

select clinicdb_tap.authenticate_as_app(:'a');
select clinicdb_tap.sees_only_clinic(t, :'a', format('app in clinic A reads only clinic A rows of %s', t)) from clinicdb_tap.reference_tables() t;
select is(clinicdb_tap.rows_changed('update %s set updated_at = now() where clinic_id = $1', t, :'b'), 0::bigint,
          format('app in clinic A updates no clinic B row of %s', t)) from clinicdb_tap.reference_tables() t;
-- (clinicdb.clinics grants no delete at all: there the proof is the refusal.)
select case when has_table_privilege(t, 'delete')
            then is(clinicdb_tap.rows_changed('delete from %s where clinic_id = $1', t, :'b'), 0::bigint,
                    format('app in clinic A deletes no clinic B row of %s', t))
            else throws_ok(format('delete from %s where clinic_id = %L', t, :'b'), '42501', null,
                           format('app in clinic A may not delete from %s at all', t)) end
  from clinicdb_tap.reference_tables() t;

select throws_ok(format($$insert into public.patients (clinic_id, mrn, given_name, family_name) values (%L, 'X', 'x', 'y')$$, :'b'),
                 '42501', null, 'app in clinic A cannot insert a patient into clinic B');
select lives_ok($$insert into public.patients (mrn, given_name, family_name) values ('DEFAULTED', 'x', 'y')$$,
                'app in clinic A can insert without naming the clinic');
select is((select clinic_id from public.patients where mrn = 'DEFAULTED'), :'a'::uuid,
          'a row inserted without clinic_id lands in the clinic in force');
select throws_ok(format($$update public.patients set clinic_id = %L$$, :'b'), '23514',
                 'clinic_id of a patients row cannot change',
                 'app in clinic A cannot move its patients to clinic B');
select throws_ok(format($$insert into public.patients (id, clinic_id, mrn, given_name, family_name)
                          select gen_random_uuid(), %L, 'Y', 'x', 'y'$$, :'b'),
                 '42501', null, 'INSERT ... SELECT cannot land rows in another clinic either');
select is((select count(*) from public.patients p where p.clinic_id = :'b'), 0::bigint,
          'a filter naming clinic B explicitly still returns nothing to clinic A');

-- With no clinic in force: nothing readable, nothing writable.
select clinicdb_tap.authenticate_as_app(null);
select clinicdb_tap.sees_nothing(t, format('with no clinic in force the app reads nothing from %s', t)) from clinicdb_tap.reference_tables() t;
select throws_ok($$insert into public.patients (mrn, given_name, family_name) values ('NONE', 'x', 'y')$$,
                 '42501', 'no clinic is in force for this transaction',
                 'with no clinic in force an insert fails and says to set app.clinic_id');
select throws_ok($$update public.patients set given_name = 'x'$$, '42501', 'no clinic is in force for this transaction',
                 'with no clinic in force an update fails loudly');
select throws_ok($$delete from public.prescriptions$$, '42501', 'no clinic is in force for this transaction',
                 'with no clinic in force a delete fails loudly');

select * from finish();
rollback;
