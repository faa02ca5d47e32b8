-- 0005.encryption, second part (as clinicdb_owner): the key tables and the encryption functions.
-- Frozen: copied from sql/schema/encryption.sql, sql/functions/crypto_primitives.sql, sql/functions/master_key.sql, sql/functions/clinic_keys.sql, sql/functions/encrypted_values.sql, sql/functions/encrypt_column.sql, sql/functions/reencrypt.sql when the migration was written; migrations.lock pins it.

set local role clinicdb_owner;
-- ---- sql/schema/encryption.sql ----
-- PHI encryption: pgcrypto and the key tables (issue #5). docs/encryption.md
-- has the design and the threat model; this file holds state only.
--
-- Key hierarchy:
--   master key (32 random bytes, 64 hex digits) -- never stored here. The
--     application sends it per transaction as app.master_key (set_config(...,
--     true), always a bind parameter), operators through the CLI.
--   clinic data key, one per clinic and version -- 32 random bytes, stored
--     only wrapped (AES-256-CBC + HMAC-SHA256, keys derived from the master
--     key, bound to clinic and version). Encryption, MAC and blind-index keys
--     are derived from it, so a version rotates all three at once.

-- pgcrypto is a trusted extension: the owner may create it. If another layer
-- installed it elsewhere first, clinicdb uses it where it is (the primitives
-- in sql/functions/crypto_primitives.sql bind to it by OID).
do $$
begin
    if not exists (select 1 from pg_extension where extname = 'pgcrypto') then
        create extension pgcrypto with schema clinicdb;
    end if;
end
$$;

-- One row per clinic and key version. Exactly one 'active' version per
-- clinic takes new writes; 'retired' versions still decrypt; 'shredded'
-- versions have lost their wrapped key for good (crypto-shredding).
create table if not exists clinicdb.clinic_keys (
    clinic_id uuid not null references public.clinics (id) on delete cascade,
    version integer not null check (version between 1 and 32767),
    state text not null default 'active' check (state in ('active', 'retired', 'shredded')),
    -- iv(16) || AES-256-CBC(data key) || HMAC-SHA256 tag(32); NULL once shredded.
    wrapped_key bytea,
    -- Which master key wrapped it: a public fingerprint, not the key.
    master_key_id text,
    created_at timestamptz not null default now(),
    created_by name not null default session_user,
    retired_at timestamptz,
    shredded_at timestamptz,
    primary key (clinic_id, version),
    -- A shredded version keeps no key material; every other one has it.
    check ((state = 'shredded') = (wrapped_key is null)),
    check (state = 'shredded' or master_key_id is not null)
);
alter table clinicdb.clinic_keys owner to clinicdb_owner;
create unique index if not exists clinic_keys_one_active_idx on clinicdb.clinic_keys (clinic_id) where state = 'active';
comment on table clinicdb.clinic_keys is
    'clinicdb: per-clinic data keys, stored only wrapped by the master key (which is never stored). '
    'Change only through rotate_clinic_key(), shred_clinic_keys(), rewrap_clinic_keys().';
comment on column clinicdb.clinic_keys.wrapped_key is
    'The data key encrypted and authenticated under the master key; useless without it. NULL after shredding.';
comment on column clinicdb.clinic_keys.master_key_id is
    'Fingerprint (HMAC) of the master key that wrapped this version; tells a wrong master key from a damaged one.';
-- The app, readonly and staff roles read their own clinic's wrapped keys
-- (the standard tenant policy, applied below) to decrypt; nobody but
-- operators writes them.
grant select on clinicdb.clinic_keys to clinicdb_app, clinicdb_readonly, clinicdb_staff;
select clinicdb.protect_table('clinicdb.clinic_keys');
-- The audit layer (built in parallel) records row images of protected tables:
-- keep wrapped keys out of them, or a shredded key would live on in the trail.
do $$
begin
    if to_regprocedure('clinicdb.set_audit_column(regclass,name,text)') is not null then
        execute 'select clinicdb.set_audit_column(''clinicdb.clinic_keys'', ''wrapped_key'', ''mask'')';
    end if;
end
$$;

-- A counter every key change (rotate, shred, rewrap) bumps in its own
-- transaction. Applications that keep a clinic's keyring in memory
-- (clinicdb.encryption.KeyringCache) send the counter they loaded it at,
-- and every statement compares it with this row: a ring loaded before any
-- later key change is refused (stale) and reloaded, so shredding and
-- rotation take effect at the next statement. One row, no tenant data: a
-- key change anywhere only costs every application one reload per clinic,
-- and key changes (rare, operators') wait for each other on this row.
create table if not exists clinicdb.key_epoch (
    one boolean primary key default true check (one),
    epoch bigint not null default 1
);
alter table clinicdb.key_epoch owner to clinicdb_owner;
insert into clinicdb.key_epoch (one) values (true) on conflict do nothing;
comment on table clinicdb.key_epoch is
    'clinicdb: bumped by every key change; app.clinic_keyring carries the value it was loaded at (stale otherwise).';
revoke all on clinicdb.key_epoch from public;
grant select on clinicdb.key_epoch to clinicdb_app, clinicdb_readonly, clinicdb_staff, clinicdb_auditor;

-- What happened to keys, for operators and auditors. Never holds key
-- material: versions, states, master key fingerprints, counts.
create table if not exists clinicdb.key_events (
    id bigint generated always as identity primary key,
    at timestamptz not null default clock_timestamp(),
    clinic_id uuid,
    event text not null check (event in ('create', 'rotate', 'shred', 'rewrap', 'reencrypt', 'encrypt_column',
                                         'decrypt_column')),
    key_version integer,
    master_key_id text,
    detail jsonb not null default '{}',
    by_role name not null default session_user
);
alter table clinicdb.key_events owner to clinicdb_owner;
comment on table clinicdb.key_events is
    'clinicdb: key lifecycle events (create, rotate, shred, rewrap, reencrypt); no key material, ever.';
revoke all on clinicdb.key_events from public;
grant select on clinicdb.key_events to clinicdb_auditor;

-- Columns clinicdb encrypts. label is fixed when the column is declared and
-- authenticated with every value, so a value moved to another column (or a
-- renamed table's values) can never decrypt as something else.
create table if not exists clinicdb.encrypted_columns (
    table_name regclass not null,
    column_name name not null,
    label text not null unique,
    blind_index boolean not null default false,
    row_key name not null default 'id',
    declared_at timestamptz not null default now(),
    declared_by name not null default session_user,
    primary key (table_name, column_name)
);
alter table clinicdb.encrypted_columns owner to clinicdb_owner;
comment on table clinicdb.encrypted_columns is
    'clinicdb: columns stored encrypted (declared with clinicdb.encrypt_column()); label is bound into every value.';
grant select on clinicdb.encrypted_columns to clinicdb_app, clinicdb_readonly, clinicdb_staff, clinicdb_auditor;

-- Where `clinicdb keys reencrypt` got to, per table, clinic and target
-- version: each batch commits together with its checkpoint, so an
-- interrupted run resumes after the last committed row.
create table if not exists clinicdb.reencrypt_progress (
    table_name regclass not null,
    clinic_id uuid not null,
    target_version integer not null,
    last_id uuid,
    rows_scanned bigint not null default 0,
    rows_rewritten bigint not null default 0,
    started_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    finished_at timestamptz,
    primary key (table_name, clinic_id, target_version)
);
alter table clinicdb.reencrypt_progress owner to clinicdb_owner;
comment on table clinicdb.reencrypt_progress is
    'clinicdb: checkpoints of clinicdb keys reencrypt (resumable); no key material, no values.';
revoke all on clinicdb.reencrypt_progress from public;
grant select on clinicdb.reencrypt_progress to clinicdb_auditor;
-- ---- sql/functions/crypto_primitives.sql ----
-- The four pgcrypto primitives clinicdb uses, under fixed names in clinicdb.
--
-- Why wrappers: pgcrypto lives wherever it was first installed (clinicdb when
-- this layer installed it). These bodies are SQL-standard (RETURN ...): their
-- names are resolved once, here, and bound by OID, so neither a caller's
-- search_path nor a later schema change can redirect them, and dropping
-- pgcrypto is refused while they depend on it. Without a SET clause and with
-- a single expression, the planner inlines them: calling clinicdb._hmac()
-- costs exactly what calling pgcrypto's hmac() costs (the hot paths run them
-- once or twice per row).
--
-- Choices (measured in bench/bench_encryption.py, reasons in docs/encryption.md):
--   * AES-256-CBC with PKCS#7 padding and a random 16-byte IV per value: the
--     keys are random 256-bit keys, so pgp_sym_*'s iterated string-to-key
--     (built for passwords, run on every call) buys nothing and costs ~30x.
--   * HMAC-SHA256 over associated data and the ciphertext (encrypt-then-MAC),
--     with a MAC key separate from the encryption key: raw encrypt_iv has no
--     integrity, and a tampered value must fail loudly, never decrypt to
--     something else.
do $$
declare
    v_schema text := (select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace
                       where e.extname = 'pgcrypto');
begin
    if v_schema is null then
        raise exception 'pgcrypto is not installed' using hint = 'create extension pgcrypto (it ships with PostgreSQL)';
    end if;
    perform set_config('search_path', format('%I, pg_catalog, pg_temp', v_schema), true);
    -- Callers run these with their own rights (inlined), so they need pgcrypto's.
    execute 'grant execute on function hmac(bytea, bytea, text), encrypt_iv(bytea, bytea, bytea, text), '
            'decrypt_iv(bytea, bytea, bytea, text), gen_random_bytes(integer) '
            'to clinicdb_app, clinicdb_readonly, clinicdb_staff';
end
$$;

create or replace function clinicdb._hmac(p_data bytea, p_key bytea)
returns bytea
language sql
immutable
parallel safe
return hmac(p_data, p_key, 'sha256');
comment on function clinicdb._hmac(bytea, bytea) is 'clinicdb: HMAC-SHA256 (pgcrypto), bound by OID; inlined.';

create or replace function clinicdb._aes_encrypt(p_data bytea, p_key bytea, p_iv bytea)
returns bytea
language sql
immutable
parallel safe
return encrypt_iv(p_data, p_key, p_iv, 'aes-cbc/pad:pkcs');
comment on function clinicdb._aes_encrypt(bytea, bytea, bytea) is
    'clinicdb: AES-256-CBC encryption (pgcrypto), bound by OID; inlined. Never used without _hmac.';

create or replace function clinicdb._aes_decrypt(p_data bytea, p_key bytea, p_iv bytea)
returns bytea
language sql
immutable
parallel safe
return decrypt_iv(p_data, p_key, p_iv, 'aes-cbc/pad:pkcs');
comment on function clinicdb._aes_decrypt(bytea, bytea, bytea) is
    'clinicdb: AES-256-CBC decryption (pgcrypto), bound by OID; inlined. Only called after the MAC verified.';

create or replace function clinicdb._random_bytes(p_count integer)
returns bytea
language sql
volatile
parallel safe
return gen_random_bytes(p_count);
comment on function clinicdb._random_bytes(integer) is
    'clinicdb: cryptographically strong random bytes (pgcrypto gen_random_bytes), bound by OID.';

reset search_path;

grant execute on function clinicdb._hmac(bytea, bytea), clinicdb._aes_encrypt(bytea, bytea, bytea),
    clinicdb._aes_decrypt(bytea, bytea, bytea), clinicdb._random_bytes(integer)
    to clinicdb_app, clinicdb_readonly, clinicdb_staff;
-- ---- sql/functions/master_key.sql ----
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

create or replace function clinicdb._key_problem_hint()
returns text
language sql
immutable
parallel safe
return 'the application sets the master key per transaction with '
       'set_config(''app.master_key'', $1, true) as a bind parameter (clinicdb.keys.master_key_settings()); '
       'operators set CLINICDB_MASTER_KEY or CLINICDB_MASTER_KEY_FILE; see docs/encryption.md';
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
-- ---- sql/functions/clinic_keys.sql ----
-- Per-clinic data keys: loading them for a transaction, rotating, shredding,
-- and re-wrapping them under a new master key.
--
-- Every version's 32-byte data key derives three independent keys:
--   enc = HMAC(data key, 'clinicdb data enc')     AES-256 key for values
--   mac = HMAC(data key, 'clinicdb data mac')     HMAC key for values
--   idx = HMAC(data key, 'clinicdb blind index')  HMAC key for blind indexes
-- so rotating a version rotates all three, and re-encryption recomputes the
-- blind indexes too.
--
-- Operators' functions (rotate, shred, rewrap) are SECURITY INVOKER and
-- granted to nobody: a DBA (a role that sees every clinic) runs them, through
-- `clinicdb keys ...`, which supplies the master key the same way the app does.

do $$
begin
    if to_regtype('clinicdb.keyring') is null then
        create type clinicdb.keyring as (
            clinic_id uuid,
            active_version integer,
            enc_keys bytea[],   -- indexed by key version; NULL where none or shredded
            mac_keys bytea[],
            idx_keys bytea[],
            problem text        -- why nothing can be decrypted, or NULL
        );
    end if;
end
$$;
comment on type clinicdb.keyring is
    'clinicdb: the unwrapped keys of one clinic for one statement (never stored; see clinicdb._clinic_keyring()).';

-- The keyring an application supplies (app.clinic_keyring, see
-- _clinic_keyring below). The text is
--   clinic uuid / key epoch / active version / enc keys / mac keys / idx keys
-- the epoch being clinicdb.key_epoch when it was loaded and each list one
-- hex key per version from 1, comma-separated, empty where the clinic has
-- no such version: exactly what export_keyring() returns. Nothing in it is
-- cast before its shape is known, since a failing cast would echo key
-- material into the error and the server log; errors quote only the length.
-- SQL-standard bodies with one expression each: inlined where they are used.
create or replace function clinicdb._malformed_keyring(p_length integer)
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
    raise exception 'app.clinic_keyring is not a clinicdb keyring (% characters)', p_length
        using errcode = 'invalid_parameter_value',
              hint = 'set it only from clinicdb.encryption.KeyringCache (clinicdb.export_keyring())';
end
$$;
comment on function clinicdb._malformed_keyring(integer) is
    'clinicdb: raises the error for a malformed app.clinic_keyring (its length only, never its content).';
grant execute on function clinicdb._malformed_keyring(integer) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- Whether p_ring is a keyring of p_clinic (false for another clinic's or
-- none); raises when it is p_clinic's but malformed. After this check the
-- fields are digits and hex only, so the casts below cannot fail with more
-- than "odd number of digits" (which quotes nothing).
create or replace function clinicdb._keyring_is_for(p_ring text, p_clinic text)
returns boolean
language sql
stable
parallel safe
return case
    when p_ring is null or p_clinic is null or left(p_ring, 37) <> p_clinic || '/' then false
    when substr(p_ring, 38) ~ '^[0-9]{1,18}/[0-9]{1,5}/[0-9a-f,]*/[0-9a-f,]*/[0-9a-f,]*$' then true
    else clinicdb._malformed_keyring(length(p_ring))
end;
comment on function clinicdb._keyring_is_for(text, text) is
    'clinicdb: whether app.clinic_keyring belongs to the given clinic; raises when it does but is malformed.';
grant execute on function clinicdb._keyring_is_for(text, text) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- One key list of a keyring checked by _keyring_is_for (p_field 4, 5 or 6:
-- enc, mac, idx) as bytea[] indexed by version: '\x' before each hex key
-- makes it a bytea literal, an empty one is a missing version (NULL).
create or replace function clinicdb._keyring_keys(p_ring text, p_field integer)
returns bytea[]
language sql
immutable
parallel safe
return array_replace(string_to_array('\x' || replace(split_part(p_ring, '/', p_field), ',', ',\x'), ',')::bytea[],
                     '\x'::bytea, null);
comment on function clinicdb._keyring_keys(text, integer) is
    'clinicdb: one key list (enc 4, mac 5, idx 6) of a checked app.clinic_keyring, indexed by key version.';
grant execute on function clinicdb._keyring_keys(text, integer) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- A supplied keyring loaded before the last key change (its epoch is not
-- clinicdb.key_epoch: a version may have been added or shredded since).
-- SQLSTATE 55K01 lets the application tell it apart: drop the cached
-- keyring, load it again and rerun the transaction.
create or replace function clinicdb._stale_keyring(p_clinic uuid)
returns clinicdb.keyring
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
    raise exception 'the keyring supplied for clinic % is stale: its keys were rotated or shredded since it was loaded',
                    p_clinic
        using errcode = '55K01',
              hint = 'reload it (clinicdb.encryption.KeyringCache drops it on this error) and run the transaction again';
end
$$;
comment on function clinicdb._stale_keyring(uuid) is
    'clinicdb: raises 55K01, the error for an app.clinic_keyring loaded before the last key change.';
grant execute on function clinicdb._stale_keyring(uuid) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- The keys of p_clinic for this transaction, from one of two sources:
--
--  1. app.clinic_keyring, the clinic's keys as the application keeps them
--     (clinicdb.encryption.KeyringCache, loaded once per process with
--     export_keyring() and the master key), sent per transaction as a bind
--     parameter like the master key (format: _keyring_is_for). It carries
--     the key epoch it was loaded at, and every use compares that with
--     clinicdb.key_epoch, which each rotation, shred and rewrap bumps: a
--     keyring older than the last key change raises 55K01 (stale), and the
--     application reloads it. So a rotation or a shred takes effect at the
--     application's next statement, and a lookup never misses rows of a
--     version the cached keyring lacks. Costs one read of a one-row table
--     instead of the unwrapping below. Another clinic's keyring is ignored.
--  2. app.master_key: the wrapped keys are unwrapped, about 0.1 ms, and the
--     result cached for the rest of the transaction in the transaction-local
--     setting clinicdb.keyring ("clinic/hashtext(master key)/active
--     version/hex keys per version"), since one statement may need the
--     keyring twice (blind_index() and a decrypting view). A changed or
--     cleared master key, or another clinic, misses the cache; rotate/shred/
--     rewrap clear it.
--
-- Both live only in this backend until commit. Forging either only breaks
-- the forger's own reads: values fail their integrity check (see
-- _load_write_keys). A missing master key or clinic is reported lazily in
-- "problem", so reading rows whose encrypted columns are NULL still works; a
-- master key that did not wrap these keys is an error at once.
-- One plpgsql function with the unwrapping inline: each nested call with a
-- pinned search_path costs more than the cryptography.
create or replace function clinicdb._clinic_keyring(p_clinic uuid)
returns clinicdb.keyring
language plpgsql
stable
parallel unsafe  -- caches keys with set_config(), which no query running in parallel mode may call
set search_path = pg_catalog, pg_temp
as $$
declare
    v_ring clinicdb.keyring;
    v_supplied text := current_setting('app.clinic_keyring', true);
    v_raw text;
    v_cache text;
    v_tag text;
    v_parts text[];
    v_hexes text[];
    v_master bytea;
    v_master_id text;
    v_wrap_enc bytea;
    v_wrap_mac bytea;
    v_key record;
    v_len integer;
    v_data_key bytea;
    v_bytes bytea;
    v_version integer;
begin
    v_ring.clinic_id := p_clinic;
    if p_clinic is null then
        v_ring.problem := 'no clinic is in force for this transaction';
        return v_ring;
    end if;
    -- 1. The application's keyring of this clinic (another clinic's is ignored).
    if clinicdb._keyring_is_for(v_supplied, p_clinic::text) then
        if split_part(v_supplied, '/', 2) is distinct from (select e.epoch::text from clinicdb.key_epoch e) then
            perform clinicdb._stale_keyring(p_clinic);
        end if;
        v_ring.active_version := split_part(v_supplied, '/', 3)::integer;
        v_ring.enc_keys := clinicdb._keyring_keys(v_supplied, 4);
        v_ring.mac_keys := clinicdb._keyring_keys(v_supplied, 5);
        v_ring.idx_keys := clinicdb._keyring_keys(v_supplied, 6);
        return v_ring;
    end if;

    -- 2. Unwrap under the master key (cached for the transaction).
    v_raw := current_setting('app.master_key', true);
    if v_raw is null or v_raw = '' then
        v_ring.problem := 'no master key is in force for this transaction (app.master_key is not set)';
        return v_ring;
    end if;
    v_cache := current_setting('clinicdb.keyring', true);
    v_tag := p_clinic::text || '/' || hashtext(v_raw)::text || '/';
    if v_cache is not null and starts_with(v_cache, v_tag) then
        v_parts := string_to_array(substr(v_cache, length(v_tag) + 1), '/');
        v_ring.active_version := nullif(v_parts[1], '')::integer;
        v_hexes := string_to_array(v_parts[2], ',');
        for v_version in 1 .. coalesce(cardinality(v_hexes), 0) loop
            if v_hexes[v_version] <> '' then
                v_bytes := decode(v_hexes[v_version], 'hex');
                v_ring.enc_keys[v_version] := substring(v_bytes from 1 for 32);
                v_ring.mac_keys[v_version] := substring(v_bytes from 33 for 32);
                v_ring.idx_keys[v_version] := substring(v_bytes from 65 for 32);
            end if;
        end loop;
        return v_ring;
    end if;

    v_master := clinicdb._require_master_key('app.master_key');
    v_master_id := clinicdb._master_key_id(v_master);
    v_wrap_enc := clinicdb._hmac('clinicdb wrap enc'::bytea, v_master);
    v_wrap_mac := clinicdb._hmac('clinicdb wrap mac'::bytea, v_master);
    v_hexes := '{}';
    for v_key in
        select k.version, k.state, k.wrapped_key, k.master_key_id
          from clinicdb.clinic_keys k
         where k.clinic_id = p_clinic and k.state <> 'shredded'
         order by k.version
    loop
        if v_key.master_key_id <> v_master_id then
            raise exception 'the master key in force (id %) is not the one that wrapped the keys of clinic % (id %)',
                            v_master_id, p_clinic, v_key.master_key_id
                using errcode = 'invalid_authorization_specification',
                      hint = 'use the database''s current master key; after a master key rotation the old key no longer works';
        end if;
        v_len := length(v_key.wrapped_key);
        if v_len < 80 or clinicdb._hmac(uuid_send(p_clinic) || int4send(v_key.version)
                                        || substring(v_key.wrapped_key from 1 for v_len - 32), v_wrap_mac)
                          <> substring(v_key.wrapped_key from v_len - 31) then
            raise exception 'key version % of clinic % failed its integrity check under the master key in force',
                            v_key.version, p_clinic
                using errcode = 'data_corrupted',
                      hint = 'the wrapped key was altered or moved; restore clinicdb.clinic_keys from a backup';
        end if;
        v_data_key := clinicdb._aes_decrypt(substring(v_key.wrapped_key from 17 for v_len - 48), v_wrap_enc,
                                            substring(v_key.wrapped_key from 1 for 16));
        v_ring.enc_keys[v_key.version] := clinicdb._hmac('clinicdb data enc'::bytea, v_data_key);
        v_ring.mac_keys[v_key.version] := clinicdb._hmac('clinicdb data mac'::bytea, v_data_key);
        v_ring.idx_keys[v_key.version] := clinicdb._hmac('clinicdb blind index'::bytea, v_data_key);
        if v_key.state = 'active' then
            v_ring.active_version := v_key.version;
        end if;
        while cardinality(v_hexes) < v_key.version - 1 loop
            v_hexes := v_hexes || ''::text;
        end loop;
        v_hexes := v_hexes || encode(v_ring.enc_keys[v_key.version] || v_ring.mac_keys[v_key.version]
                                     || v_ring.idx_keys[v_key.version], 'hex');
    end loop;
    if v_ring.enc_keys is null then
        v_ring.problem := case
            when exists (select 1 from clinicdb.clinic_keys k where k.clinic_id = p_clinic)
                then format('the keys of clinic %s were shredded', p_clinic)
            else format('clinic %s has no data key yet', p_clinic) end;
        return v_ring;
    end if;
    perform set_config('clinicdb.keyring',
                       v_tag || coalesce(v_ring.active_version::text, '') || '/' || array_to_string(v_hexes, ','), true);
    return v_ring;
end
$$;
comment on function clinicdb._clinic_keyring(uuid) is
    'clinicdb: one clinic''s data keys for this transaction: app.clinic_keyring (checked) or unwrapped under app.master_key; never stored.';
grant execute on function clinicdb._clinic_keyring(uuid) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- The keyring of the clinic in force: what the decrypting views join (one
-- row, once per statement). A plpgsql wrapper rather than
-- _clinic_keyring(current_clinic_id()) in the view: the planner does not
-- inline current_clinic_id() a second time per query (~0.1 ms of planning).
create or replace function clinicdb._keyring_in_force()
returns clinicdb.keyring
language plpgsql
stable
parallel unsafe  -- caches keys with set_config(), which no query running in parallel mode may call
set search_path = pg_catalog, pg_temp
as $$
begin
    return clinicdb._clinic_keyring(clinicdb.current_clinic_id());
end
$$;
comment on function clinicdb._keyring_in_force() is
    'clinicdb: the keyring of the clinic in force (current_clinic_id()); joined by the decrypting views.';
grant execute on function clinicdb._keyring_in_force() to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- The keyring the decrypting views join: the supplied app.clinic_keyring
-- when it is the clinic in force's, checked against clinicdb.key_epoch
-- (the same checks as _clinic_keyring, but as one SQL-standard query the
-- planner inlines into the view and keeps in a prepared plan: no plpgsql
-- call, no re-planning), else _keyring_in_force() (the master key path).
create or replace function clinicdb._statement_keyring()
returns setof clinicdb.keyring
language sql
stable
rows 1
begin atomic
    -- Exactly one of the two branches runs (its condition has no column, so
    -- it is a one-time filter); each key list is its own expression, so one a
    -- view does not use (idx_keys) is never built.
    select left(q.ring, 36)::uuid, split_part(q.ring, '/', 3)::integer,
           clinicdb._keyring_keys(q.ring, 4), clinicdb._keyring_keys(q.ring, 5), clinicdb._keyring_keys(q.ring, 6),
           null::text
      from (select current_setting('app.clinic_keyring', true) as ring,
                   current_setting('app.clinic_id', true) as clinic) q
     where case when not coalesce(left(q.ring, 37) = q.clinic || '/', false) then false
                -- the ring of the clinic in force (app.clinic_id, as current_clinic_id()
                -- reads it for the application), well formed, loaded at the current key epoch
                when not clinicdb._keyring_is_for(q.ring, q.clinic) then false
                when split_part(q.ring, '/', 2) = (select e.epoch::text from clinicdb.key_epoch e) then true
                else (clinicdb._stale_keyring(q.clinic::uuid)).active_version is null
           end
    union all
    select k.clinic_id, k.active_version, k.enc_keys, k.mac_keys, k.idx_keys, k.problem
      from clinicdb._keyring_in_force() k
     where not coalesce(left(current_setting('app.clinic_keyring', true), 37)
                        = current_setting('app.clinic_id', true) || '/', false);
end;
comment on function clinicdb._statement_keyring() is
    'clinicdb: the keyring the decrypting views join: app.clinic_keyring (checked) or the master key path.';
grant execute on function clinicdb._statement_keyring() to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- The keyring of the clinic in force, unwrapped under app.master_key, in the
-- text form the application sends back as app.clinic_keyring in later
-- transactions (clinicdb.encryption.KeyringCache). The application already
-- holds the master key, which unwraps every clinic's keys, so keeping one
-- clinic's derived keys in its memory exposes nothing more there; its
-- transactions then need neither the master key nor the unwrapping. Only the
-- application role may call it, only for the clinic in force (RLS on
-- clinic_keys), and never from a supplied keyring (a stale one is never
-- handed out again; app.clinic_keyring is cleared for the rest of the
-- transaction). The epoch is read before the keys: a key change committed
-- in between makes the result stale (reloaded), never current with old keys.
-- The result is key material: read it, never log it.
create or replace function clinicdb.export_keyring()
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_clinic uuid := clinicdb.require_clinic_id();
    v_epoch bigint := (select e.epoch from clinicdb.key_epoch e);
    v_ring clinicdb.keyring;
    v_enc text[] := '{}';
    v_mac text[] := '{}';
    v_idx text[] := '{}';
begin
    if clinicdb._master_key_or_null('app.master_key') is null then
        raise exception 'cannot export the keyring of clinic %: no master key is in force for this transaction', v_clinic
            using errcode = 'insufficient_privilege', hint = clinicdb._key_problem_hint();
    end if;
    perform set_config('app.clinic_keyring', '', true);
    v_ring := clinicdb._clinic_keyring(v_clinic);
    if v_ring.problem is not null or v_ring.active_version is null then
        raise exception 'cannot export the keyring of clinic %: %', v_clinic,
                        coalesce(v_ring.problem, 'it has no active key version')
            using errcode = 'object_not_in_prerequisite_state',
                  hint = format('an operator creates a key with: clinicdb keys rotate --clinic %s', v_clinic);
    end if;
    -- One key per version from 1 in each list; empty where there is none.
    for v_version in 1 .. array_upper(v_ring.enc_keys, 1) loop
        v_enc := v_enc || coalesce(encode(v_ring.enc_keys[v_version], 'hex'), '');
        v_mac := v_mac || coalesce(encode(v_ring.mac_keys[v_version], 'hex'), '');
        v_idx := v_idx || coalesce(encode(v_ring.idx_keys[v_version], 'hex'), '');
    end loop;
    return format('%s/%s/%s/%s/%s/%s', v_clinic, v_epoch, v_ring.active_version,
                  array_to_string(v_enc, ','), array_to_string(v_mac, ','), array_to_string(v_idx, ','));
end
$$;
comment on function clinicdb.export_keyring() is
    'clinicdb: the clinic in force''s keys under app.master_key, for the application''s app.clinic_keyring (key material).';
revoke execute on function clinicdb.export_keyring() from public;
grant execute on function clinicdb.export_keyring() to clinicdb_app;

-- The active keys for writes to p_clinic, cached for the rest of the
-- transaction in the transaction-local setting clinicdb.write_keys, so a
-- 100,000-row insert unwraps once instead of per row. Format:
--   clinic uuid / hashtext(app.master_key) / version / hex(enc || mac || idx)
-- The cache lives only in this backend and transaction, where the master key
-- itself already is; writers compare the clinic and the master key's hash on
-- every row, so a changed or cleared master key reloads (and fails).
-- A session that forges the setting only ever encrypts its own writes under
-- keys nobody else has: those values then fail their integrity check on read
-- (loudly). It learns nothing it did not write.
create or replace function clinicdb._load_write_keys(p_clinic uuid, p_table text)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_ring clinicdb.keyring;
    v_cache text;
begin
    if p_clinic is null then
        perform clinicdb.require_clinic_id();
    end if;
    v_ring := clinicdb._clinic_keyring(p_clinic);
    if v_ring.problem like 'no master key%' then
        raise exception 'cannot encrypt % values: no master key is in force for this transaction', p_table
            using errcode = 'insufficient_privilege', hint = clinicdb._key_problem_hint();
    end if;
    if v_ring.active_version is null then
        if exists (select 1 from clinicdb.clinic_keys k where k.clinic_id = p_clinic) then
            raise exception 'cannot encrypt % values for clinic %: its keys were shredded', p_table, p_clinic
                using errcode = 'object_not_in_prerequisite_state',
                      hint = 'a shredded clinic takes no new PHI; an operator may start over with clinicdb keys rotate';
        end if;
        raise exception 'cannot encrypt % values: clinic % has no data key yet', p_table, p_clinic
            using errcode = 'object_not_in_prerequisite_state',
                  hint = format('an operator creates it with: clinicdb keys rotate --clinic %s', p_clinic);
    end if;
    v_cache := format('%s/%s/%s/%s', p_clinic, hashtext(coalesce(current_setting('app.master_key', true), '')),
                      v_ring.active_version,
                      encode(v_ring.enc_keys[v_ring.active_version] || v_ring.mac_keys[v_ring.active_version]
                             || v_ring.idx_keys[v_ring.active_version], 'hex'));
    perform set_config('clinicdb.write_keys', v_cache, true);
    return v_cache;
end
$$;
comment on function clinicdb._load_write_keys(uuid, text) is
    'clinicdb: unwrap a clinic''s active key for writes and cache it for this transaction only.';
grant execute on function clinicdb._load_write_keys(uuid, text) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- Operators' functions need to see every clinic's keys.
create or replace function clinicdb._require_operator(p_action text)
returns void
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
    if not exists (select 1 from pg_roles where rolname = current_user and (rolsuper or rolbypassrls)) then
        raise exception '% is an operator''s action: run it as a superuser (CLINICDB_ADMIN_URL)', p_action
            using errcode = 'insufficient_privilege', hint = 'clinicdb keys ... uses CLINICDB_ADMIN_URL';
    end if;
end
$$;
comment on function clinicdb._require_operator(text) is
    'clinicdb: raises unless the caller sees every clinic (key operations would otherwise act on a part).';

-- New key version for a clinic (the first one when it has none). New writes
-- use it at once; older versions keep decrypting until `clinicdb keys
-- reencrypt` has moved every value. One master key per database: a key that
-- does not match the others is refused rather than mixed in.
create or replace function clinicdb.rotate_clinic_key(p_clinic uuid)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_master bytea;
    v_master_id text;
    v_other text;
    v_version integer;
begin
    perform clinicdb._require_operator('rotating a clinic key');
    v_master := clinicdb._require_master_key('app.master_key');
    v_master_id := clinicdb._master_key_id(v_master);
    if not exists (select 1 from public.clinics where id = p_clinic) then
        raise exception 'clinic % does not exist', p_clinic
            using errcode = 'foreign_key_violation', hint = 'list clinics with: clinicdb clinic list';
    end if;
    perform pg_advisory_xact_lock(hashtext('clinicdb.clinic_keys'), hashtext(p_clinic::text));
    select k.master_key_id into v_other
      from clinicdb.clinic_keys k
     where k.state <> 'shredded' and k.master_key_id <> v_master_id
     limit 1;
    if found then
        raise exception 'the master key in force (id %) is not this database''s master key (id %)', v_master_id, v_other
            using errcode = 'invalid_authorization_specification',
                  hint = 'use the current master key; to change it, use clinicdb keys rotate-master';
    end if;
    select coalesce(max(k.version), 0) + 1 into v_version from clinicdb.clinic_keys k where k.clinic_id = p_clinic;
    update clinicdb.clinic_keys set state = 'retired', retired_at = now()
     where clinic_id = p_clinic and state = 'active';
    insert into clinicdb.clinic_keys (clinic_id, version, state, wrapped_key, master_key_id)
    values (p_clinic, v_version, 'active',
            clinicdb._wrap_key(clinicdb._random_bytes(32), v_master, p_clinic, v_version), v_master_id);
    insert into clinicdb.key_events (clinic_id, event, key_version, master_key_id)
    values (p_clinic, case when v_version = 1 then 'create' else 'rotate' end, v_version, v_master_id);
    perform set_config('clinicdb.write_keys', '', true);
    perform set_config('clinicdb.keyring', '', true);
    update clinicdb.key_epoch set epoch = epoch + 1;  -- supplied keyrings are stale from now on
    return v_version;
end
$$;
comment on function clinicdb.rotate_clinic_key(uuid) is
    'clinicdb: create a clinic''s next data key version (the first if none) under app.master_key; new writes use it.';
revoke execute on function clinicdb.rotate_clinic_key(uuid) from public;

-- Crypto-shredding: destroy every wrapped key of a clinic, so its encrypted
-- values can never be decrypted again from this database. Copies of the
-- wrapped keys in older backups, WAL archives and replicas' history remain
-- decryptable with the master key: rotate the master key afterwards and
-- destroy the old one (docs/encryption.md, "Shredding").
create or replace function clinicdb.shred_clinic_keys(p_clinic uuid, p_reason text default null)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_count integer;
begin
    perform clinicdb._require_operator('shredding a clinic''s keys');
    update clinicdb.clinic_keys
       set state = 'shredded', wrapped_key = null, shredded_at = now(), retired_at = coalesce(retired_at, now())
     where clinic_id = p_clinic and state <> 'shredded';
    get diagnostics v_count = row_count;
    if v_count = 0 and not exists (select 1 from clinicdb.clinic_keys where clinic_id = p_clinic) then
        raise exception 'clinic % has no keys to shred', p_clinic
            using errcode = 'no_data_found', hint = 'see clinicdb keys status';
    end if;
    insert into clinicdb.key_events (clinic_id, event, detail)
    values (p_clinic, 'shred', jsonb_build_object('versions_shredded', v_count, 'reason', left(p_reason, 500)));
    perform set_config('clinicdb.write_keys', '', true);
    perform set_config('clinicdb.keyring', '', true);
    update clinicdb.key_epoch set epoch = epoch + 1;  -- supplied keyrings are stale from now on
    return v_count;
end
$$;
comment on function clinicdb.shred_clinic_keys(uuid, text) is
    'clinicdb: destroy a clinic''s wrapped data keys (crypto-shredding); its encrypted values become unrecoverable.';
revoke execute on function clinicdb.shred_clinic_keys(uuid, text) from public;

-- Master key rotation: unwrap every live data key with app.master_key and
-- wrap it again with app.new_master_key, in one transaction. No encrypted
-- value changes: the data keys themselves stay the same.
create or replace function clinicdb.rewrap_clinic_keys()
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_old bytea;
    v_new bytea;
    v_old_id text;
    v_new_id text;
    v_key record;
    v_count integer := 0;
begin
    perform clinicdb._require_operator('rewrapping the data keys');
    v_old := clinicdb._require_master_key('app.master_key');
    v_new := clinicdb._require_master_key('app.new_master_key');
    v_old_id := clinicdb._master_key_id(v_old);
    v_new_id := clinicdb._master_key_id(v_new);
    if v_old = v_new then
        raise exception 'the new master key is the current one' using errcode = 'invalid_parameter_value',
            hint = 'generate a new one with: clinicdb keys generate-master';
    end if;
    perform pg_advisory_xact_lock(hashtext('clinicdb.clinic_keys'), 0);
    for v_key in
        select k.clinic_id, k.version, k.wrapped_key, k.master_key_id
          from clinicdb.clinic_keys k where k.state <> 'shredded' order by k.clinic_id, k.version for update
    loop
        if v_key.master_key_id <> v_old_id then
            raise exception 'the master key in force (id %) did not wrap key version % of clinic % (id %)',
                            v_old_id, v_key.version, v_key.clinic_id, v_key.master_key_id
                using errcode = 'invalid_authorization_specification', hint = 'give the current master key as the old one';
        end if;
        update clinicdb.clinic_keys
           set wrapped_key = clinicdb._wrap_key(
                   clinicdb._unwrap_key(v_key.wrapped_key, v_old, v_key.clinic_id, v_key.version),
                   v_new, v_key.clinic_id, v_key.version),
               master_key_id = v_new_id
         where clinic_id = v_key.clinic_id and version = v_key.version;
        v_count := v_count + 1;
    end loop;
    insert into clinicdb.key_events (event, master_key_id, detail)
    values ('rewrap', v_new_id, jsonb_build_object('previous_master_key_id', v_old_id, 'versions_rewrapped', v_count));
    perform set_config('clinicdb.write_keys', '', true);
    perform set_config('clinicdb.keyring', '', true);
    update clinicdb.key_epoch set epoch = epoch + 1;  -- supplied keyrings are stale from now on
    return v_count;
end
$$;
comment on function clinicdb.rewrap_clinic_keys() is
    'clinicdb: master key rotation: re-wrap every live data key from app.master_key to app.new_master_key; rows untouched.';
revoke execute on function clinicdb.rewrap_clinic_keys() from public;
-- ---- sql/functions/encrypted_values.sql ----
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
-- ---- sql/functions/encrypt_column.sql ----
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
    insert into clinicdb.key_events (event, detail)
    values ('decrypt_column', jsonb_build_object('table', p_table::text, 'column', p_column));
end
$$;
comment on function clinicdb.decrypt_column(regclass, name) is
    'clinicdb: undo encrypt_column(): decrypt values back into the column (needs app.master_key) and drop the rest.';
revoke execute on function clinicdb.decrypt_column(regclass, name) from public;
-- ---- sql/functions/reencrypt.sql ----
-- Moving a clinic's values to its active key version, one batch at a time.
--
-- `clinicdb keys reencrypt` calls reencrypt_batch() as clinicdb_app with the
-- clinic and the master key in force, in short transactions, so the table
-- stays online: each batch locks only the rows it rewrites, and commits with
-- its checkpoint (clinicdb.reencrypt_progress), so an interrupted run resumes
-- after the last committed row. Batches walk the (clinic_id, <row key>)
-- index in key order. A value is rewritten by writing its plaintext back
-- into the write slot, so the table's own trigger encrypts it with the active
-- version and recomputes its blind index; values already on the active
-- version are left alone (an update racing the batch re-checks the version
-- on the row it locks).

create or replace function clinicdb.reencrypt_batch(
    p_table regclass, p_after uuid, p_limit integer,
    out last_id uuid, out rows_scanned integer, out rows_rewritten integer
)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_ring clinicdb.keyring;
    v_row_key name;
    v_view text;
    v_set text := '';
    v_stale text := '';
    v_col record;
begin
    v_ring := clinicdb._clinic_keyring(clinicdb.require_clinic_id());
    if v_ring.problem is not null or v_ring.active_version is null then
        raise exception 'cannot re-encrypt %: %', p_table, coalesce(v_ring.problem, 'the clinic has no active key')
            using errcode = 'insufficient_privilege', hint = clinicdb._key_problem_hint();
    end if;
    for v_col in
        select ec.column_name as c, ec.column_name || '_ciphertext' as ct, ec.row_key
          from clinicdb.encrypted_columns ec where ec.table_name = p_table order by ec.column_name
    loop
        v_row_key := v_col.row_key;
        v_set := v_set || format('%s%I = case when clinicdb.key_version(t.%I) <> $3 then v.%I end',
                                 case when v_set = '' then '' else ', ' end, v_col.c, v_col.ct, v_col.c);
        v_stale := v_stale || format('%sclinicdb.key_version(t.%I) <> $3',
                                     case when v_stale = '' then '' else ' or ' end, v_col.ct);
    end loop;
    if v_row_key is null then
        raise exception '% has no encrypted columns', p_table using errcode = 'undefined_object';
    end if;
    v_view := (select format('%I.%I', n.nspname, left(c.relname || '_decrypted', 63))
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table);
    execute format($q$
        with batch as (
            select b.%1$I as id from %2$s b where ($1::uuid is null or b.%1$I > $1) order by b.%1$I limit $2
        ), moved as (
            update %2$s t set %3$s
              from %4$s v
             where v.%1$I = t.%1$I and t.%1$I in (select id from batch) and (%5$s)
            returning 1
        )
        select (select id from batch order by id desc limit 1), (select count(*) from batch)::integer,
               (select count(*) from moved)::integer$q$,
        v_row_key, p_table, v_set, v_view, v_stale)
        into last_id, rows_scanned, rows_rewritten
        using p_after, p_limit, v_ring.active_version;
end
$$;
comment on function clinicdb.reencrypt_batch(regclass, uuid, integer) is
    'clinicdb: move up to p_limit rows after p_after (row key order) of the clinic in force to its active key version.';
grant execute on function clinicdb.reencrypt_batch(regclass, uuid, integer) to clinicdb_app;

-- Values of the clinic in force still on an older key version (all columns).
create or replace function clinicdb.reencrypt_remaining(p_table regclass)
returns bigint
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_active integer;
    v_stale text := '';
    v_col record;
    v_count bigint;
begin
    select k.version into v_active
      from clinicdb.clinic_keys k where k.clinic_id = clinicdb.require_clinic_id() and k.state = 'active';
    for v_col in select ec.column_name || '_ciphertext' as ct from clinicdb.encrypted_columns ec
                  where ec.table_name = p_table loop
        v_stale := v_stale || format('%sclinicdb.key_version(%I) is distinct from $1 and %I is not null',
                                     case when v_stale = '' then '' else ' or ' end, v_col.ct, v_col.ct);
    end loop;
    if v_stale = '' then
        return 0;
    end if;
    execute format('select count(*) from %s where %s', p_table, v_stale) into v_count using v_active;
    return v_count;
end
$$;
comment on function clinicdb.reencrypt_remaining(regclass) is
    'clinicdb: how many rows of the clinic in force still hold a value under an older key version.';
grant execute on function clinicdb.reencrypt_remaining(regclass) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- How many stored values use each key version, per encrypted column and
-- clinic: what an operator checks before and after `clinicdb keys reencrypt`.
-- Reads only the version bytes (no key needed); run by a role that sees
-- every clinic for the whole picture.
create or replace function clinicdb.key_usage()
returns table (table_name text, column_name name, clinic_id uuid, key_version integer, values_stored bigint)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_col record;
begin
    for v_col in select ec.table_name, ec.column_name from clinicdb.encrypted_columns ec
                  order by ec.table_name::text, ec.column_name loop
        return query execute format(
            'select %L::text, %L::name, t.clinic_id, clinicdb.key_version(t.%I), count(*)
               from %s t where t.%I is not null group by 3, 4 order by 3, 4',
            v_col.table_name::text, v_col.column_name, v_col.column_name || '_ciphertext',
            v_col.table_name, v_col.column_name || '_ciphertext');
    end loop;
end
$$;
comment on function clinicdb.key_usage() is
    'clinicdb: stored values per encrypted column, clinic and key version (no key needed; shows re-encryption progress).';
revoke execute on function clinicdb.key_usage() from public;
grant execute on function clinicdb.key_usage() to clinicdb_auditor;
reset role;
