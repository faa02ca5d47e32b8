-- 0006.clinics-in-clinicdb-schema: undo 0006.clinics-in-clinicdb-schema: clinics back into public and the functions that name it as
-- they were.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/functions/clinics.sql,
-- sql/functions/staff.sql, sql/functions/clinic_keys.sql, sql/functions/check_isolation.sql when it
-- was written. migrations/migrations.lock pins it: change sql/ and add a new migration instead of
-- editing this file.

set local role clinicdb_owner;
alter table clinicdb.clinics set schema public;
reset role;
set local role clinicdb_owner;
-- ---- sql/functions/clinics.sql ----
-- Operators create clinics; the application cannot (clinics is a tenant
-- table and the app only ever sees the clinic in force). SECURITY INVOKER and
-- granted to nobody: a DBA (a role that bypasses RLS) runs it.
create or replace function clinicdb.create_clinic(p_name text, p_id uuid default null, p_timezone text default 'UTC')
returns uuid
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id uuid := coalesce(p_id, gen_random_uuid());
begin
    if p_name is null or length(btrim(p_name)) = 0 then
        raise exception 'a clinic needs a name' using errcode = 'invalid_parameter_value';
    end if;
    insert into public.clinics (id, name, timezone) values (v_id, btrim(p_name), p_timezone)
    on conflict (id) do nothing;
    return v_id;
end
$$;
comment on function clinicdb.create_clinic(text, uuid, text) is
    'clinicdb: create a clinic (tenant) and return its id. For operators (DBAs); granted to no application role.';
revoke execute on function clinicdb.create_clinic(text, uuid, text) from public;
-- ---- sql/functions/staff.sql ----
-- Staff logins: humans in psql, each scoped to its clinic.
--
-- grant_staff makes a login a member of clinicdb_staff and maps it to a
-- clinic; revoke_staff removes a mapping and, with the last one, the
-- membership. Both run with the caller's rights (SECURITY INVOKER): granting
-- role membership needs CREATEROLE or ADMIN on clinicdb_staff, and the layer
-- does not lend that to anyone.
--
-- Refused: roles that bypass RLS (superuser, BYPASSRLS) -- their mapping would
-- be a lie -- and members of the app/readonly/owner/auditor groups, whose
-- other path to data (app.clinic_id, ownership, audit reads) a staff mapping
-- must not sit beside; likewise CREATEROLE logins (they can grant themselves
-- any role) and logins that hold (and so can SET ROLE to) a role bypassing
-- RLS, a CREATEROLE role or another staff login. clinicdb.check_isolation()
-- reports such grants made after the fact.
--
-- Mappings are keyed by role name. A role dropped without revoke_staff leaves
-- its mapping behind; grant_staff removes such stale mappings before mapping
-- a new role of that name, and check_isolation() reports them meanwhile.
create or replace function clinicdb.grant_staff(p_role name, p_clinic uuid)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_role record;
begin
    select rolname, rolsuper, rolbypassrls, rolcreaterole, rolreplication, rolcanlogin
      into v_role from pg_roles where rolname = p_role;
    if not found then
        raise exception 'role % does not exist', p_role
            using errcode = 'undefined_object', hint = 'create the login first: create role ... login';
    end if;
    -- REPLICATION streams the WAL: every clinic's rows, below any policy.
    if v_role.rolsuper or v_role.rolbypassrls or v_role.rolreplication then
        raise exception 'role % bypasses row level security and cannot be staff', p_role
            using errcode = 'insufficient_privilege', hint = 'use a login without SUPERUSER, BYPASSRLS or REPLICATION';
    end if;
    -- CREATEROLE grants membership in any non-superuser role: the login could
    -- grant itself clinicdb_readonly (any clinic) or clinicdb_owner.
    if v_role.rolcreaterole then
        raise exception 'role % has CREATEROLE and could grant itself any role; it cannot be staff', p_role
            using errcode = 'insufficient_privilege', hint = 'alter role ... nocreaterole, or use a separate login';
    end if;
    if p_role in ('clinicdb_staff', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_owner', 'clinicdb_auditor')
       or pg_has_role(p_role, 'clinicdb_app', 'MEMBER')
       or pg_has_role(p_role, 'clinicdb_readonly', 'MEMBER')
       or pg_has_role(p_role, 'clinicdb_owner', 'MEMBER')
       or pg_has_role(p_role, 'clinicdb_auditor', 'MEMBER') then
        raise exception 'role % is a clinicdb group or holds one; staff must be a plain login', p_role
            using errcode = 'insufficient_privilege', hint = 'create a separate login for the person';
    end if;
    -- SET ROLE needs only membership: a login that holds a role bypassing RLS,
    -- a CREATEROLE role or another staff login could act as it, whatever its
    -- own mapping says.
    if exists (select 1 from pg_roles g
                where g.rolname <> p_role and g.rolname <> 'clinicdb_staff'
                  and pg_has_role(p_role, g.oid, 'MEMBER')
                  and (g.rolsuper or g.rolbypassrls or g.rolcreaterole or pg_has_role(g.oid, 'clinicdb_staff', 'MEMBER'))) then
        raise exception 'role % can SET ROLE to a role that bypasses row level security, has CREATEROLE '
                        'or is another staff login', p_role
            using errcode = 'insufficient_privilege', hint = 'revoke those roles from it, or create a separate login';
    end if;
    if not exists (select 1 from public.clinics where id = p_clinic) then
        raise exception 'clinic % does not exist', p_clinic
            using errcode = 'foreign_key_violation', hint = 'list clinics with: clinicdb clinic list';
    end if;
    if not v_role.rolcanlogin then
        raise warning 'role % cannot log in; the mapping applies once it can', p_role;
    end if;
    -- Mappings of this name that are not this role (another oid), or left
    -- behind by a revoked membership, belong to someone else: start clean.
    if not pg_has_role(p_role, 'clinicdb_staff', 'MEMBER')
       or exists (select 1 from clinicdb.staff_members sm
                   where sm.role_name = p_role and sm.role_oid <> (select oid from pg_roles where rolname = p_role)) then
        delete from clinicdb.staff_members where role_name = p_role;
        if found then
            raise warning 'removed stale staff mappings of %, left by an earlier role of that name', p_role;
        end if;
    end if;
    execute format('grant clinicdb_staff to %I', p_role);
    insert into clinicdb.staff_members (role_name, role_oid, clinic_id)
    values (p_role, (select oid from pg_roles where rolname = p_role), p_clinic)
    on conflict (role_name, clinic_id) do update set role_oid = excluded.role_oid;
end
$$;
comment on function clinicdb.grant_staff(name, uuid) is
    'clinicdb: let a psql login act for one clinic (adds it to clinicdb_staff).';
revoke execute on function clinicdb.grant_staff(name, uuid) from public;

create or replace function clinicdb.revoke_staff(p_role name, p_clinic uuid default null)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_removed integer;
begin
    delete from clinicdb.staff_members
     where role_name = p_role and (p_clinic is null or clinic_id = p_clinic);
    get diagnostics v_removed = row_count;
    if not exists (select 1 from clinicdb.staff_members where role_name = p_role)
       and exists (select 1 from pg_roles where rolname = p_role)
       and pg_has_role(p_role, 'clinicdb_staff', 'MEMBER') then
        execute format('revoke clinicdb_staff from %I', p_role);
    end if;
    return v_removed;
end
$$;
comment on function clinicdb.revoke_staff(name, uuid) is
    'clinicdb: remove a staff login''s mapping to one clinic (or all, when clinic is null); returns mappings removed.';
revoke execute on function clinicdb.revoke_staff(name, uuid) from public;
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
-- ---- sql/functions/check_isolation.sql ----
-- clinicdb.check_isolation(): prove, in a live database, that every table
-- with a clinic_id column in the application schemas is protected, and that
-- nothing beside the policies opens a way around them. One row per finding;
-- no rows means protected. `clinicdb check` prints these and exits 1 on any.
--
-- The standard policies are compared with those of clinicdb.policy_reference,
-- a table protected from the same clinicdb.tenant_policies rows, through
-- pg_get_expr: a policy edited by hand on any table shows up as a finding.

create table if not exists clinicdb.policy_reference (clinic_id uuid not null);
comment on table clinicdb.policy_reference is
    'clinicdb: never holds rows; carries the standard tenant policies so check_isolation() can compare against them.';
revoke all on clinicdb.policy_reference from public;

create or replace function clinicdb.check_isolation(p_schemas text[] default null)
returns table (table_name text, finding text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_schemas text[];
begin
    -- Application schemas: every non-system schema except the layer's own
    -- (its tables have their own tests) unless the caller names them.
    select coalesce(p_schemas, array_agg(n.nspname::text)) into v_schemas
      from pg_namespace n
     where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast', 'clinicdb', 'clinicdb_tap')
       and n.nspname not like 'pg\_temp\_%' and n.nspname not like 'pg\_toast\_temp\_%';

    return query
    with tenant_tables as (
        -- Names are always schema-qualified, whatever the caller's search_path.
        select c.oid as relid, format('%I.%I', n.nspname, c.relname) as name, c.relrowsecurity, c.relforcerowsecurity,
               c.relowner, c.relkind, a.attnotnull
          from pg_class c
          join pg_namespace n on n.oid = c.relnamespace
          join pg_attribute a on a.attrelid = c.oid and a.attname = 'clinic_id' and not a.attisdropped
         -- Partitions included: a query that names a partition directly is
         -- checked against the partition's own policies, not its parent's.
         where n.nspname = any (v_schemas)
           and c.relkind in ('r', 'p')
    ),
    reference as (
        select p.polname, p.polcmd, p.polpermissive, p.polroles,
               pg_get_expr(p.polqual, p.polrelid) as qual,
               pg_get_expr(p.polwithcheck, p.polrelid) as withcheck
          from pg_policy p
         where p.polrelid = 'clinicdb.policy_reference'::regclass
    ),
    findings as (
        select t.name, 'row level security is not enabled'::text as finding
          from tenant_tables t where not t.relrowsecurity
        union all
        select t.name, 'row level security is not forced (the owner bypasses it)'
          from tenant_tables t where not t.relforcerowsecurity
        union all
        select t.name, 'clinic_id allows NULL'
          from tenant_tables t where not t.attnotnull
        union all
        select t.name, 'not registered by clinicdb.protect_table()'
          from tenant_tables t
         where not exists (select 1 from clinicdb.protected_tables pt where pt.table_name = t.relid)
        union all
        select t.name, format('standard policy %s is missing', r.polname)
          from tenant_tables t cross join reference r
         where not exists (select 1 from pg_policy p where p.polrelid = t.relid and p.polname = r.polname)
        union all
        select t.name, format('policy %s differs from the standard definition', p.polname)
          from tenant_tables t
          join pg_policy p on p.polrelid = t.relid
          join reference r on r.polname = p.polname
         where p.polcmd <> r.polcmd or p.polpermissive <> r.polpermissive or p.polroles <> r.polroles
            or pg_get_expr(p.polqual, p.polrelid) is distinct from r.qual
            or pg_get_expr(p.polwithcheck, p.polrelid) is distinct from r.withcheck
        union all
        select t.name, format('extra permissive policy %s widens the tenant policy', p.polname)
          from tenant_tables t
          join pg_policy p on p.polrelid = t.relid
         where p.polpermissive and p.polname not in (select r.polname from reference r)
        union all
        select t.name, format('owned by %s, which holds an application or staff role', pg_get_userbyid(t.relowner))
          from tenant_tables t
         -- An owner can disable RLS; it must not be a role the app or staff
         -- can act as. (A superuser counts as a member of every role, but no
         -- application role can become one: that is checked below.)
         where not (select r.rolsuper from pg_roles r where r.oid = t.relowner)
           and (pg_has_role(t.relowner, 'clinicdb_app', 'MEMBER')
                or pg_has_role(t.relowner, 'clinicdb_readonly', 'MEMBER')
                or pg_has_role(t.relowner, 'clinicdb_staff', 'MEMBER'))
        union all
        -- A foreign key between tenant tables that does not carry clinic_id
        -- lets a row point at another clinic's row. Referential checks run
        -- below row level security, so inserting such a row also confirms
        -- that the other clinic's key exists, and ON DELETE/UPDATE actions
        -- reach across clinics. The clinic_id -> clinics (id) key is fine.
        select t.name, format('foreign key %s references %s without clinic_id: a row can point at another clinic''s row',
                              con.conname, con.confrelid::regclass)
          from tenant_tables t
          join pg_constraint con on con.conrelid = t.relid and con.contype = 'f' and con.conparentid = 0
          join pg_attribute la on la.attrelid = t.relid and la.attname = 'clinic_id' and not la.attisdropped
          join pg_attribute ra on ra.attrelid = con.confrelid and ra.attname = 'clinic_id' and not ra.attisdropped
         where con.conkey <> array[la.attnum]
           and not exists (select 1 from unnest(con.conkey, con.confkey) k(l, r) where k.l = la.attnum and k.r = ra.attnum)
        union all
        -- A unique (or exclusion) index without clinic_id is checked across
        -- every clinic: inserting a value another clinic already has fails,
        -- which tells the inserter that value exists (an SSN, an e-mail).
        -- Keys made only of uuid columns (random ids) are left out: probing
        -- them needs the id already (docs: residual risks).
        select t.name, format('unique index %s leaves clinic_id out: a value another clinic has is refused, which reveals it',
                              i.indexrelid::regclass)
          from tenant_tables t
          join pg_index i on i.indrelid = t.relid and (i.indisunique or i.indisexclusion)
          join pg_attribute la on la.attrelid = t.relid and la.attname = 'clinic_id' and not la.attisdropped
         where not (la.attnum = any (i.indkey::int2[]))
           and (i.indexprs is not null
                or exists (select 1 from unnest(i.indkey::int2[]) k(attnum)
                             join pg_attribute a on a.attrelid = t.relid and a.attnum = k.attnum
                            where a.atttypid <> 'uuid'::regtype))
        union all
        -- TRUNCATE, REFERENCES and TRIGGER are not covered by RLS.
        select t.name, format('%s holds %s, which row level security does not cover',
                              case when acl.grantee = 0 then 'public' else pg_get_userbyid(acl.grantee) end,
                              acl.privilege_type)
          from tenant_tables t
          cross join lateral aclexplode((select c.relacl from pg_class c where c.oid = t.relid)) acl
         where acl.privilege_type in ('TRUNCATE', 'REFERENCES', 'TRIGGER')
           and acl.grantee <> t.relowner
        union all
        -- A view that is not security_invoker reads the table with its
        -- owner's rights; if that owner bypasses RLS, so does every reader.
        -- A materialized view stores whatever its refresher could see.
        select t.name, format('%s %s reads it %s',
                              case v.relkind when 'm' then 'materialized view' else 'view' end,
                              (select format('%I.%I', vn.nspname, v.relname) from pg_namespace vn where vn.oid = v.relnamespace),
                              case v.relkind when 'm' then 'and stores rows outside the policy'
                                   else 'without security_invoker' end)
          from tenant_tables t
          join pg_depend d on d.refobjid = t.relid and d.classid = 'pg_rewrite'::regclass
          join pg_rewrite rw on rw.oid = d.objid
          join pg_class v on v.oid = rw.ev_class and v.oid <> t.relid
         where v.relkind = 'm'
            or (v.relkind = 'v' and not coalesce('security_invoker=true' = any (v.reloptions)
                                                  or 'security_invoker=on' = any (v.reloptions), false))
    )
    select distinct f.name, f.finding from findings f
    union all
    -- The application path must never be able to skip the policies.
    select r.rolname::text, 'role holds an application or staff role and bypasses row level security'
      from pg_roles r
     where (r.rolsuper or r.rolbypassrls)
       and r.rolname not in ('clinicdb_owner')
       and (exists (select 1 from pg_auth_members m join pg_roles g on g.oid = m.roleid
                     where m.member = r.oid
                       and g.rolname in ('clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor')))
    union all
    select r.rolname::text, 'clinicdb group role is SUPERUSER or BYPASSRLS'
      from pg_roles r
     where r.rolname in ('clinicdb_owner', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor')
       and (r.rolsuper or r.rolbypassrls)
    union all
    -- CREATEROLE can grant membership in any role that is not a superuser:
    -- clinicdb_owner, clinicdb_app, another staff login. Not on this path.
    -- REPLICATION lets a login stream the WAL or take a base backup: every
    -- clinic's rows, below any policy.
    select r.rolname::text, case when r.rolcreaterole
                                 then 'role on the application path has CREATEROLE and can grant itself any role'
                                 else 'role on the application path has REPLICATION and can stream every clinic''s data'
                            end
      from pg_roles r
     where (r.rolcreaterole or r.rolreplication) and not r.rolsuper
       and (pg_has_role(r.oid, 'clinicdb_app', 'MEMBER') or pg_has_role(r.oid, 'clinicdb_readonly', 'MEMBER')
            or pg_has_role(r.oid, 'clinicdb_staff', 'MEMBER') or pg_has_role(r.oid, 'clinicdb_auditor', 'MEMBER'))
    union all
    -- SET ROLE escapes: a role on the application path (the app, readonly,
    -- staff, auditor groups and their members) that also holds -- directly or
    -- through other roles -- a role with another way in. SET ROLE needs only
    -- membership, so holding is enough, whatever INHERIT says. grant_staff
    -- refuses these at grant time; this catches a GRANT made afterwards.
    select h.member_name::text, format('can SET ROLE to %s, which %s', h.role_name, h.why)
      from (
        select m.rolname as member_name, g.rolname as role_name,
               case
                   when g.rolsuper or g.rolbypassrls then 'bypasses row level security'
                   when g.rolcreaterole then 'has CREATEROLE and can grant itself any role, clinicdb_owner included'
                   -- Predefined roles whose rights sit below row level security.
                   when g.rolname in ('pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program')
                       then 'reads or writes the server''s files (table files included) or runs programs as the server'
                   when g.rolname in ('pg_read_all_stats', 'pg_monitor')
                       then 'shows the text of every session''s queries, other clinics'' values included'
                   when g.rolname = 'pg_write_all_data'
                       then 'writes every table, the layer''s registries included'
                   when g.rolname = 'clinicdb_owner'
                     or exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                                 where c.relowner = g.oid and (n.nspname = 'clinicdb' or n.nspname = any (v_schemas)))
                     or exists (select 1 from pg_namespace n where n.nspowner = g.oid and n.nspname = 'clinicdb')
                     or exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                                 where p.proowner = g.oid and n.nspname = 'clinicdb')
                       then 'owns tables or functions of the layer and can turn its protection off'
                   when pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER')
                    and g.rolname in ('clinicdb_app', 'clinicdb_readonly')
                       then 'lets a staff login choose any clinic with app.clinic_id'
                   when pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER') and g.rolname = 'clinicdb_auditor'
                       then 'reads the audit data of every clinic'
                   when pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER') and g.rolname <> 'clinicdb_staff'
                    and pg_has_role(g.oid, 'clinicdb_staff', 'MEMBER')
                       then 'is another staff login, mapped to its own clinics'
                   when pg_has_role(m.oid, 'clinicdb_auditor', 'MEMBER')
                    and (g.rolname in ('clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff')
                         or pg_has_role(g.oid, 'clinicdb_staff', 'MEMBER'))
                       then 'gives the auditor the rows of a clinic'
               end as why
          from (
            -- Every (member, role held) pair, through any chain of grants.
            with recursive held(member, roleid) as (
                select am.member, am.roleid from pg_auth_members am
                union
                select held.member, am.roleid from held join pg_auth_members am on am.member = held.roleid
            )
            select held.member, held.roleid from held
          ) pairs
          join pg_roles m on m.oid = pairs.member
          join pg_roles g on g.oid = pairs.roleid
         where not m.rolsuper and m.oid <> g.oid
           and (pg_has_role(m.oid, 'clinicdb_app', 'MEMBER') or pg_has_role(m.oid, 'clinicdb_readonly', 'MEMBER')
                or pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER') or pg_has_role(m.oid, 'clinicdb_auditor', 'MEMBER'))
      ) h
     where h.why is not null
    union all
    -- SECURITY DEFINER functions the application path may call run as their
    -- owner: an owner that bypasses RLS hands its rows to every caller, and a
    -- body resolved at run time through a search_path that does not end in
    -- pg_temp (pg_temp is searched FIRST for tables when not named) can be
    -- pointed at the caller's temporary objects. SQL-standard bodies
    -- (begin atomic) are bound at creation and need no pinned path.
    select f.signature, f.why
      from (
        select p.oid::regprocedure::text as signature,
               case
                   when o.rolsuper or o.rolbypassrls
                       then format('SECURITY DEFINER function owned by %s, which bypasses row level security, '
                                   'is executable by the application or staff', o.rolname)
                   when p.prosqlbody is null
                    and not exists (select 1 from unnest(p.proconfig) c
                                     where c ~ '^search_path=' and c ~ 'pg_temp"?$')
                       then 'SECURITY DEFINER function without a pinned search_path ending in pg_temp '
                            'is executable by the application or staff'
               end as why
          from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
          join pg_roles o on o.oid = p.proowner
         where p.prosecdef
           and n.nspname not in ('pg_catalog', 'information_schema')
           and (has_function_privilege('clinicdb_app', p.oid, 'EXECUTE')
                or has_function_privilege('clinicdb_readonly', p.oid, 'EXECUTE')
                or has_function_privilege('clinicdb_staff', p.oid, 'EXECUTE')
                or has_function_privilege('clinicdb_auditor', p.oid, 'EXECUTE'))
      ) f
     where f.why is not null
    order by 1, 2;

    -- Mappings left behind by a dropped role or a revoked membership grant
    -- nothing (current_clinic_id matches name and oid) but are clutter that
    -- hides who may act where; report them. Only callers that
    -- can read every mapping (the owner, DBAs) can check; others skip it.
    if has_table_privilege('clinicdb.staff_members', 'select')
       and not exists (select 1 from pg_class where oid = 'clinicdb.staff_members'::regclass and relforcerowsecurity)
       and (pg_has_role('clinicdb_owner', 'MEMBER')
            or (select rolsuper or rolbypassrls from pg_roles where rolname = current_user)) then
        return query
        select sm.role_name::text,
               case when r.oid is null
                    then 'staff mapping of a role that no longer exists (or was recreated): run clinicdb.revoke_staff'
                    else 'staff mapping of a role that is not in clinicdb_staff: granting the group would revive it'
               end
          from (select distinct s.role_name, s.role_oid from clinicdb.staff_members s) sm
          left join pg_roles r on r.rolname = sm.role_name and r.oid = sm.role_oid
         where r.oid is null or not pg_has_role(r.oid, 'clinicdb_staff', 'MEMBER')
         order by 1;
    end if;
end
$$;
comment on function clinicdb.check_isolation(text[]) is
    'clinicdb: findings that break tenant isolation in the application schemas (tables named schema.table); no rows means every clinic_id table is protected.';
grant execute on function clinicdb.check_isolation(text[]) to clinicdb_owner, clinicdb_auditor;
reset role;
set local role clinicdb_owner;
-- The generated audit capture functions carry the table's name as a constant.
select clinicdb.attach_audit('public.clinics');
reset role;
