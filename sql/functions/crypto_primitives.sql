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
