-- The master key in force and the wrapping of data keys under it.
--
-- The master key reaches PostgreSQL only as the transaction-local setting
-- app.master_key (64 hex digits), set by the driver or the CLI with
--     select set_config('app.master_key', $1, true)   -- a bind parameter, never a literal
-- so it is gone at commit, never in pg_stat_activity (which shows $1), and
-- never in the server log given log_parameter_max_length = 0 and
-- log_parameter_max_length_on_error = 0 (migration 0005 sets both on the
-- database). No message below ever quotes the setting's value: a malformed
-- key is reported by its length only.
--
-- Derived keys use HMAC-SHA256 with a fixed label per purpose, so the
-- wrapping keys, the fingerprint and the data keys are independent.

-- The hint of every "no master key" error. On a Citus worker the keys are
-- never in force (they travel by set_config, which Citus does not
-- propagate, by design): there the hint says what works instead, since the
-- application did send its key, to the coordinator.
create or replace function clinicdb._key_problem_hint()
returns text
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
    -- citus_is_coordinator() is named only when Citus is installed: plpgsql
    -- plans a statement when it first runs it.
    if to_regprocedure('pg_catalog.citus_is_coordinator()') is not null then
        if not citus_is_coordinator() then
            return 'on Citus this runs on a worker, which never holds a key: the write trigger and the '
                   '_decrypted views cannot encrypt or decrypt there. Seal values on the coordinator and write '
                   'the <column>_ciphertext columns (clinicdb.sealing.seal_row, clinicdb.seal_values()), and open '
                   'them there (clinicdb.sealing.open_column, clinicdb.decrypt_values()); see docs/citus.md';
        end if;
    end if;
    return 'the application sets the master key per transaction with '
           'set_config(''app.master_key'', $1, true) as a bind parameter (clinicdb.keys.master_key_settings()); '
           'operators set CLINICDB_MASTER_KEY or CLINICDB_MASTER_KEY_FILE; see docs/encryption.md';
end
$$;
grant execute on function clinicdb._key_problem_hint() to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- The master key in force as bytes, NULL when none is set. Raises on a
-- malformed setting (saying only how long it was).
create or replace function clinicdb._master_key_or_null(p_setting text default 'app.master_key')
returns bytea
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    v_raw text := current_setting(p_setting, true);
begin
    if v_raw is null or v_raw = '' then
        return null;
    end if;
    if length(v_raw) <> 64 or v_raw !~ '^[0-9a-fA-F]+$' then
        raise exception '% is not a master key: expected 64 hex digits, got % characters', p_setting, length(v_raw)
            using errcode = 'invalid_parameter_value', hint = clinicdb._key_problem_hint();
    end if;
    return decode(v_raw, 'hex');
end
$$;
comment on function clinicdb._master_key_or_null(text) is
    'clinicdb: the master key in force (app.master_key) as bytes, or NULL; never echoes the value.';
grant execute on function clinicdb._master_key_or_null(text) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

create or replace function clinicdb._require_master_key(p_setting text default 'app.master_key')
returns bytea
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    v_key bytea := clinicdb._master_key_or_null(p_setting);
begin
    if v_key is null then
        raise exception 'no master key is in force for this transaction (% is not set)', p_setting
            using errcode = 'insufficient_privilege', hint = clinicdb._key_problem_hint();
    end if;
    return v_key;
end
$$;
comment on function clinicdb._require_master_key(text) is
    'clinicdb: the master key in force as bytes; a clear error when none is set.';
grant execute on function clinicdb._require_master_key(text) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- A public fingerprint of a master key: 8 bytes of HMAC(key, label), hex.
-- Stored beside each wrapped key so a wrong master key is named as such.
create or replace function clinicdb._master_key_id(p_master_key bytea)
returns text
language sql
immutable
parallel safe
return encode(substring(clinicdb._hmac('clinicdb master key id'::bytea, p_master_key) from 1 for 8), 'hex');
grant execute on function clinicdb._master_key_id(bytea) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- The fingerprint of the master key in force (NULL when none): safe to show.
create or replace function clinicdb.master_key_id()
returns text
language sql
stable
parallel safe
return clinicdb._master_key_id(clinicdb._master_key_or_null('app.master_key'));
comment on function clinicdb.master_key_id() is
    'clinicdb: fingerprint of the master key in force (app.master_key), NULL when none; not secret.';
grant execute on function clinicdb.master_key_id() to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- Wrap a 32-byte data key: iv || AES(key) || HMAC(clinic || version || iv || ct).
-- Bound to clinic and version, so a DBA cannot swap wrapped keys around.
create or replace function clinicdb._wrap_key(p_data_key bytea, p_master_key bytea, p_clinic uuid, p_version integer)
returns bytea
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_enc bytea := clinicdb._hmac('clinicdb wrap enc'::bytea, p_master_key);
    v_mac bytea := clinicdb._hmac('clinicdb wrap mac'::bytea, p_master_key);
    v_iv bytea := clinicdb._random_bytes(16);
    v_body bytea;
begin
    v_body := v_iv || clinicdb._aes_encrypt(p_data_key, v_enc, v_iv);
    return v_body || clinicdb._hmac(uuid_send(p_clinic) || int4send(p_version) || v_body, v_mac);
end
$$;
comment on function clinicdb._wrap_key(bytea, bytea, uuid, integer) is
    'clinicdb: encrypt and authenticate a data key under a master key, bound to its clinic and version.';

-- Unwrap; a tag that does not verify is an error, never a wrong key.
create or replace function clinicdb._unwrap_key(p_wrapped bytea, p_master_key bytea, p_clinic uuid, p_version integer)
returns bytea
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    v_enc bytea := clinicdb._hmac('clinicdb wrap enc'::bytea, p_master_key);
    v_mac bytea := clinicdb._hmac('clinicdb wrap mac'::bytea, p_master_key);
    v_len integer := length(p_wrapped);
begin
    if v_len < 80 or clinicdb._hmac(uuid_send(p_clinic) || int4send(p_version) || substring(p_wrapped from 1 for v_len - 32),
                                    v_mac) <> substring(p_wrapped from v_len - 31) then
        raise exception 'key version % of clinic % failed its integrity check under the master key in force', p_version, p_clinic
            using errcode = 'data_corrupted',
                  hint = 'the wrapped key was altered or moved; restore clinicdb.clinic_keys from a backup';
    end if;
    return clinicdb._aes_decrypt(substring(p_wrapped from 17 for v_len - 48), v_enc, substring(p_wrapped from 1 for 16));
end
$$;
comment on function clinicdb._unwrap_key(bytea, bytea, uuid, integer) is
    'clinicdb: verify and decrypt a wrapped data key; raises on any mismatch.';
grant execute on function clinicdb._unwrap_key(bytea, bytea, uuid, integer) to clinicdb_app, clinicdb_readonly, clinicdb_staff;
