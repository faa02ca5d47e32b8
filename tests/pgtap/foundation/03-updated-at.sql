-- updated_at is kept by the database on every update; clinic_id never changes
-- in place, not even for a superuser (who is not bound by the policies).
begin;
select plan(4);

select clinicdb_tap.create_clinic('Conventions A') as a \gset
select clinicdb_tap.create_clinic('Conventions B') as b \gset
select clinicdb_tap.seed_reference(:'a') as patient \gset

update public.patients set updated_at = '2000-01-01' where id = :'patient';
select ok((select updated_at > '2000-01-02' from public.patients where id = :'patient'),
          'a client-supplied updated_at is replaced by the database clock');

select updated_at as before from public.patients where id = :'patient' \gset
update public.patients set given_name = 'Changed' where id = :'patient';
select ok((select updated_at > :'before'::timestamptz from public.patients where id = :'patient'),
          'updated_at moves forward on update, even twice in one transaction');
select ok((select created_at < updated_at from public.patients where id = :'patient'),
          'created_at stays as it was');

select throws_ok(format('update public.patients set clinic_id = %L where id = %L', :'b', :'patient'),
                 '23514', 'clinic_id of a patients row cannot change',
                 'even a superuser cannot move a row to another clinic in place');

select * from finish();
rollback;
