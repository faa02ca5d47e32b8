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
    clinic_id uuid not null references clinicdb.clinics (id) on delete cascade,
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
