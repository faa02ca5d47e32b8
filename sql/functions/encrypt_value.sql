-- Encrypt one value in a statement of its own, outside the table's trigger.
--
-- Why: on Citus the BEFORE trigger that encrypts a write runs on the worker
-- that holds the shard, and the clinic's keys never reach a worker (they
-- travel by set_config(), which Citus does not propagate, and the one form
-- it does propagate, SET LOCAL, would put them in SQL text and every
-- node's statement log). So the application seals the value on the
-- coordinator, where its master key or keyring is in force as a bind
-- parameter, and writes the ciphertext (and blind index) itself:
--
--   insert into patients (id, mrn, ssn_ciphertext, ssn_blind_index)
--   values ($1, $2, clinicdb.encrypt_value('public.patients', 'ssn', $1, $3),
--                   clinicdb.write_blind_index('public.patients', 'ssn', $3))
--
-- (Citus evaluates an INSERT's VALUES on the coordinator and sends the shard
-- the results; for UPDATE, select the two values first, then write them.)
-- The worker's trigger takes a written ciphertext as it is, like on a single
-- node. The stored format is exactly the trigger's, so the views,
-- decrypt_value() and re-encryption read it: one encryption, two entrances.
-- Nothing here needs Citus, and it is the same on a single node.

-- The active write key of the clinic in force for p_table, cached for the
-- transaction in clinicdb.write_keys exactly as the generated triggers do.
create or replace function clinicdb._write_keys_in_force(p_table regclass)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_clinic uuid := clinicdb.require_clinic_id();
    v_cache text := current_setting('clinicdb.write_keys', true);
begin
    if v_cache is null or left(v_cache, 36) is distinct from v_clinic::text
       or split_part(v_cache, '/', 2) <> hashtext(coalesce(current_setting('app.master_key', true), ''))::text then
        v_cache := clinicdb._load_write_keys(v_clinic, p_table::text);
    end if;
    return v_cache;
end
$$;
comment on function clinicdb._write_keys_in_force(regclass) is
    'clinicdb: the clinic in force''s active write key for a table (cached per transaction, as the triggers cache it).';
revoke execute on function clinicdb._write_keys_in_force(regclass) from public;
grant execute on function clinicdb._write_keys_in_force(regclass) to clinicdb_app, clinicdb_staff;

-- The encrypted column's declaration, or a clear error naming what to do.
create or replace function clinicdb._encrypted_column(p_table regclass, p_column name)
returns clinicdb.encrypted_columns
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_col clinicdb.encrypted_columns;
begin
    select * into v_col from clinicdb.encrypted_columns ec
     where ec.table_name = p_table and ec.column_name = p_column;
    if not found then
        raise exception '%.% is not an encrypted column', p_table, p_column
            using errcode = 'undefined_object', hint = 'see clinicdb.encrypted_columns';
    end if;
    return v_col;
end
$$;
comment on function clinicdb._encrypted_column(regclass, name) is
    'clinicdb: the declaration of an encrypted column, or an error naming clinicdb.encrypted_columns.';
revoke execute on function clinicdb._encrypted_column(regclass, name) from public;
grant execute on function clinicdb._encrypted_column(regclass, name) to clinicdb_app, clinicdb_staff;

-- The stored value of p_plaintext for the row whose row key (the column the
-- declaration names, usually id) is p_row_key, under the clinic in force's
-- active key. The tag binds the row key: a wrong one fails its integrity
-- check on read, loudly, never decrypting to something else.
create or replace function clinicdb.encrypt_value(p_table regclass, p_column name, p_row_key uuid, p_plaintext text)
returns bytea
language plpgsql
volatile  -- a fresh random IV per call
set search_path = pg_catalog, pg_temp
as $$
declare
    v_col clinicdb.encrypted_columns := clinicdb._encrypted_column(p_table, p_column);
    v_cache text;
    v_keys bytea;
    v_body bytea;
    v_iv bytea;
begin
    if p_plaintext is null then
        return null;
    end if;
    if p_row_key is null then
        raise exception 'cannot encrypt a value of %: its row key (%) is null', v_col.label, v_col.row_key
            using errcode = 'null_value_not_allowed',
                  hint = 'choose the row''s key first (e.g. a uuid made by the application) and pass it here and in the insert';
    end if;
    v_cache := clinicdb._write_keys_in_force(p_table);
    v_keys := decode(split_part(v_cache, '/', 4), 'hex');
    v_iv := clinicdb._random_bytes(16);
    v_body := clinicdb._seal_body(p_plaintext, split_part(v_cache, '/', 3)::integer, v_iv, substring(v_keys from 1 for 32));
    return clinicdb._seal_tag(v_body, clinicdb._aad(v_col.label, p_row_key), substring(v_keys from 33 for 32));
end
$$;
comment on function clinicdb.encrypt_value(regclass, name, uuid, text) is
    'clinicdb: the stored (encrypted) value of a plaintext for one row of an encrypted column, clinic in force''s active key; for writing <column>_ciphertext directly (Citus).';
revoke execute on function clinicdb.encrypt_value(regclass, name, uuid, text) from public;
grant execute on function clinicdb.encrypt_value(regclass, name, uuid, text) to clinicdb_app, clinicdb_staff;

-- The blind index a write stores beside the value: the active key version's
-- (blind_index() gives every live version's, for lookups).
create or replace function clinicdb.write_blind_index(p_table regclass, p_column name, p_plaintext text)
returns bytea
language plpgsql
volatile  -- may cache the write key with set_config()
set search_path = pg_catalog, pg_temp
as $$
declare
    v_col clinicdb.encrypted_columns := clinicdb._encrypted_column(p_table, p_column);
    v_cache text;
begin
    if not v_col.blind_index then
        raise exception '%.% has no blind index', p_table, p_column
            using errcode = 'undefined_object',
                  hint = 'declare one with clinicdb.encrypt_column(table, column, p_blind_index => true)';
    end if;
    if p_plaintext is null then
        return null;
    end if;
    v_cache := clinicdb._write_keys_in_force(p_table);
    return clinicdb._blind_index_value(p_plaintext, int4send(octet_length(v_col.label)) || convert_to(v_col.label, 'UTF8'),
                                       substring(decode(split_part(v_cache, '/', 4), 'hex') from 65 for 32));
end
$$;
comment on function clinicdb.write_blind_index(regclass, name, text) is
    'clinicdb: the blind index a write stores for a plaintext (clinic in force, active key version); for writing <column>_blind_index directly (Citus).';
revoke execute on function clinicdb.write_blind_index(regclass, name, text) from public;
grant execute on function clinicdb.write_blind_index(regclass, name, text) to clinicdb_app, clinicdb_staff;

-- Several columns of one row in one call, each with its blind index when
-- the column has one (has_blind_index says so): what the driver's seal_row()
-- runs.
-- It reads no table itself, so on Citus it always runs on the coordinator.
create or replace function clinicdb.seal_values(p_table regclass, p_row_key uuid, p_columns name[], p_plaintexts text[])
returns table (column_name name, ciphertext bytea, blind_index bytea, has_blind_index boolean)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_i integer;
begin
    if cardinality(p_columns) is distinct from cardinality(p_plaintexts) then
        raise exception 'seal_values got % columns and % values', cardinality(p_columns), cardinality(p_plaintexts)
            using errcode = 'invalid_parameter_value', hint = 'pass one value per column, in the same order';
    end if;
    for v_i in 1 .. coalesce(cardinality(p_columns), 0) loop
        column_name := p_columns[v_i];
        ciphertext := clinicdb.encrypt_value(p_table, p_columns[v_i], p_row_key, p_plaintexts[v_i]);
        has_blind_index := (clinicdb._encrypted_column(p_table, p_columns[v_i])).blind_index;
        blind_index := case when has_blind_index
                            then clinicdb.write_blind_index(p_table, p_columns[v_i], p_plaintexts[v_i]) end;
        return next;
    end loop;
end
$$;
comment on function clinicdb.seal_values(regclass, uuid, name[], text[]) is
    'clinicdb: encrypt_value() and write_blind_index() for several columns of one row (the driver''s seal_row()).';
revoke execute on function clinicdb.seal_values(regclass, uuid, name[], text[]) from public;
grant execute on function clinicdb.seal_values(regclass, uuid, name[], text[]) to clinicdb_app, clinicdb_staff;

-- Decrypt many values of one column with one keyring: what a Citus
-- application runs on the coordinator (a select with no distributed table
-- runs there) after reading the ciphertext from the shards. The views do
-- this for a single node; on Citus they run on the workers, which hold no
-- key, and fail closed.
create or replace function clinicdb.decrypt_values(p_values bytea[], p_table regclass, p_column name, p_row_keys uuid[])
returns text[]
language plpgsql
stable
parallel unsafe  -- caches keys with set_config(), which no query running in parallel mode may call
set search_path = pg_catalog, pg_temp
as $$
declare
    v_col clinicdb.encrypted_columns := clinicdb._encrypted_column(p_table, p_column);
    v_ring clinicdb.keyring;
    v_result text[] := '{}';
    v_i integer;
begin
    if cardinality(p_values) is distinct from cardinality(p_row_keys) then
        raise exception 'decrypt_values got % values and % row keys', cardinality(p_values), cardinality(p_row_keys)
            using errcode = 'invalid_parameter_value', hint = 'pass one row key per value, in the same order';
    end if;
    if coalesce(cardinality(p_values), 0) = 0 then
        return v_result;
    end if;
    v_ring := clinicdb._clinic_keyring(clinicdb.current_clinic_id());
    for v_i in 1 .. cardinality(p_values) loop
        v_result := v_result || case when p_values[v_i] is null then null::text else
            clinicdb._open(p_values[v_i], clinicdb._aad(v_col.label, p_row_keys[v_i]), v_col.label, v_ring.clinic_id,
                           v_ring.enc_keys, v_ring.mac_keys, v_ring.problem) end;
    end loop;
    return v_result;
end
$$;
comment on function clinicdb.decrypt_values(bytea[], regclass, name, uuid[]) is
    'clinicdb: decrypt many stored values of one encrypted column for the clinic in force, one keyring load (Citus: run on the coordinator).';
revoke execute on function clinicdb.decrypt_values(bytea[], regclass, name, uuid[]) from public;
grant execute on function clinicdb.decrypt_values(bytea[], regclass, name, uuid[])
    to clinicdb_app, clinicdb_readonly, clinicdb_staff;
