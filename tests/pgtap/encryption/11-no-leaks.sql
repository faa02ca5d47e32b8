-- Keys and plaintext never appear in error messages (message, detail, hint,
-- context), in pg_stat_activity, or in what the write path leaves in the row
-- (which is also all the audit trail can record). The server log is checked
-- by tests/py/test_keys_logging.py.
begin;
select plan(5);

-- The application sends PHI as bind parameters: so does this helper ($1).
create function pg_temp.error_of(p_sql text, p_value text default '078-05-1120') returns text language plpgsql as $$
declare
    v_message text; v_detail text; v_hint text; v_context text;
begin
    execute p_sql using p_value;
    return '';
exception when others then
    get stacked diagnostics v_message = message_text, v_detail = pg_exception_detail,
                            v_hint = pg_exception_hint, v_context = pg_exception_context;
    return concat_ws(' | ', v_message, v_detail, v_hint, v_context);
end $$;

select set_config('app.master_key', repeat('d4', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('no leaks')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into patients (id, mrn, given_name, family_name, ssn) values ('00000000-0000-4000-8000-000000001101', 'NL-1', 'No', 'Leak', '078-05-1120');
select clinicdb_tap.clear_authentication();

create temporary table errors (what text, error text) on commit drop;
grant insert, select on errors to clinicdb_app;
update public.patients set ssn_ciphertext = set_byte(ssn_ciphertext, 40, get_byte(ssn_ciphertext, 40) # 1) where mrn = 'NL-1';
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into errors values ('tampered read', pg_temp.error_of($$select ssn from patients_decrypted$$));
select set_config('app.master_key', repeat('e5', 32), true);
insert into errors values ('wrong key read', pg_temp.error_of($$select ssn from patients_decrypted$$));
insert into errors values ('wrong key write', pg_temp.error_of($$insert into patients (mrn, given_name, family_name, ssn) values ('NL-2', 'x', 'y', $1)$$));
select set_config('app.master_key', 'd4d4d4d4-my-secret-master', true);
insert into errors values ('malformed key', pg_temp.error_of($$select ssn from patients_decrypted$$));
insert into errors values ('malformed key lookup', pg_temp.error_of($$select clinicdb.blind_index('public.patients', 'ssn', $1)$$));
select set_config('app.master_key', '', true);
insert into errors values ('no key write', pg_temp.error_of($$insert into patients (mrn, given_name, family_name, ssn) values ('NL-3', 'x', 'y', $1)$$));
select clinicdb_tap.clear_authentication();

select is((select count(*)::int from errors where error = ''), 0, 'every scenario failed (so the checks below mean something)');
select is((select string_agg(what, ', ') from errors where error ilike '%' || repeat('d4', 32) || '%' or error ilike '%' || repeat('e5', 32) || '%' or error like '%my-secret%'),
    null, 'no error message, detail, hint or context contains a master key');
select is((select string_agg(what, ', ') from errors where error like '%078-05-1120%'),
    null, 'no error message, detail, hint or context contains the plaintext SSN');
select ok((select query from pg_stat_activity where pid = pg_backend_pid()) not like '%' || repeat('d4', 32) || '%',
    'pg_stat_activity does not show the key set by set_config');
select ok((select p::text from public.patients p where mrn = 'NL-1') not like '%078-05-1120%',
    'the row the audit trail would copy holds ciphertext and blind index only');

select * from finish();
rollback;
