-- Encrypting and decrypting one value, and its blind index.
--
-- A stored value (bytea) is
--   0x01 | key version (int2, big-endian) | iv (16) | AES-256-CBC(plaintext) | tag (32)
-- with tag = HMAC-SHA256(mac key, aad || everything before the tag), and
--   aad = int4(length(label)) || label || row key (16-byte uuid)
-- The label names the column ('public.patients.ssn', fixed when declared)
-- and the row key is the row's id: a value copied to another row or column,
-- or encrypted for another clinic (another key), fails the check. Integrity
-- is checked before any decryption, so a wrong key or a flipped byte is an
-- error, never garbage.
--
-- The read path (_open) is one SQL-standard expression the planner inlines
-- into the decrypting views: per row it costs one HMAC and one AES call and
-- no function call of its own. Failures branch to _cannot_open(), a plpgsql
-- function that only runs when it raises.

create or replace function clinicdb.key_version(p_value bytea)
returns integer
language sql
immutable
parallel safe
return case when length(p_value) < 67 then null
            when get_byte(p_value, 0) = 1 then get_byte(p_value, 1) * 256 + get_byte(p_value, 2) end;
comment on function clinicdb.key_version(bytea) is
    'clinicdb: the key version an encrypted value was written with (NULL for NULL or a non-clinicdb value).';
grant execute on function clinicdb.key_version(bytea) to clinicdb_app, clinicdb_readonly, clinicdb_staff, clinicdb_auditor;

-- The associated data of one value: its column label and its row.
create or replace function clinicdb._aad(p_label text, p_row_key uuid)
returns bytea
language sql
immutable
parallel safe
return int4send(octet_length(p_label)) || convert_to(p_label, 'UTF8') || uuid_send(p_row_key);
grant execute on function clinicdb._aad(text, uuid) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- Raises the one error that explains why a value cannot be decrypted. Never
-- mentions the value, the key or the plaintext: only label, clinic, version.
create or replace function clinicdb._cannot_open(p_label text, p_value bytea, p_clinic uuid, p_problem text)
returns text
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    v_version integer := clinicdb.key_version(p_value);
    v_key record;
begin
    if p_problem like '%were shredded' then
        raise exception 'cannot decrypt %: %', p_label, p_problem
            using errcode = 'object_not_in_prerequisite_state', hint = 'crypto-shredded data cannot be read back';
    elsif p_problem like '%has no data key yet' then
        raise exception 'cannot decrypt %: %', p_label, p_problem
            using errcode = 'object_not_in_prerequisite_state',
                  hint = format('an operator creates it with: clinicdb keys rotate --clinic %s', p_clinic);
    elsif p_problem is not null then
        raise exception 'cannot decrypt %: %', p_label, p_problem
            using errcode = 'insufficient_privilege', hint = clinicdb._key_problem_hint();
    end if;
    if v_version is null then
        raise exception 'cannot decrypt %: the stored value is not a clinicdb ciphertext', p_label
            using errcode = 'data_corrupted', hint = 'it was written around clinicdb; restore it from a backup';
    end if;
    select k.state, k.shredded_at into v_key
      from clinicdb.clinic_keys k where k.clinic_id = p_clinic and k.version = v_version;
    if found and v_key.state = 'shredded' then
        raise exception 'cannot decrypt %: key version % of clinic % was shredded at %; the value is unrecoverable',
                        p_label, v_version, p_clinic, v_key.shredded_at
            using errcode = 'object_not_in_prerequisite_state', hint = 'crypto-shredded data cannot be read back';
    end if;
    if not found then
        raise exception 'cannot decrypt %: clinic % has no key version %', p_label, p_clinic, v_version
            using errcode = 'data_corrupted',
                  hint = 'the value belongs to another clinic or its key row is missing';
    end if;
    raise exception 'cannot decrypt %: the value failed its integrity check', p_label
        using errcode = 'data_corrupted',
              hint = 'it was altered, moved from another row or column, or encrypted for another clinic';
end
$$;
comment on function clinicdb._cannot_open(text, bytea, uuid, text) is
    'clinicdb: raises the error explaining why a value cannot be decrypted (no value, key or plaintext in it).';
grant execute on function clinicdb._cannot_open(text, bytea, uuid, text) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- Decrypt one value with a keyring's arrays. Inlined (see the header). One
-- branch decrypts, every failure goes to the one _cannot_open() call: a
-- short value, an unknown format byte, a key version the keyring lacks (its
-- MAC key is NULL, so is the HMAC) and a tag that does not verify all fall
-- through, and _cannot_open() tells them apart. Few nodes keep the per-query
-- setup of the views small (it costs more than the cryptography of one row).
create or replace function clinicdb._open(
    p_value bytea, p_aad bytea, p_label text, p_clinic uuid, p_enc bytea[], p_mac bytea[], p_problem text
)
returns text
language sql
stable
parallel safe
return case
    when p_value is null then null
    when length(p_value) >= 67 and get_byte(p_value, 0) = 1
         and clinicdb._hmac(p_aad || substring(p_value from 1 for length(p_value) - 32),
                            p_mac[get_byte(p_value, 1) * 256 + get_byte(p_value, 2)])
             = substring(p_value from length(p_value) - 31)
        then convert_from(clinicdb._aes_decrypt(substring(p_value from 20 for length(p_value) - 51),
                                                p_enc[get_byte(p_value, 1) * 256 + get_byte(p_value, 2)],
                                                substring(p_value from 4 for 16)), 'UTF8')
    else clinicdb._cannot_open(p_label, p_value, p_clinic, p_problem)
end;
comment on function clinicdb._open(bytea, bytea, text, uuid, bytea[], bytea[], text) is
    'clinicdb: verify then decrypt one value with a keyring (inlined into the decrypting views).';
grant execute on function clinicdb._open(bytea, bytea, text, uuid, bytea[], bytea[], text)
    to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- Encrypt one value: the part before the tag. The caller draws the IV (a
-- volatile argument used twice would not be inlined).
create or replace function clinicdb._seal_body(p_plaintext text, p_version integer, p_iv bytea, p_enc bytea)
returns bytea
language sql
stable
parallel safe
return '\x01'::bytea || int2send(p_version::smallint) || p_iv
       || clinicdb._aes_encrypt(convert_to(p_plaintext, 'UTF8'), p_enc, p_iv);
grant execute on function clinicdb._seal_body(text, integer, bytea, bytea) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

create or replace function clinicdb._seal_tag(p_body bytea, p_aad bytea, p_mac bytea)
returns bytea
language sql
immutable
parallel safe
return p_body || clinicdb._hmac(p_aad || p_body, p_mac);
grant execute on function clinicdb._seal_tag(bytea, bytea, bytea) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- Keyed blind index of a plaintext for one column: equal plaintexts of one
-- clinic and key version give equal values, and nothing else can be learnt
-- from it without the key. p_label_prefix = int4(length(label)) || label.
create or replace function clinicdb._blind_index_value(p_plaintext text, p_label_prefix bytea, p_idx bytea)
returns bytea
language sql
stable
parallel safe
return clinicdb._hmac(p_label_prefix || convert_to(p_plaintext, 'UTF8'), p_idx);
grant execute on function clinicdb._blind_index_value(text, bytea, bytea) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- The blind index values p_value has in the clinic in force, one per live
-- key version (a lookup matches rows not yet re-encrypted too). Use it as
--   where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', $1))
-- which an index on (clinic_id, ssn_blind_index) answers without decrypting.
create or replace function clinicdb.blind_index(p_table regclass, p_column name, p_value text)
returns bytea[]
language plpgsql
stable
parallel unsafe  -- caches keys with set_config(), which no query running in parallel mode may call
set search_path = pg_catalog, pg_temp
as $$
declare
    v_col record;
    v_ring clinicdb.keyring;
    v_prefix bytea;
    v_result bytea[] := '{}';
    v_idx bytea;
begin
    select ec.label, ec.blind_index into v_col
      from clinicdb.encrypted_columns ec where ec.table_name = p_table and ec.column_name = p_column;
    if not found or not v_col.blind_index then
        raise exception '%.% has no blind index', p_table, p_column
            using errcode = 'undefined_object',
                  hint = 'declare one with clinicdb.encrypt_column(table, column, p_blind_index => true)';
    end if;
    if p_value is null then
        return v_result;
    end if;
    v_ring := clinicdb._clinic_keyring(clinicdb.current_clinic_id());
    if v_ring.problem is not null then
        raise exception 'cannot compute a blind index for %: %', v_col.label, v_ring.problem
            using errcode = 'insufficient_privilege', hint = clinicdb._key_problem_hint();
    end if;
    v_prefix := int4send(octet_length(v_col.label)) || convert_to(v_col.label, 'UTF8');
    foreach v_idx in array v_ring.idx_keys loop
        if v_idx is not null then
            v_result := v_result || clinicdb._blind_index_value(p_value, v_prefix, v_idx);
        end if;
    end loop;
    return v_result;
end
$$;
comment on function clinicdb.blind_index(regclass, name, text) is
    'clinicdb: blind index values of a plaintext in the clinic in force (one per live key version), for indexed equality lookups.';
grant execute on function clinicdb.blind_index(regclass, name, text) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- Decrypt one value outside the views (ad hoc, scripts): the clinic in force's
-- keys, the column's label, the row's key. One keyring per call: for many
-- rows, select from the table's _decrypted view instead.
create or replace function clinicdb.decrypt_value(p_value bytea, p_table regclass, p_column name, p_row_key uuid)
returns text
language plpgsql
stable
parallel unsafe  -- caches keys with set_config(), which no query running in parallel mode may call
set search_path = pg_catalog, pg_temp
as $$
declare
    v_label text;
    v_ring clinicdb.keyring;
begin
    select ec.label into v_label
      from clinicdb.encrypted_columns ec where ec.table_name = p_table and ec.column_name = p_column;
    if not found then
        raise exception '%.% is not an encrypted column', p_table, p_column
            using errcode = 'undefined_object', hint = 'see clinicdb.encrypted_columns';
    end if;
    if p_value is null then
        return null;
    end if;
    v_ring := clinicdb._clinic_keyring(clinicdb.current_clinic_id());
    return clinicdb._open(p_value, clinicdb._aad(v_label, p_row_key), v_label, v_ring.clinic_id,
                          v_ring.enc_keys, v_ring.mac_keys, v_ring.problem);
end
$$;
comment on function clinicdb.decrypt_value(bytea, regclass, name, uuid) is
    'clinicdb: decrypt one stored value of an encrypted column for the clinic in force (slow path; use the views for many rows).';
grant execute on function clinicdb.decrypt_value(bytea, regclass, name, uuid) to clinicdb_app, clinicdb_readonly, clinicdb_staff;
