-- The master key: reading or writing without it, with the wrong one or with
-- a malformed one fails with a clear error that never contains the key.
begin;
select plan(9);

create function pg_temp.error_of(p_sql text) returns text language plpgsql as $$
declare
    v_message text; v_detail text; v_hint text; v_context text;
begin
    execute p_sql;
    return null;
exception when others then
    get stacked diagnostics v_message = message_text, v_detail = pg_exception_detail,
                            v_hint = pg_exception_hint, v_context = pg_exception_context;
    return concat_ws(' | ', v_message, v_detail, v_hint, v_context);
end $$;

select set_config('app.master_key', repeat('4c', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('master key')::text, true);
select set_config('test.nokey', clinicdb_tap.create_clinic('master key, no data key')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into patients (mrn, given_name, family_name, ssn) values ('MK-1', 'Key', 'Holder', '222-33-4444');

select set_config('app.master_key', '', true);
select throws_ok($$select ssn from patients_decrypted where mrn = 'MK-1'$$, '42501',
    'cannot decrypt public.patients.ssn: no master key is in force for this transaction (app.master_key is not set)',
    'reading without the master key fails clearly');
select is((select mrn from patients_decrypted where mrn = 'MK-1'), 'MK-1',
    'without the key, columns that need no decryption still read');
select throws_ok($$insert into patients (mrn, given_name, family_name, ssn) values ('MK-2', 'No', 'Key', '1')$$, '42501',
    'cannot encrypt public.patients values: no master key is in force for this transaction',
    'writing PHI without the master key fails clearly and stores nothing');

select set_config('app.master_key', repeat('5b', 32), true);
select throws_like($$select ssn from patients_decrypted where mrn = 'MK-1'$$,
    'the master key in force (id %) is not the one that wrapped the keys of clinic %',
    'a wrong master key is named as such (by fingerprint), not reported as corrupt data');
select throws_ok($$insert into patients (mrn, given_name, family_name, ssn) values ('MK-3', 'Wrong', 'Key', '1')$$,
    '28000', null, 'a wrong master key cannot write either');

select set_config('app.master_key', 'not-a-key-Secret123', true);
select throws_ok($$select ssn from patients_decrypted where mrn = 'MK-1'$$, '22023',
    'app.master_key is not a master key: expected 64 hex digits, got 19 characters',
    'a malformed master key is reported by its length');
select ok(pg_temp.error_of($$select ssn from patients_decrypted where mrn = 'MK-1'$$) not like '%Secret123%',
    'the error for a malformed master key does not echo it (message, detail, hint, context)');

select set_config('app.master_key', repeat('4c', 32), true);
select clinicdb_tap.authenticate_as_app(current_setting('test.nokey')::uuid);
select throws_ok($$insert into patients (mrn, given_name, family_name, ssn) values ('MK-4', 'New', 'Clinic', '1')$$,
    '55000', null, 'a clinic without a data key cannot store PHI until an operator creates one');
select clinicdb_tap.clear_authentication();
select throws_ok($$select clinicdb.rotate_clinic_key(current_setting('test.nokey')::uuid) from (select set_config('app.master_key', repeat('5b', 32), true)) s$$,
    '28000', null, 'an operator cannot create a key under a master key other than the database''s');

select * from finish();
rollback;
