-- Tampering fails loudly: a flipped ciphertext byte, a value moved to
-- another row or column, a truncated value, a tampered wrapped key.
begin;
select plan(6);

select set_config('app.master_key', repeat('6a', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('integrity')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
insert into patients (id, mrn, given_name, family_name, ssn, phone) values
    ('00000000-0000-4000-8000-000000000601', 'I-1', 'One', 'Row', '111-11-1111', '+1 555 0101'),
    ('00000000-0000-4000-8000-000000000602', 'I-2', 'Two', 'Row', '222-22-2222', '+1 555 0102');
select clinicdb_tap.clear_authentication();

-- Each case is applied by a superuser (a DBA without the key) and read by the app.
create function pg_temp.read_after(p_tamper text) returns text language plpgsql as $$
declare
    v_state text;
begin
    execute p_tamper;
    perform clinicdb_tap.authenticate_as_app(current_setting('test.clinic')::uuid);
    perform ssn, phone from patients_decrypted;
    perform clinicdb_tap.clear_authentication();
    raise exception 'read back without error' using errcode = 'P0001';
exception when others then
    get stacked diagnostics v_state = returned_sqlstate;
    return v_state;  -- the block's changes (the tampering) are undone with it
end $$;

select is(pg_temp.read_after($$update public.patients set ssn_ciphertext = set_byte(ssn_ciphertext, 40, get_byte(ssn_ciphertext, 40) # 1) where mrn = 'I-1'$$),
    'XX001', 'a flipped ciphertext byte fails the integrity check');
select is(pg_temp.read_after($$update public.patients set ssn_ciphertext = set_byte(ssn_ciphertext, length(ssn_ciphertext) - 1, get_byte(ssn_ciphertext, length(ssn_ciphertext) - 1) # 128) where mrn = 'I-1'$$),
    'XX001', 'a flipped tag byte fails the integrity check');
select is(pg_temp.read_after($$update public.patients p set ssn_ciphertext = (select ssn_ciphertext from public.patients where mrn = 'I-2') where mrn = 'I-1'$$),
    'XX001', 'an SSN moved to another patient''s row fails (values are bound to their row)');
select is(pg_temp.read_after($$update public.patients set phone_ciphertext = ssn_ciphertext where mrn = 'I-1'$$),
    'XX001', 'an SSN moved into the phone column fails (values are bound to their column)');
select is(pg_temp.read_after($$update public.patients set ssn_ciphertext = substring(ssn_ciphertext from 1 for 40) where mrn = 'I-1'$$),
    'XX001', 'a truncated value fails');
-- (A new transaction unwraps again; here the keyring this one cached is dropped.)
select is(pg_temp.read_after($$update clinicdb.clinic_keys set wrapped_key = set_byte(wrapped_key, 20, get_byte(wrapped_key, 20) # 1) where clinic_id = current_setting('test.clinic')::uuid; select set_config('clinicdb.keyring', '', true)$$),
    'XX001', 'a tampered wrapped key fails its own integrity check');

select * from finish();
rollback;
