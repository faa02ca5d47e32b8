-- Per table and column, the trail can leave a column out ('exclude') or show
-- only that it has a value ('mask'), set with clinicdb.set_audit_column().
-- Encrypted PHI columns hold ciphertext in the table, so the trail holds
-- ciphertext; masking them as well keeps even that out. Neither an
-- encrypted nor a masked column ever appears in plaintext in the trail.
begin;
set local client_min_messages = warning;
select plan(14);

create extension if not exists pgcrypto;
select clinicdb_tap.create_clinic('Audit Masks') as clinic \gset

-- A tenant table with an encrypted PHI column, the way the encryption layer stores it.
create table public.audit_test_notes (
    id uuid primary key default gen_random_uuid(),
    clinic_id uuid not null references clinicdb.clinics (id),
    title text not null,
    body_encrypted bytea,
    internal_flag text,
    secret_hint text
);
select clinicdb.protect_table('public.audit_test_notes');
insert into clinicdb.phi_columns (table_name, column_name, note) values ('public.audit_test_notes', 'body_encrypted', 'test');
grant select, insert, update, delete on public.audit_test_notes to clinicdb_app;

select clinicdb.set_audit_column('public.audit_test_notes', 'internal_flag', 'exclude');
select clinicdb.set_audit_column('public.audit_test_notes', 'secret_hint', 'mask');
select is((select mode from clinicdb.audit_settings where table_name = 'public.audit_test_notes'::regclass
             and column_name = 'secret_hint'), 'mask', 'set_audit_column records the mode');

select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'mask-user', true);
insert into public.audit_test_notes (title, body_encrypted, internal_flag, secret_hint)
values ('visit', clinicdb.pgp_sym_encrypt('PLAINTEXT-DIAGNOSIS-XYZ', 'test-key'), 'flag-value', 'PLAINTEXT-HINT-ABC');
update public.audit_test_notes
   set body_encrypted = clinicdb.pgp_sym_encrypt('PLAINTEXT-UPDATED-QRS', 'test-key'), internal_flag = 'flag-2',
       secret_hint = 'PLAINTEXT-HINT-DEF';
update public.audit_test_notes set internal_flag = 'flag-3';
delete from public.audit_test_notes;
select clinicdb_tap.clear_authentication();

select is((select count(*)::int from clinicdb.audit_log where app_user = 'mask-user'), 3,
          'insert, update and delete were audited; the update of an excluded column alone was not');
select ok(not exists (select 1 from clinicdb.audit_log where app_user = 'mask-user'
                       and (coalesce(old_values::text, '') || coalesce(new_values::text, '')) like '%PLAINTEXT%'),
          'no plaintext of the encrypted or masked columns appears anywhere in the trail');
select ok((select bool_and(clinicdb.pgp_sym_decrypt(decode(substr(new_values ->> 'body_encrypted', 3), 'hex'), 'test-key')
                           like 'PLAINTEXT-%')
             from clinicdb.audit_log where app_user = 'mask-user' and action = 'insert'),
          'the encrypted column is in the trail as its ciphertext (only the key turns it back)');
select ok((select left(new_values ->> 'body_encrypted', 2) = '\x' from clinicdb.audit_log
            where app_user = 'mask-user' and action = 'update'),
          'a changed encrypted column appears as new ciphertext');
select ok(not exists (select 1 from clinicdb.audit_log where app_user = 'mask-user'
                       and (old_values ? 'internal_flag' or new_values ? 'internal_flag')),
          'an excluded column appears in no audit row');
select is((select new_values ->> 'secret_hint' from clinicdb.audit_log where app_user = 'mask-user' and action = 'insert'),
          '[masked]', 'a masked column appears as [masked] on insert');
select is((select array[old_values ->> 'secret_hint', new_values ->> 'secret_hint'] from clinicdb.audit_log
            where app_user = 'mask-user' and action = 'update'),
          array['[masked]', '[masked]'], 'a changed masked column shows that it changed, not its values');

-- The encryption layer can mask its ciphertext columns too.
select clinicdb.set_audit_column('public.audit_test_notes', 'body_encrypted', 'mask');
select clinicdb_tap.authenticate_as_app(:'clinic');
select set_config('app.user_id', 'mask-user-2', true);
insert into public.audit_test_notes (title, body_encrypted) values ('v2', clinicdb.pgp_sym_encrypt('PLAINTEXT-2', 'test-key'));
insert into public.audit_test_notes (title, body_encrypted) values ('v3', null);
select clinicdb_tap.clear_authentication();
select is((select new_values ->> 'body_encrypted' from clinicdb.audit_log where app_user = 'mask-user-2'
            and new_values ->> 'title' = 'v2'), '[masked]', 'a masked encrypted column is only a marker');
select is((select new_values -> 'body_encrypted' from clinicdb.audit_log where app_user = 'mask-user-2'
            and new_values ->> 'title' = 'v3'), 'null'::jsonb, 'a NULL masked column stays NULL');

-- Bad settings are refused with a clear error.
select throws_ok($$select clinicdb.set_audit_column('public.audit_test_notes', 'id', 'mask')$$,
                 '22023', null, 'the primary key cannot be masked or excluded');
select throws_ok($$select clinicdb.set_audit_column('public.audit_test_notes', 'nope', 'exclude')$$,
                 '42703', null, 'an unknown column is refused');
select throws_ok($$select clinicdb.set_audit_column('public.audit_test_notes', 'title', 'hide')$$,
                 '22023', null, 'an unknown mode is refused');

-- Only the owner (and superusers) change what is audited.
select clinicdb_tap.authenticate_as_app(:'clinic');
select throws_ok($$select clinicdb.set_audit_column('public.audit_test_notes', 'title', 'exclude')$$,
                 '42501', null, 'the application cannot exclude columns from the trail');
select clinicdb_tap.clear_authentication();

select * from finish();
rollback;
