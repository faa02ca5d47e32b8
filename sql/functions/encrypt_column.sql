-- Declaring a column encrypted, and what that generates.
--
-- clinicdb.encrypt_column('public.patients', 'ssn', p_blind_index => true):
--   * patients.ssn stays, as the column the application writes plaintext
--     into (insert, update, COPY: every path). A BEFORE trigger encrypts it
--     into ssn_ciphertext (and ssn_blind_index) and sets ssn to NULL, and a
--     CHECK constraint proves no plaintext is ever stored in it.
--   * public.patients_decrypted, a security_invoker view, gives every column
--     with ssn decrypted for the clinic in force, under the same name.
-- Why a write slot beside a bytea column (and not the column itself turned
-- into ciphertext): existing writers keep working unchanged and cannot store
-- plaintext by accident; bytea keeps decryption to one HMAC and one AES call
-- per value (text envelopes would need base64 decoding several times per
-- row). The cost: reading patients.ssn directly gives NULL; read the view.
-- docs/encryption.md discusses the choice.
--
-- clinicdb.encryption_sql(table) returns the generated statements, for
-- review (`clinicdb keys sql TABLE`); encrypt_column runs exactly those.

create or replace function clinicdb._label_prefix_literal(p_label text)
returns text
language sql
immutable
parallel safe
return quote_literal('\x' || encode(int4send(octet_length(p_label)) || convert_to(p_label, 'UTF8'), 'hex')) || '::bytea';

-- encrypt_column adds columns and decrypt_column drops them: an audited
-- table's generated capture functions are regenerated from its columns
-- (attach_audit), so they never name a column the table lacks.
create or replace function clinicdb._refresh_audit(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if exists (select 1 from pg_trigger where tgrelid = p_table and tgname = 'clinicdb_audit_update') then
        perform clinicdb.attach_audit(p_table);
    end if;
end
$$;
comment on function clinicdb._refresh_audit(regclass) is
    'clinicdb: regenerate an audited table''s capture functions after encrypt_column() or decrypt_column() changed its columns.';
revoke execute on function clinicdb._refresh_audit(regclass) from public;

create or replace function clinicdb.encryption_sql(p_table regclass)
returns setof text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_schema name;
    v_rel name;
    v_owner name;
    v_table text;
    v_function text;
    v_view text;
    v_row_key name;
    v_col record;
    v_body text := '';
    v_any text := '';
    v_key_check text := '';
    v_update_of text := '';
    v_columns text := '';
    v_attr record;
    v_enc record;
begin
    select n.nspname, c.relname, pg_get_userbyid(c.relowner) into v_schema, v_rel, v_owner
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;
    v_table := format('%I.%I', v_schema, v_rel);
    v_function := format('clinicdb.%I', left('seal_' || v_schema || '_' || v_rel, 63));
    v_view := format('%I.%I', v_schema, left(v_rel || '_decrypted', 63));

    if not exists (select 1 from clinicdb.encrypted_columns where table_name = p_table) then
        return next format('drop view if exists %s', v_view);
        return next format('drop trigger if exists clinicdb_encrypt on %s', v_table);
        return next format('drop function if exists %s()', v_function);
        return;
    end if;

    for v_col in
        select ec.column_name as c, ec.column_name || '_ciphertext' as ct, ec.column_name || '_blind_index' as bi,
               ec.label, ec.blind_index, ec.row_key
          from clinicdb.encrypted_columns ec where ec.table_name = p_table order by ec.column_name
    loop
        v_row_key := v_col.row_key;
        v_any := v_any || format('%s new.%I is not null', case when v_any = '' then '' else ' or' end, v_col.c);
        v_key_check := v_key_check || format('%s new.%I is not null', case when v_key_check = '' then '' else ' or' end, v_col.ct);
        v_update_of := v_update_of || format('%I, %I, ', v_col.c, v_col.ct);
        v_body := v_body || format($f$
    if new.%1$I is not null then
        v_iv := clinicdb._random_bytes(16);
        v_body := clinicdb._seal_body(new.%1$I, v_version, v_iv, substring(v_keys from 1 for 32));
        new.%2$I := clinicdb._seal_tag(v_body, %3$s || uuid_send(new.%4$I), substring(v_keys from 33 for 32));$f$,
            v_col.c, v_col.ct, clinicdb._label_prefix_literal(v_col.label), v_col.row_key);
        if v_col.blind_index then
            v_body := v_body || format($f$
        new.%1$I := clinicdb._blind_index_value(new.%2$I, %3$s, substring(v_keys from 65 for 32));$f$,
                v_col.bi, v_col.c, clinicdb._label_prefix_literal(v_col.label));
        end if;
        v_body := v_body || format($f$
        new.%1$I := null;$f$, v_col.c);
        if v_col.blind_index then
            v_body := v_body || format($f$
    elsif new.%1$I is null then
        new.%2$I := null;$f$, v_col.ct, v_col.bi);
        end if;
        v_body := v_body || E'\n    end if;';
    end loop;

    return next format($f$create or replace function %1$s()
returns trigger
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
-- Generated by clinicdb.encryption_sql('%2$s'): do not edit; declare columns
-- with clinicdb.encrypt_column() and it is generated again.
-- Plaintext written into an encrypted column is encrypted into its
-- _ciphertext column and removed; NULL means "unchanged".
declare
    v_cache text;
    v_keys bytea;
    v_version integer;
    v_iv bytea;
    v_body bytea;
begin
    if tg_op = 'UPDATE' and new.%3$I is distinct from old.%3$I and (%4$s) then
        raise exception 'the %3$s of a %2$s row holding encrypted values cannot change'
            using errcode = 'check_violation', hint = 'encrypted values are bound to their row; insert a new row instead';
    end if;
    if %5$s then
        v_cache := current_setting('clinicdb.write_keys', true);
        if v_cache is null or left(v_cache, 36) is distinct from new.clinic_id::text
           or split_part(v_cache, '/', 2) <> hashtext(coalesce(current_setting('app.master_key', true), ''))::text then
            v_cache := clinicdb._load_write_keys(new.clinic_id, %6$L);
        end if;
        v_version := split_part(v_cache, '/', 3)::integer;
        v_keys := decode(split_part(v_cache, '/', 4), 'hex');
    end if;%7$s
    return new;
end
$fn$$f$, v_function, v_table, v_row_key, v_key_check, v_any, v_table, v_body);
    return next format('alter function %s() owner to %I', v_function, v_owner);
    return next format('comment on function %s() is %L', v_function,
                       format('clinicdb: encrypts the encrypted columns of %s on write (generated).', v_table));
    return next format('drop trigger if exists clinicdb_encrypt on %s', v_table);
    return next format('create trigger clinicdb_encrypt before insert or update of %s%I on %s '
                       'for each row execute function %s()', v_update_of, v_row_key, v_table, v_function);

    -- The decrypting view: every column in table order, each encrypted column
    -- decrypted under its own name, ciphertext left out.
    for v_attr in
        select a.attname from pg_attribute a
         where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped order by a.attnum
    loop
        select ec.column_name, ec.label, ec.row_key into v_enc
          from clinicdb.encrypted_columns ec where ec.table_name = p_table and ec.column_name = v_attr.attname;
        if found then
            v_columns := v_columns || format(E',\n       clinicdb._open(t.%I, %s || uuid_send(t.%I), %L, k.clinic_id, '
                                             'k.enc_keys, k.mac_keys, k.problem) as %I',
                                             v_attr.attname || '_ciphertext', clinicdb._label_prefix_literal(v_enc.label),
                                             v_enc.row_key, v_enc.label, v_attr.attname);
        elsif not exists (select 1 from clinicdb.encrypted_columns ec
                           where ec.table_name = p_table and ec.column_name || '_ciphertext' = v_attr.attname) then
            v_columns := v_columns || format(E',\n       t.%I', v_attr.attname);
        end if;
    end loop;
    return next format('drop view if exists %s', v_view);
    return next format(E'create view %s with (security_invoker = true) as\nselect %s\n  from %s t\n'
                       '  cross join clinicdb._statement_keyring() k',
                       v_view, substr(v_columns, 10), v_table);
    return next format('alter view %s owner to %I', v_view, v_owner);
    return next format('revoke all on %s from public, clinicdb_app, clinicdb_readonly, clinicdb_staff', v_view);
    return next format('grant select on %s to clinicdb_app, clinicdb_readonly, clinicdb_staff', v_view);
    return next format('comment on view %s is %L', v_view,
                       format('clinicdb: %s with its encrypted columns decrypted for the clinic in force '
                              '(needs app.master_key); generated, security_invoker.', v_table));
end
$body$;
comment on function clinicdb.encryption_sql(regclass) is
    'clinicdb: the statements (trigger function, trigger, decrypting view) encrypt_column() runs for a table, for review.';
revoke execute on function clinicdb.encryption_sql(regclass) from public;

-- Declare a text column of a protected table encrypted; idempotent. Existing
-- plaintext is encrypted on the spot, which needs the master key and a role
-- that sees every clinic (the migration of the reference schema, or a DBA);
-- clinics with plaintext and no key get their first key version.
create or replace function clinicdb.encrypt_column(
    p_table regclass, p_column name, p_blind_index boolean default false, p_row_key name default 'id'
)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_schema name;
    v_rel name;
    v_type text;
    v_label text;
    v_statement text;
    v_constraint name;
    v_clinic uuid;
    v_remaining bigint;
begin
    select n.nspname, c.relname into v_schema, v_rel
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;
    if not exists (select 1 from clinicdb.protected_tables where table_name = p_table) then
        raise exception 'table % is not protected', p_table
            using errcode = 'object_not_in_prerequisite_state', hint = 'run clinicdb.protect_table() on it first';
    end if;
    select format_type(a.atttypid, a.atttypmod) into v_type
      from pg_attribute a where a.attrelid = p_table and a.attname = p_column and not a.attisdropped;
    if v_type is null then
        raise exception 'table % has no column %', p_table, p_column using errcode = 'undefined_column';
    end if;
    if v_type not in ('text', 'character varying') and v_type not like 'character varying(%' then
        raise exception 'column %.% is %; only text columns can be encrypted', p_table, p_column, v_type
            using errcode = 'datatype_mismatch', hint = 'store the value as text';
    end if;
    if (select format_type(a.atttypid, a.atttypmod) from pg_attribute a
         where a.attrelid = p_table and a.attname = p_row_key and not a.attisdropped) is distinct from 'uuid' then
        raise exception 'table % has no uuid column % to bind encrypted values to their row', p_table, p_row_key
            using errcode = 'undefined_column', hint = 'pass p_row_key => the table''s uuid primary key column';
    end if;

    v_label := format('%s.%s.%s', v_schema, v_rel, p_column);
    insert into clinicdb.encrypted_columns (table_name, column_name, label, blind_index, row_key)
    values (p_table, p_column, v_label, p_blind_index, p_row_key)
    on conflict (table_name, column_name) do update
        set blind_index = clinicdb.encrypted_columns.blind_index or excluded.blind_index;
    select ec.label, ec.blind_index into v_label, p_blind_index
      from clinicdb.encrypted_columns ec where ec.table_name = p_table and ec.column_name = p_column;

    execute format('alter table %s add column if not exists %I bytea', p_table, p_column || '_ciphertext');
    execute format('comment on column %s.%I is %L', p_table, p_column || '_ciphertext',
                   format('clinicdb: %s encrypted (AES-256-CBC + HMAC-SHA256, key version in bytes 2-3); '
                          'read it through %s_decrypted.', p_column, v_rel));
    if p_blind_index then
        execute format('alter table %s add column if not exists %I bytea', p_table, p_column || '_blind_index');
        execute format('create index if not exists %I on %s (clinic_id, %I)',
                       left(v_rel || '_' || p_column || '_blind_index_idx', 63), p_table, p_column || '_blind_index');
        execute format('comment on column %s.%I is %L', p_table, p_column || '_blind_index',
                       format('clinicdb: keyed blind index (HMAC) of %s for equality lookups: '
                              '= any (clinicdb.blind_index(%L, %L, $1)).', p_column, p_table::text, p_column));
    end if;

    for v_statement in select s from clinicdb.encryption_sql(p_table) s loop
        execute v_statement;
    end loop;

    -- Planner statistics would describe every clinic's values (ciphertexts
    -- and blind indexes included: a blind index repeats with its value).
    execute format('alter table %s alter column %I set statistics 0, alter column %I set statistics 0', p_table,
                   p_column, p_column || '_ciphertext');
    if p_blind_index then
        execute format('alter table %s alter column %I set statistics 0', p_table, p_column || '_blind_index');
    end if;
    perform clinicdb._forget_statistics(p_table);
    -- The write slot only ever holds plaintext on its way in: the trail
    -- records "[masked]" for it, never the value (the ciphertext is recorded).
    perform clinicdb.set_audit_column(p_table, p_column, 'mask');

    -- Existing plaintext: every clinic holding some needs a key first.
    for v_clinic in execute format(
        'select distinct t.clinic_id from %s t where t.%I is not null
            and not exists (select 1 from clinicdb.clinic_keys k where k.clinic_id = t.clinic_id and k.state = ''active'')',
        p_table, p_column)
    loop
        perform clinicdb.rotate_clinic_key(v_clinic);
    end loop;
    execute format('update %s set %I = %I where %I is not null', p_table, p_column, p_column, p_column);

    v_constraint := left(v_rel || '_' || p_column || '_plaintext_never_stored', 63);
    if not exists (select 1 from pg_constraint where conrelid = p_table and conname = v_constraint) then
        begin
            execute format('alter table %s add constraint %I check (%I is null)', p_table, v_constraint, p_column);
        exception when check_violation then
            execute format('select count(*) from %s where %I is not null', p_table, p_column) into v_remaining;
            raise exception 'plaintext remains in %.% that this role cannot see or encrypt', p_table, p_column
                using errcode = 'object_not_in_prerequisite_state',
                      hint = 'run clinicdb.encrypt_column() as a superuser with app.master_key set';
        end;
    end if;
    -- The column keeps its own comment (the PHI inventory's); the constraint says how it works.
    execute format('comment on constraint %I on %s is %L', v_constraint, p_table,
                   format('clinicdb: %s is write-only. Plaintext written into it is encrypted into %s_ciphertext and '
                          'the column is set to NULL; read it from %s_decrypted.', p_column, p_column, v_rel));
    -- New columns: the audit capture functions are regenerated to name them.
    perform clinicdb._refresh_audit(p_table);
    insert into clinicdb.key_events (event, detail)
    values ('encrypt_column', jsonb_build_object('table', p_table::text, 'column', p_column,
                                                 'blind_index', p_blind_index));
end
$$;
comment on function clinicdb.encrypt_column(regclass, name, boolean, name) is
    'clinicdb: store a text column of a protected table encrypted (write slot + ciphertext + optional blind index + _decrypted view).';
revoke execute on function clinicdb.encrypt_column(regclass, name, boolean, name) from public;

-- The reverse, for migration rollbacks: plaintext back into the column,
-- ciphertext and blind index dropped. Needs the master key whenever a
-- ciphertext exists; values of shredded clinics become NULL (they are
-- unrecoverable by design), with a notice.
create or replace function clinicdb.decrypt_column(p_table regclass, p_column name)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_label text;
    v_row_key name;
    v_rel name := (select relname from pg_class where oid = p_table);
    v_statement text;
    v_clinic uuid;
    v_ring clinicdb.keyring;
    v_ct name := p_column || '_ciphertext';
begin
    select ec.label, ec.row_key into v_label, v_row_key
      from clinicdb.encrypted_columns ec where ec.table_name = p_table and ec.column_name = p_column;
    if not found then
        return;
    end if;
    delete from clinicdb.encrypted_columns where table_name = p_table and column_name = p_column;
    execute format('alter table %s drop constraint if exists %I', p_table,
                   left(v_rel || '_' || p_column || '_plaintext_never_stored', 63));
    -- Trigger and view go first (the update below must not encrypt again,
    -- and the view depends on the columns dropped below); regenerated last.
    execute format('drop trigger if exists clinicdb_encrypt on %s', p_table);
    execute format('drop view if exists %I.%I', (select n.nspname from pg_class c join pg_namespace n
                                                  on n.oid = c.relnamespace where c.oid = p_table),
                   left(v_rel || '_decrypted', 63));
    -- The plaintext written back must not reach the audit trail, which only
    -- ever held this column's ciphertext: the column stays masked there.
    perform clinicdb.set_audit_column(p_table, p_column, 'mask');
    for v_clinic in execute format('select distinct clinic_id from %s where %I is not null', p_table, v_ct) loop
        v_ring := clinicdb._clinic_keyring(v_clinic);
        if v_ring.problem like '%shredded%' then
            raise notice 'clinic %: keys shredded, its % values stay unrecoverable (set to NULL)', v_clinic, v_label;
            execute format('update %s set %I = null where clinic_id = $1', p_table, p_column) using v_clinic;
            continue;
        end if;
        execute format('update %1$s set %2$I = clinicdb._open(%3$I, clinicdb._aad($1, %4$I), $1, $2, $3, $4, $5) '
                       'where clinic_id = $2 and %3$I is not null', p_table, p_column, v_ct, v_row_key)
            using v_label, v_clinic, v_ring.enc_keys, v_ring.mac_keys, v_ring.problem;
    end loop;
    execute format('alter table %s drop column if exists %I, drop column if exists %I', p_table, v_ct,
                   p_column || '_blind_index');
    for v_statement in select s from clinicdb.encryption_sql(p_table) s loop
        execute v_statement;
    end loop;
    -- Dropped columns: an update capture function that still names them
    -- would make every later update of the table fail.
    perform clinicdb._refresh_audit(p_table);
    insert into clinicdb.key_events (event, detail)
    values ('decrypt_column', jsonb_build_object('table', p_table::text, 'column', p_column));
end
$$;
comment on function clinicdb.decrypt_column(regclass, name) is
    'clinicdb: undo encrypt_column(): decrypt values back into the column (needs app.master_key) and drop the rest.';
revoke execute on function clinicdb.decrypt_column(regclass, name) from public;
