-- clinicdb.audit_log: the audit trail. One row per changed row of every
-- audited table (written by the triggers of attach_audit() in the same
-- transaction as the change: a rolled-back change leaves no row), one row per
-- id passed to log_access() (reads of PHI), and one row per retention action.
--
-- Invariants:
--   * Append-only for every role the layer creates: app and staff may INSERT
--     only 'access' rows about themselves (every context column is filled by
--     a default they cannot override, see the column grants and the insert
--     policy); nobody but the owner may UPDATE, DELETE or TRUNCATE, and the
--     owner is stopped by clinicdb.audit_log_guard() unless it runs one of
--     the maintenance functions (ensure_audit_partitions, prune_audit).
--   * Reads: clinicdb_auditor sees every clinic's rows (and the system rows,
--     clinic_id NULL); the app, readonly and staff roles see only the rows of
--     the clinic in force (clinicdb.current_clinic_id()). RLS is enabled but
--     not forced: the owner's maintenance functions read everything.
--   * Range-partitioned by logged_at, one partition per calendar month (UTC),
--     with a default partition so a row is never refused for want of one.
--     Partitions carry no grants: nobody reads or writes them except through
--     this table (and its policies).
--   * (txid, id) orders the trail for sealing: txid is the 64-bit
--     epoch-extended top-level transaction id, so every row of a transaction
--     still running has a txid >= the oldest running transaction's; see
--     sql/functions/audit_seal.sql.
--
-- Indexes are chosen for the questions people ask and for the cost of the
-- write path (measured: each btree costs about as much as the row's heap
-- insert, a BRIN index almost nothing): a btree on row_id (history of one
-- row or patient), a btree on (clinic_id, logged_at) (one clinic's day,
-- `audit tail --clinic`), and one BRIN index over logged_at and txid
-- (time ranges; sealing and verification read in txid order) with a bloom
-- filter on app_user (one user's actions: only block ranges that may hold
-- the user are read). A btree on app_user doubled the cost of a bulk insert's
-- audit rows on top of the others and was dropped for the bloom filter.
-- The filter is sized for 100 users per block range (about 120 bytes): with
-- the default size (10% of a range's possible rows, over 1 kB) every insert
-- into an already summarized range recompressed the filter, which cost as
-- much as a btree insert (measured; rows land in summarized ranges whenever
-- the free space map offers an older page).
create sequence if not exists clinicdb.audit_log_id_seq as bigint cache 32;
comment on sequence clinicdb.audit_log_id_seq is
    'clinicdb: ids of audit rows. Cached per session: ids are unique, not gapless and not in commit order.';

create table if not exists clinicdb.audit_log (
    id bigint not null default nextval('clinicdb.audit_log_id_seq'),
    logged_at timestamptz not null default clock_timestamp(),
    statement_at timestamptz not null default statement_timestamp(),
    txid bigint not null default txid_current(),
    clinic_id uuid default clinicdb.current_clinic_id(),
    table_name text not null,
    row_id text,
    -- insert: new_values; update: old_values and new_values (changed columns
    -- plus the key); delete: old_values; access: purpose; truncate, prune:
    -- new_values describes what was removed.
    action text not null check (action in ('insert', 'update', 'delete', 'truncate', 'access', 'prune')),
    old_values jsonb,
    new_values jsonb,
    purpose text,
    app_user text default nullif(current_setting('app.user_id', true), ''),
    request_id text default nullif(current_setting('app.request_id', true), ''),
    session_role name not null default session_user,
    acting_role name not null default current_user,
    client_addr inet default inet_client_addr(),
    application_name text default nullif(current_setting('application_name', true), '')
) partition by range (logged_at);
alter table clinicdb.audit_log owner to clinicdb_owner;
alter sequence clinicdb.audit_log_id_seq owner to clinicdb_owner;

comment on table clinicdb.audit_log is
    'clinicdb: the audit trail (append-only, partitioned by month). See docs/audit.md.';
comment on column clinicdb.audit_log.id is 'Unique id of the audit row (sequence; not in commit order).';
comment on column clinicdb.audit_log.logged_at is 'Wall-clock time the audit row was written (partition key).';
comment on column clinicdb.audit_log.statement_at is 'Start time of the statement that made the change.';
comment on column clinicdb.audit_log.txid is 'Top-level transaction id (txid_current()) of the change.';
comment on column clinicdb.audit_log.clinic_id is 'Clinic of the changed row; NULL for system rows (truncate, prune).';
comment on column clinicdb.audit_log.table_name is 'schema.table that changed or was read (or the partition pruned).';
comment on column clinicdb.audit_log.row_id is 'Primary key of the row (text; a JSON array for composite keys).';
comment on column clinicdb.audit_log.action is 'insert, update, delete, truncate, access (a PHI read) or prune.';
comment on column clinicdb.audit_log.old_values is
    'Row before the change (update: changed columns plus the key). Excluded columns absent, masked ones "[masked]".';
comment on column clinicdb.audit_log.new_values is
    'Row after the change (update: changed columns plus the key). Excluded columns absent, masked ones "[masked]".';
comment on column clinicdb.audit_log.purpose is 'Why PHI was read (access rows).';
comment on column clinicdb.audit_log.app_user is 'The application user acting (app.user_id).';
comment on column clinicdb.audit_log.request_id is 'Correlation id of the request (app.request_id).';
comment on column clinicdb.audit_log.session_role is 'The login of the session (session_user).';
comment on column clinicdb.audit_log.acting_role is 'The role in force (SET ROLE), or the login when none.';
comment on column clinicdb.audit_log.client_addr is 'Client address of the session (NULL over a Unix socket).';
comment on column clinicdb.audit_log.application_name is 'application_name of the session.';

create index if not exists audit_log_row_idx on clinicdb.audit_log (row_id);
create index if not exists audit_log_clinic_time_idx on clinicdb.audit_log (clinic_id, logged_at);
create index if not exists audit_log_brin on clinicdb.audit_log
    using brin (logged_at, txid, app_user text_bloom_ops(n_distinct_per_range = 100))
    with (pages_per_range = 32, autosummarize = on);

create table if not exists clinicdb.audit_log_default partition of clinicdb.audit_log default;
alter table clinicdb.audit_log_default owner to clinicdb_owner;
comment on table clinicdb.audit_log_default is
    'clinicdb: audit rows of months without a partition; ensure_audit_partitions() moves them out.';

-- Reads: one clinic, or every clinic for the auditor.
alter table clinicdb.audit_log enable row level security;
drop policy if exists audit_log_read on clinicdb.audit_log;
create policy audit_log_read on clinicdb.audit_log for select
    using (clinic_id = (select clinicdb.current_clinic_id())
           or (select pg_has_role('clinicdb_auditor', 'MEMBER')));

-- Writes by the app and staff (access rows only): their policy, grants and
-- id trigger are defined with clinicdb.log_access (sql/functions/log_access.sql).

revoke all on clinicdb.audit_log, clinicdb.audit_log_default from public;
grant select on clinicdb.audit_log to clinicdb_app, clinicdb_staff, clinicdb_readonly, clinicdb_auditor;

-- The owner's own safety net: UPDATE, DELETE and TRUNCATE raise unless a
-- maintenance function set clinicdb.audit_maintenance for its transaction.
-- Not a security boundary (the owner can set it too, a superuser can disable
-- triggers): the roles' privileges are, and sealing catches the rest.
create or replace function clinicdb.audit_log_guard()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if current_setting('clinicdb.audit_maintenance', true) is distinct from 'on' then
        raise exception 'the audit trail is append-only: % on % refused', tg_op, tg_table_name
            using errcode = 'insufficient_privilege',
                  hint = 'old partitions are removed with clinicdb.prune_audit() (clinicdb audit prune)';
    end if;
    return case tg_op when 'DELETE' then old else new end;
end
$$;
comment on function clinicdb.audit_log_guard() is
    'clinicdb: refuses UPDATE, DELETE and TRUNCATE on the audit trail outside the maintenance functions.';

drop trigger if exists audit_log_guard on clinicdb.audit_log;
create trigger audit_log_guard before update or delete on clinicdb.audit_log
    for each row execute function clinicdb.audit_log_guard();
drop trigger if exists audit_log_guard_truncate on clinicdb.audit_log;
create trigger audit_log_guard_truncate before truncate on clinicdb.audit_log
    for each statement execute function clinicdb.audit_log_guard();
drop trigger if exists audit_log_guard_truncate on clinicdb.audit_log_default;
create trigger audit_log_guard_truncate before truncate on clinicdb.audit_log_default
    for each statement execute function clinicdb.audit_log_guard();
