-- An error on a protected table names no row values: PostgreSQL leaves the
-- DETAIL of a unique, check or not-null violation out when row level
-- security applies to the table, so neither the client nor the server log
-- (which records the DETAIL with the error) receives a patient's values.
-- A superuser, whom RLS does not apply to, gets them: the control.
begin;
select plan(4);

select clinicdb_tap.create_clinic('Err A') as a \gset

set local role clinicdb_owner;
create table public.tap_errs (
    id uuid primary key default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    code text not null,
    amount integer check (amount > 0),
    unique (clinic_id, code)
);
select clinicdb.protect_table('public.tap_errs');
reset role;
insert into public.tap_errs (clinic_id, code, amount) values (:'a', 'SECRET-1', 1);

-- The DETAIL of the error a statement raises ('' when there is none).
create function pg_temp.detail_of(p_sql text) returns text language plpgsql as $$
declare
    v_detail text;
begin
    execute p_sql;
    return '(no error)';
exception when others then
    get stacked diagnostics v_detail = pg_exception_detail;
    return coalesce(v_detail, '');
end
$$;

select ok(pg_temp.detail_of($$insert into public.tap_errs (clinic_id, code, amount)
                              values ('$$ || :'a' || $$', 'SECRET-1', 2)$$) like '%SECRET-1%',
          'control: a role RLS does not apply to sees the duplicate key''s values in the DETAIL');

select clinicdb_tap.authenticate_as_app(:'a');
select is(pg_temp.detail_of($$insert into public.tap_errs (code, amount) values ('SECRET-1', 2)$$), '',
          'a unique violation on a protected table names no key values');
select is(pg_temp.detail_of($$insert into public.tap_errs (code, amount) values ('SECRET-2', -5)$$), '',
          'a check violation on a protected table does not show the failing row');
select is(pg_temp.detail_of($$update public.tap_errs set code = null where code = 'SECRET-1'$$), '',
          'a not-null violation on a protected table does not show the failing row');
select clinicdb_tap.clear_authentication();

select * from finish();
rollback;
