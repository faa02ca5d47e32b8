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
    if not exists (select 1 from clinicdb.clinics where id = p_clinic) then
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
