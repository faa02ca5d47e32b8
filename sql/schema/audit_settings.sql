-- clinicdb.audit_settings: per table and column, what the trail keeps of it.
--   * 'exclude': the column is left out of row images; an update that changes
--     only excluded columns writes no audit row (updated_at is excluded by
--     default when attach_audit() first meets a table that has one).
--   * 'mask': the column appears as the string "[masked]" (when not NULL),
--     so the trail shows that it was set or changed but never its value.
--     Encrypted PHI columns already hold ciphertext (bytea) and so appear
--     only as ciphertext; the encryption layer may mask them as well.
--   * 'include': kept as it is -- the same as no row, except that it
--     overrides the default exclusion of updated_at.
-- No row means the column is kept as it is. Changed only through
-- clinicdb.set_audit_column(), which re-attaches the table's triggers: the
-- lists are baked into the table's generated capture functions, so the write
-- path reads no table.
create table if not exists clinicdb.audit_settings (
    table_name regclass not null,
    column_name name not null,
    mode text not null check (mode in ('include', 'exclude', 'mask')),
    set_at timestamptz not null default now(),
    set_by name not null default session_user,
    primary key (table_name, column_name)
);
alter table clinicdb.audit_settings owner to clinicdb_owner;
comment on table clinicdb.audit_settings is
    'clinicdb: columns left out of (exclude) or masked in (mask) the audit trail; set with clinicdb.set_audit_column().';
revoke all on clinicdb.audit_settings from public;
grant select on clinicdb.audit_settings to clinicdb_auditor, clinicdb_app, clinicdb_staff, clinicdb_readonly;

-- What each table's capture functions were generated from (create_audit_capture
-- writes it). A column dropped or renamed, or a new primary key, after that
-- makes the functions out of date -- updates then fail rather than go
-- unaudited -- and clinicdb.audit_findings() (so `clinicdb check`) says so.
create table if not exists clinicdb.audit_capture_state (
    table_name regclass primary key,
    columns text[] not null,
    keys text[] not null,
    generated_at timestamptz not null default now()
);
alter table clinicdb.audit_capture_state owner to clinicdb_owner;
comment on table clinicdb.audit_capture_state is
    'clinicdb: the columns and key each table''s audit capture functions were generated for (attach_audit()).';
revoke all on clinicdb.audit_capture_state from public;
grant select on clinicdb.audit_capture_state to clinicdb_auditor;
