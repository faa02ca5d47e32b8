-- 0004.audit: The audit trail: partitioned append-only clinicdb.audit_log, its triggers on every protected table,
-- log_access() for PHI reads, retention and the seal chain (issue #4).
-- depends: 0002.tenancy-core
--
-- Frozen: the SQL below is what this migration runs, copied from sql/schema/audit_log.sql,
-- sql/schema/audit_settings.sql, sql/schema/audit_seals.sql, sql/functions/audit_capture.sql,
-- sql/functions/attach_audit.sql, sql/functions/audit_partitions.sql, sql/functions/audit_seal.sql,
-- sql/functions/log_access.sql, sql/schema/audit_attach_existing.sql when it was written.
-- migrations/migrations.lock pins it: change sql/ and add a new migration instead of editing this
-- file.

set local role clinicdb_owner;
-- ---- sql/schema/audit_log.sql ----
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

-- Writes by the app and staff: access rows of their own clinic only. The
-- context columns are not granted (below), so their defaults always apply.
drop policy if exists audit_log_access_insert on clinicdb.audit_log;
create policy audit_log_access_insert on clinicdb.audit_log for insert
    to clinicdb_app, clinicdb_staff
    with check (action = 'access' and old_values is null and new_values is null
                and clinic_id = (select clinicdb.require_clinic_id()));

revoke all on clinicdb.audit_log, clinicdb.audit_log_default from public;
grant select on clinicdb.audit_log to clinicdb_app, clinicdb_staff, clinicdb_readonly, clinicdb_auditor;
grant insert (table_name, row_id, action, purpose) on clinicdb.audit_log to clinicdb_app, clinicdb_staff;
grant usage on sequence clinicdb.audit_log_id_seq to clinicdb_app, clinicdb_staff;

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
-- ---- sql/schema/audit_settings.sql ----
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
-- ---- sql/schema/audit_seals.sql ----
-- clinicdb.audit_seals: the hash chain over the audit trail (see
-- sql/functions/audit_seal.sql for how blocks are cut and checked).
--
-- Invariants:
--   * block_no runs 1, 2, 3, ... without gaps; block n's prev_hash is block
--     n-1's block_hash (block 1's is 32 zero bytes).
--   * The key ranges [lo, hi) of consecutive blocks touch: block n's lo is
--     block n-1's hi, block 1's lo is (0, 0). So every audit row with a txid
--     below the last block's hi_txid falls in exactly one block, and a row
--     added later in that range is seen as inserted.
--   * rows_digest = sha256 over (id, month, row digest) of the block's rows
--     in (txid, id) order; block_hash = sha256(prev_hash, block_no, lo, hi,
--     row_count, rows_digest). The per-row arrays exist to name a changed
--     row; once every month of a block is pruned they are dropped and
--     rows_digest alone anchors the chain.
create table if not exists clinicdb.audit_seals (
    block_no bigint primary key check (block_no > 0),
    lo_txid bigint not null,
    lo_id bigint not null,
    hi_txid bigint not null,
    hi_id bigint not null,
    row_count integer not null check (row_count > 0),
    row_ids bigint[],
    row_months integer[],
    row_digests bytea[],
    rows_digest bytea not null,
    prev_hash bytea not null,
    block_hash bytea not null,
    sealed_at timestamptz not null default now(),
    sealed_by name not null default session_user,
    check ((lo_txid, lo_id) < (hi_txid, hi_id))
);
alter table clinicdb.audit_seals owner to clinicdb_owner;
comment on table clinicdb.audit_seals is
    'clinicdb: hash-chained blocks over the audit trail (clinicdb.seal_audit / clinicdb.verify_audit).';
revoke all on clinicdb.audit_seals from public;
grant select on clinicdb.audit_seals to clinicdb_auditor;

-- Months removed by retention: their rows are expected to be gone, and
-- verification skips them while still checking the chain through them.
create table if not exists clinicdb.audit_pruned_months (
    month date primary key check (month = date_trunc('month', month)),
    partition_name text not null,
    row_count bigint not null,
    pruned_at timestamptz not null default now(),
    pruned_by name not null default session_user
);
alter table clinicdb.audit_pruned_months owner to clinicdb_owner;
comment on table clinicdb.audit_pruned_months is
    'clinicdb: audit partitions dropped by retention (clinicdb.prune_audit).';
revoke all on clinicdb.audit_pruned_months from public;
grant select on clinicdb.audit_pruned_months to clinicdb_auditor;
-- ---- sql/functions/audit_capture.sql ----
-- The audit triggers: what attach_audit() installs on every tenant table.
--
-- Each audited table gets its own three capture functions, generated by
-- clinicdb.create_audit_capture() from the table's key and its column
-- settings (clinicdb.audit_settings): the table name, key, excluded and
-- masked columns are constants in their SQL. The write path thus reads no
-- settings table; the INSERT and DELETE paths evaluate no PL/pgSQL
-- expression and pass no parameters (their statement is planned once,
-- generic, with the constants folded; no plan_cache_mode setting is needed,
-- and none was seen replanning in backend profiles, the UPDATE's VALUES
-- insert included). Measured against the earlier design of one shared
-- function taking the column lists as trigger arguments (see
-- bench/bench_audit.py and docs/audit.md): the per-statement cost of
-- auditing a single-row write fell by about a third.
--
-- Design (measured):
--   * INSERT and DELETE: AFTER ... FOR EACH STATEMENT with a transition
--     table, so a multi-row statement runs one INSERT ... SELECT into the
--     trail instead of one trigger call and one planned insert per row. The
--     context (times, txid, user, request, roles, address, application) is
--     one row computed once per statement and joined to every changed row.
--   * UPDATE: AFTER ... FOR EACH ROW. Pairing OLD and NEW rows from two
--     transition tables needs a join on the key (and breaks when the key
--     itself changes); the row trigger has both at hand. The changed columns
--     are found by comparing OLD and NEW column by column (a generated list
--     of every audited column but the key). A column added after the
--     function was generated is compared on a slower path; a column dropped
--     or renamed makes the function fail (and with it the update: no change
--     goes unaudited) until attach_audit() regenerates it -- run
--     clinicdb.attach_audit(table) (or protect_table) after such a change.
--   * TRUNCATE: one system row (clinic_id NULL) naming the table, from the
--     shared clinicdb.audit_capture_truncate().
--
-- SECURITY DEFINER (owner clinicdb_owner) because nobody else may insert
-- change rows into the trail; the app and staff have no INSERT right on
-- those columns. Inside, current_user is the owner, so the acting role is
-- read from the `role` setting (what SET ROLE set), falling back to the
-- login; a change made inside another SECURITY DEFINER function is thus
-- attributed to the session's role, not that function's owner. Trigger
-- functions cannot be called directly, and CREATE TRIGGER needs EXECUTE,
-- which nobody is granted: only the owner (and superusers) attach them.

-- The key of a row as text: a JSON array of the key values when the key has
-- several columns. Kept for callers; the generated triggers inline the same
-- expression (jsonb_build_array(k1, k2, ...)::text).
create or replace function clinicdb.audit_key_text(p_image jsonb, p_keys text[])
returns text
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_agg(p_image -> u.k order by u.ord)::text from unnest(p_keys) with ordinality as u(k, ord)
$$;
comment on function clinicdb.audit_key_text(jsonb, text[]) is
    'clinicdb: the primary key of a row image as text (JSON array for composite keys).';

-- Masked columns become the marker "[masked]" when they hold a value.
create or replace function clinicdb.audit_mask(p_image jsonb, p_columns text[])
returns jsonb
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select p_image || coalesce(
        (select jsonb_object_agg(c, to_jsonb('[masked]'::text))
           from unnest(p_columns) as c
          where p_image -> c is not null and jsonb_typeof(p_image -> c) <> 'null'),
        '{}'::jsonb)
$$;
comment on function clinicdb.audit_mask(jsonb, text[]) is
    'clinicdb: a row image with the given columns replaced by "[masked]" (NULLs stay NULL).';

-- The role in force for the session: what SET ROLE chose, else the login.
create or replace function clinicdb.audit_acting_role()
returns name
language sql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(nullif(current_setting('role'), 'none'), session_user)::name
$$;
comment on function clinicdb.audit_acting_role() is
    'clinicdb: the role set by SET ROLE, or the session login; what the audit trail records as acting_role.';
grant execute on function clinicdb.audit_acting_role() to public;

-- The name of a table's generated capture function for one operation
-- ('insert', 'update', 'delete'): readable, and unique through the oid.
create or replace function clinicdb.audit_capture_name(p_table regclass, p_op text)
returns name
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select format('audit_%s_%s_%s', left(c.relname, 30), c.oid, p_op)::name from pg_class c where c.oid = p_table
$$;
comment on function clinicdb.audit_capture_name(regclass, text) is
    'clinicdb: name of the generated audit capture function of a table for insert, update or delete.';
revoke execute on function clinicdb.audit_capture_name(regclass, text) from public;
grant execute on function clinicdb.audit_capture_name(regclass, text) to clinicdb_owner;

-- Create (or replace) the three capture functions of one table. p_keys: the
-- primary-key columns in key order; p_excluded, p_masked: the column lists
-- of clinicdb.audit_settings. Called by attach_audit(), which then points
-- the table's triggers at them.
create or replace function clinicdb.create_audit_capture(
    p_table regclass, p_keys text[], p_excluded text[], p_masked text[])
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
declare
    v_table text;
    v_all text[];
    v_row_id text;
    v_image text;
    v_context text;
    v_insert_into text;
    v_same text;
    v_op text;
    v_fn text;
begin
    select n.nspname || '.' || c.relname into v_table
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;
    select array_agg(a.attname::text order by a.attnum) into v_all
      from pg_attribute a where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped;

    -- row_id: the key as text (a JSON array of the values for a composite key).
    if cardinality(p_keys) = 1 then
        -- The key's text in the row image (->>); for the common key types a
        -- plain cast gives the same text without building a jsonb value.
        v_row_id := case when (select a.atttypid from pg_attribute a where a.attrelid = p_table and a.attname = p_keys[1])
                              in ('uuid'::regtype, 'text'::regtype, 'bigint'::regtype, 'integer'::regtype, 'smallint'::regtype)
                         then format('n.%I::text', p_keys[1])
                         else format('(to_jsonb(n.%I) #>> ''{}'')', p_keys[1]) end;
    else
        v_row_id := format('jsonb_build_array(%s)::text',
                           (select string_agg(format('n.%I', k), ', ' order by o)
                              from unnest(p_keys) with ordinality as u(k, o)));
    end if;
    v_image := case when cardinality(p_excluded) > 0 then format('(to_jsonb(n) - %L::text[])', p_excluded)
                    else 'to_jsonb(n)' end;
    if cardinality(p_masked) > 0 then
        v_image := format('clinicdb.audit_mask(%s, %L::text[])', v_image, p_masked);
    end if;
    -- The context: one row per statement (clock_timestamp() once, like
    -- statement_timestamp()), so a bulk statement pays for it once.
    v_context := $ctx$(select clock_timestamp() as logged_at, statement_timestamp() as statement_at,
                   txid_current() as txid,
                   nullif(current_setting('app.user_id', true), '') as app_user,
                   nullif(current_setting('app.request_id', true), '') as request_id,
                   session_user as session_role,
                   coalesce(nullif(current_setting('role'), 'none'), session_user)::name as acting_role,
                   inet_client_addr() as client_addr,
                   nullif(current_setting('application_name', true), '') as application_name) c$ctx$;
    v_insert_into := 'insert into clinicdb.audit_log (id, logged_at, statement_at, txid, clinic_id, table_name, row_id, '
                     'action, %s, app_user, request_id, session_role, acting_role, client_addr, application_name)';

    -- INSERT and DELETE: once per statement, from the transition table.
    foreach v_op in array array['insert', 'delete'] loop
        v_fn := format('clinicdb.%I', clinicdb.audit_capture_name(p_table, v_op));
        execute format($f$
create or replace function %1$s()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    %2$s
    select nextval('clinicdb.audit_log_id_seq'), c.logged_at, c.statement_at, c.txid, n.clinic_id, %3$L, %4$s,
           %5$L, %6$s, c.app_user, c.request_id, c.session_role, c.acting_role, c.client_addr, c.application_name
      from %7$s cross join %8$s n;
    return null;
end
$body$
$f$,
            v_fn, format(v_insert_into, case v_op when 'insert' then 'new_values' else 'old_values' end),
            v_table, v_row_id, v_op, v_image, v_context,
            case v_op when 'insert' then 'new_table' else 'old_table' end);
    end loop;

    -- UPDATE: once per row. v_same lists the columns whose value did not
    -- change; removing them (and the excluded ones) from both images leaves
    -- the changed columns plus the key. Equal images then mean that no
    -- audited column changed: no audit row (documented in docs/audit.md).
    -- Compared as typed values (old.c, new.c), which costs a third of
    -- comparing jsonb members; a type without an equality operator of its own
    -- (json, domains, arrays, enums) is compared as text.
    select case when count(*) = 0 then '''{}''::text[]' else
               format('array_remove(array[%s], null)',
                      string_agg(format(case when exists (select 1 from pg_operator o
                                                           where o.oprname = '=' and o.oprleft = a.atttypid
                                                             and o.oprright = a.atttypid and o.oprresult = 'boolean'::regtype)
                                             then 'case when old.%1$I is not distinct from new.%1$I then %1$L end'
                                             else 'case when old.%1$I::text is not distinct from new.%1$I::text then %1$L end' end,
                                        a.attname), ', ' order by a.attnum)) end
      into v_same
      from pg_attribute a
     where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped
       and a.attname::text <> all (p_keys) and a.attname::text <> all (p_excluded);
    v_fn := format('clinicdb.%I', clinicdb.audit_capture_name(p_table, 'update'));
    execute format($f$
create or replace function %1$s()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_drop text[] := %2$s || %3$L::text[];
    v_old jsonb := to_jsonb(old) - v_drop;
    v_new jsonb := to_jsonb(new) - v_drop;
begin
    -- Columns added to the table after this function was generated are in
    -- both images whether they changed or not: keep only the changed ones.
    if (v_new - %9$L::text[]) <> '{}'::jsonb then
        v_drop := array(select k from jsonb_object_keys(v_new - %9$L::text[]) as k
                         where v_old -> k is not distinct from v_new -> k);
        v_old := v_old - v_drop;
        v_new := v_new - v_drop;
    end if;
    if v_old = v_new then
        return null;
    end if;
    %4$s
    values (nextval('clinicdb.audit_log_id_seq'), clock_timestamp(), statement_timestamp(), txid_current(),
            new.clinic_id, %5$L, %6$s, 'update', %7$s, %8$s,
            nullif(current_setting('app.user_id', true), ''), nullif(current_setting('app.request_id', true), ''),
            session_user, coalesce(nullif(current_setting('role'), 'none'), session_user),
            inet_client_addr(), nullif(current_setting('application_name', true), ''));
    return null;
end
$body$
$f$,
        v_fn, v_same, p_excluded, format(v_insert_into, 'old_values, new_values'), v_table,
        case when cardinality(p_keys) = 1 then format('v_new ->> %L', p_keys[1])
             else format('clinicdb.audit_key_text(v_new, %L::text[])', p_keys) end,
        case when cardinality(p_masked) > 0 then format('clinicdb.audit_mask(v_old, %L::text[])', p_masked) else 'v_old' end,
        case when cardinality(p_masked) > 0 then format('clinicdb.audit_mask(v_new, %L::text[])', p_masked) else 'v_new' end,
        v_all);

    insert into clinicdb.audit_capture_state (table_name, columns, keys) values (p_table, v_all, p_keys)
    on conflict (table_name) do update set columns = excluded.columns, keys = excluded.keys, generated_at = now();
    foreach v_op in array array['insert', 'update', 'delete'] loop
        v_fn := format('clinicdb.%I()', clinicdb.audit_capture_name(p_table, v_op));
        execute format('alter function %s owner to clinicdb_owner', v_fn);
        execute format('revoke execute on function %s from public', v_fn);
        execute format('comment on function %s is %L', v_fn,
                       format('clinicdb: audit capture of %s for %s on %s, generated by attach_audit(); do not edit.',
                              case v_op when 'update' then 'each row' else 'each statement' end, upper(v_op), v_table));
    end loop;
end
$fn$;
comment on function clinicdb.create_audit_capture(regclass, text[], text[], text[]) is
    'clinicdb: generate a table''s audit capture functions (insert, update, delete) from its key and column settings.';
revoke execute on function clinicdb.create_audit_capture(regclass, text[], text[], text[]) from public;
grant execute on function clinicdb.create_audit_capture(regclass, text[], text[], text[]) to clinicdb_owner;

-- The generated capture functions no trigger uses any more (their table was
-- dropped or detached): removed by attach_audit() and detach_audit().
create or replace function clinicdb.drop_unused_audit_capture()
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_fn regprocedure;
begin
    for v_fn in
        select p.oid::regprocedure
          from pg_proc p
         where p.pronamespace = 'clinicdb'::regnamespace
           and p.proname ~ '^audit_.*_[0-9]+_(insert|update|delete)$'
           and p.prorettype = 'trigger'::regtype
           and not exists (select 1 from pg_trigger t where t.tgfoid = p.oid)
    loop
        execute format('drop function %s', v_fn);
    end loop;
end
$$;
comment on function clinicdb.drop_unused_audit_capture() is
    'clinicdb: drop generated audit capture functions that no trigger uses.';
revoke execute on function clinicdb.drop_unused_audit_capture() from public;
grant execute on function clinicdb.drop_unused_audit_capture() to clinicdb_owner;

-- TRUNCATE removes every clinic's rows at once (only the owner and
-- superusers can): one system row records it.
create or replace function clinicdb.audit_capture_truncate()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into clinicdb.audit_log (id, logged_at, statement_at, txid, clinic_id, table_name, row_id, action,
                                    app_user, request_id, session_role, acting_role, client_addr, application_name)
    values (nextval('clinicdb.audit_log_id_seq'), clock_timestamp(), statement_timestamp(), txid_current(),
            null, tg_table_schema || '.' || tg_table_name, null, 'truncate',
            nullif(current_setting('app.user_id', true), ''), nullif(current_setting('app.request_id', true), ''),
            session_user, coalesce(nullif(current_setting('role'), 'none'), session_user),
            inet_client_addr(), nullif(current_setting('application_name', true), ''));
    return null;
end
$$;
comment on function clinicdb.audit_capture_truncate() is
    'clinicdb: statement-level audit trigger for TRUNCATE (one system row).';
revoke execute on function clinicdb.audit_capture_truncate() from public;
-- ---- sql/functions/attach_audit.sql ----
-- clinicdb.attach_audit(regclass): install the audit triggers on a tenant
-- table. clinicdb.protect_table() calls it for every table it protects once
-- this function exists, so "protected" implies "audited". Idempotent: it
-- (re)generates the table's capture functions from its primary key and the
-- column lists of clinicdb.audit_settings (clinicdb.create_audit_capture)
-- and re-creates the triggers, which is how set_audit_column() takes effect.
-- Run it again after changing a table's primary key.
--
-- clinicdb.detach_audit(regclass) removes them (migration rollback; a DBA
-- who really means it). clinicdb.set_audit_column() is the documented way to
-- exclude or mask a column. clinicdb.audit_findings() lists protected tables
-- whose triggers are missing or disabled.
--
-- SECURITY INVOKER: creating a trigger needs ownership of the table, which
-- the caller (the owner running a migration, or a DBA) has.

-- A table's primary key columns in key order (NULL without one): the key the
-- trail names rows by, read the same way wherever the audit layer needs it.
create or replace function clinicdb.audit_key_columns(p_table regclass)
returns text[]
language sql
stable
set search_path = pg_catalog, pg_temp
return (select array_agg(a.attname::text order by k.ord)
          from pg_index i
         cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
          join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
         where i.indrelid = p_table and i.indisprimary);
comment on function clinicdb.audit_key_columns(regclass) is
    'clinicdb: a table''s primary key columns in order, the key its audit rows are named by (NULL without one).';

create or replace function clinicdb.attach_audit(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_keys text[];
    v_excluded text[];
    v_masked text[];
begin
    -- Carries the standard policies for comparison and never holds a row.
    if p_table = 'clinicdb.policy_reference'::regclass then
        return;
    end if;
    if not exists (select 1 from pg_attribute
                    where attrelid = p_table and attname = 'clinic_id' and not attisdropped) then
        raise exception 'table % has no clinic_id column; the audit trail is per clinic', p_table
            using errcode = 'undefined_column', hint = 'protect it first with clinicdb.protect_table()';
    end if;
    v_keys := clinicdb.audit_key_columns(p_table);
    if v_keys is null then
        raise exception 'table % has no primary key; the audit trail names rows by it', p_table
            using errcode = 'invalid_table_definition', hint = 'add a primary key, then protect the table again';
    end if;

    -- updated_at changes on every update (clinicdb.touch_row) and says
    -- nothing the audit row's own times do not: excluded unless a DBA chose.
    if exists (select 1 from pg_attribute where attrelid = p_table and attname = 'updated_at' and not attisdropped) then
        insert into clinicdb.audit_settings (table_name, column_name, mode)
        values (p_table, 'updated_at', 'exclude')
        on conflict do nothing;
    end if;

    select coalesce(array_agg(s.column_name::text order by s.column_name) filter (where s.mode = 'exclude'), '{}'),
           coalesce(array_agg(s.column_name::text order by s.column_name) filter (where s.mode = 'mask'), '{}')
      into v_excluded, v_masked
      from clinicdb.audit_settings s
     where s.table_name = p_table;
    -- The table's own capture functions, with these lists baked in.
    perform clinicdb.create_audit_capture(p_table, v_keys, v_excluded, v_masked);

    execute format('drop trigger if exists clinicdb_audit_insert on %s', p_table);
    execute format('create trigger clinicdb_audit_insert after insert on %s referencing new table as new_table '
                   'for each statement execute function clinicdb.%I()', p_table,
                   clinicdb.audit_capture_name(p_table, 'insert'));
    execute format('drop trigger if exists clinicdb_audit_delete on %s', p_table);
    execute format('create trigger clinicdb_audit_delete after delete on %s referencing old table as old_table '
                   'for each statement execute function clinicdb.%I()', p_table,
                   clinicdb.audit_capture_name(p_table, 'delete'));
    execute format('drop trigger if exists clinicdb_audit_update on %s', p_table);
    execute format('create trigger clinicdb_audit_update after update on %s '
                   'for each row execute function clinicdb.%I()', p_table,
                   clinicdb.audit_capture_name(p_table, 'update'));
    execute format('drop trigger if exists clinicdb_audit_truncate on %s', p_table);
    execute format('create trigger clinicdb_audit_truncate after truncate on %s '
                   'for each statement execute function clinicdb.audit_capture_truncate()', p_table);
    perform clinicdb.drop_unused_audit_capture();
end
$$;
comment on function clinicdb.attach_audit(regclass) is
    'clinicdb: install (or refresh) the audit triggers on a tenant table; protect_table() calls it. Idempotent.';
revoke execute on function clinicdb.attach_audit(regclass) from public;
grant execute on function clinicdb.attach_audit(regclass) to clinicdb_owner;

create or replace function clinicdb.detach_audit(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    execute format('drop trigger if exists clinicdb_audit_insert on %s', p_table);
    execute format('drop trigger if exists clinicdb_audit_delete on %s', p_table);
    execute format('drop trigger if exists clinicdb_audit_update on %s', p_table);
    execute format('drop trigger if exists clinicdb_audit_truncate on %s', p_table);
    delete from clinicdb.audit_capture_state where table_name = p_table;
    perform clinicdb.drop_unused_audit_capture();
end
$$;
comment on function clinicdb.detach_audit(regclass) is
    'clinicdb: remove the audit triggers from a table (changes to it are no longer audited).';
revoke execute on function clinicdb.detach_audit(regclass) from public;
grant execute on function clinicdb.detach_audit(regclass) to clinicdb_owner;

-- clinicdb.set_audit_column(table, column, mode): mode 'exclude' leaves the
-- column out of the trail, 'mask' writes "[masked]" instead of its value,
-- 'include' keeps it as it is (also overriding the default exclusion of
-- updated_at). Takes effect at once for an audited table.
create or replace function clinicdb.set_audit_column(p_table regclass, p_column name, p_mode text)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_mode is null or p_mode not in ('include', 'exclude', 'mask') then
        raise exception 'unknown audit mode %', coalesce(p_mode, 'NULL')
            using errcode = 'invalid_parameter_value', hint = 'use include, exclude or mask';
    end if;
    if not exists (select 1 from pg_attribute
                    where attrelid = p_table and attname = p_column and attnum > 0 and not attisdropped) then
        raise exception 'table % has no column %', p_table, p_column
            using errcode = 'undefined_column', hint = 'check the name with \d in psql';
    end if;
    if p_mode <> 'include' and p_column::text = any (clinicdb.audit_key_columns(p_table)) then
        raise exception 'column %.% is part of the primary key, which every audit row names', p_table, p_column
            using errcode = 'invalid_parameter_value', hint = 'key columns cannot be excluded or masked';
    end if;
    if p_mode = 'include' and p_column <> 'updated_at' then
        delete from clinicdb.audit_settings where table_name = p_table and column_name = p_column;
    else
        insert into clinicdb.audit_settings (table_name, column_name, mode)
        values (p_table, p_column, case p_mode when 'include' then 'include' else p_mode end)
        on conflict (table_name, column_name) do update
            set mode = excluded.mode, set_at = now(), set_by = session_user;
    end if;
    if exists (select 1 from pg_trigger where tgrelid = p_table and tgname = 'clinicdb_audit_insert') then
        perform clinicdb.attach_audit(p_table);
    end if;
end
$$;
comment on function clinicdb.set_audit_column(regclass, name, text) is
    'clinicdb: exclude, mask or include one column of a table in the audit trail (see clinicdb.audit_settings).';
revoke execute on function clinicdb.set_audit_column(regclass, name, text) from public;
grant execute on function clinicdb.set_audit_column(regclass, name, text) to clinicdb_owner;

-- Protected tables whose audit triggers are missing or disabled (ALTER TABLE
-- ... DISABLE TRIGGER, session_replication_role cannot be seen from here).
create or replace function clinicdb.audit_findings()
returns table (table_name text, finding text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select pt.table_name::text, format('audit trigger %s is %s', t.name,
                                       case when tg.oid is null then 'missing' else 'disabled' end)
      from clinicdb.protected_tables pt
     cross join (values ('clinicdb_audit_insert'), ('clinicdb_audit_update'),
                        ('clinicdb_audit_delete'), ('clinicdb_audit_truncate')) as t(name)
      left join pg_trigger tg on tg.tgrelid = pt.table_name and tg.tgname = t.name
     where pt.table_name <> 'clinicdb.policy_reference'::regclass
       and exists (select 1 from pg_class c where c.oid = pt.table_name)  -- a dropped table has nothing to audit
       and (tg.oid is null or tg.tgenabled = 'D')
    union all
    -- Capture functions generated for columns or a key the table no longer has.
    select s.table_name::text,
           format('audit capture functions are out of date (%s): updates fail until select clinicdb.attach_audit(%L)',
                  concat_ws('; ',
                            case when cardinality(gone.names) > 0
                                 then 'column ' || array_to_string(gone.names, ', ') || ' dropped or renamed' end,
                            case when s.keys is distinct from clinicdb.audit_key_columns(s.table_name)
                                 then 'primary key changed' end),
                  s.table_name::text)
      from clinicdb.audit_capture_state s
     cross join lateral (select coalesce(array_agg(c order by o), '{}') as names
                           from unnest(s.columns) with ordinality as u(c, o)
                          where not exists (select 1 from pg_attribute a
                                             where a.attrelid = s.table_name and a.attname = u.c
                                               and a.attnum > 0 and not a.attisdropped)) gone
     where exists (select 1 from pg_class c where c.oid = s.table_name)  -- a dropped table has nothing to audit
       and (cardinality(gone.names) > 0 or s.keys is distinct from clinicdb.audit_key_columns(s.table_name))
     order by 1, 2
$$;
comment on function clinicdb.audit_findings() is
    'clinicdb: protected tables whose audit triggers are missing or disabled, or whose capture functions are out of date; no rows means every one is audited.';
revoke execute on function clinicdb.audit_findings() from public;
grant execute on function clinicdb.audit_findings() to clinicdb_owner, clinicdb_auditor;
-- ---- sql/functions/audit_partitions.sql ----
-- Partitions of clinicdb.audit_log: one per calendar month (UTC), named
-- clinicdb.audit_log_yYYYYmMM, plus clinicdb.audit_log_default.
--
--   * clinicdb.audit_partitions(): what exists (for `clinicdb audit partitions`).
--   * clinicdb.ensure_audit_partitions(months_ahead): creates this month's
--     and the next months' partitions, and a partition for every month that
--     has rows in the default partition, moving those rows into it (same
--     rows, same ids: the seal chain is unaffected). Schedule it daily.
--   * clinicdb.prune_audit(retention, dry_run): detaches and drops whole
--     monthly partitions that end before now() - retention, records each
--     in clinicdb.audit_pruned_months and leaves a 'prune' row in the trail.
--     Never deletes single rows, never touches a month inside retention or
--     the default partition. dry_run (the default) only says what it would do.
--
-- SECURITY INVOKER, granted to clinicdb_owner: the owner or a superuser runs
-- them (by hand, from the CLI or from a scheduler). Partitions they create
-- are handed to clinicdb_owner whoever runs them.

create or replace function clinicdb.audit_partitions()
returns table (partition_name text, range_from timestamptz, range_to timestamptz, is_default boolean,
               estimated_rows bigint, total_bytes bigint)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select c.oid::regclass::text,
           m.month_start,
           m.month_start + interval '1 month',
           c.relname = 'audit_log_default',
           greatest(c.reltuples, 0)::bigint,
           pg_total_relation_size(c.oid)
      from pg_inherits i
      join pg_class c on c.oid = i.inhrelid
      cross join lateral (
          select case when c.relname ~ '^audit_log_y[0-9]{4}m[0-9]{2}$'
                      then make_timestamptz(substr(c.relname, 12, 4)::int, substr(c.relname, 17, 2)::int, 1, 0, 0, 0, 'UTC')
                 end as month_start
      ) m
     where i.inhparent = 'clinicdb.audit_log'::regclass
     order by m.month_start nulls last
$$;
comment on function clinicdb.audit_partitions() is
    'clinicdb: the audit trail''s partitions with their month range (NULL for the default partition).';
revoke execute on function clinicdb.audit_partitions() from public;
grant execute on function clinicdb.audit_partitions() to clinicdb_owner, clinicdb_auditor;

-- The month (UTC) an audit row belongs to, as a number: year * 12 + month - 1.
create or replace function clinicdb.audit_month(p_at timestamptz)
returns integer
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select (extract(year from p_at at time zone 'UTC') * 12 + extract(month from p_at at time zone 'UTC') - 1)::integer
$$;
comment on function clinicdb.audit_month(timestamptz) is
    'clinicdb: the UTC calendar month of a time as year * 12 + month - 1 (the unit of audit partitions).';
grant execute on function clinicdb.audit_month(timestamptz) to public;

create or replace function clinicdb.ensure_audit_partitions(p_months_ahead integer default 3)
returns table (partition_name text, range_from timestamptz, range_to timestamptz, moved_rows bigint)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_month timestamptz;
    v_name text;
    v_moved bigint;
    v_this_month timestamptz := date_trunc('month', now() at time zone 'UTC') at time zone 'UTC';
begin
    if p_months_ahead is null or p_months_ahead < 0 or p_months_ahead > 120 then
        raise exception 'months_ahead must be between 0 and 120, not %', coalesce(p_months_ahead::text, 'NULL')
            using errcode = 'invalid_parameter_value';
    end if;
    -- Rows cannot be routed to the default partition while it is emptied of
    -- a month and that month's partition attached; other months are unaffected.
    lock table clinicdb.audit_log_default in share row exclusive mode;

    for v_month in
        select m from generate_series(v_this_month, v_this_month + make_interval(months => p_months_ahead),
                                      interval '1 month') m
        union
        select distinct date_trunc('month', d.logged_at at time zone 'UTC') at time zone 'UTC'
          from clinicdb.audit_log_default d
        order by 1
    loop
        v_name := format('audit_log_y%sm%s', to_char(v_month at time zone 'UTC', 'YYYY'),
                         to_char(v_month at time zone 'UTC', 'MM'));
        continue when to_regclass('clinicdb.' || v_name) is not null;

        execute format('create table clinicdb.%I (like clinicdb.audit_log including defaults including constraints)',
                       v_name);
        -- A move, not a removal: the guard lets this transaction take the
        -- month's rows out of the default partition to put them back here.
        perform set_config('clinicdb.audit_maintenance', 'on', true);
        execute format('with moved as (delete from clinicdb.audit_log_default where logged_at >= $1 and logged_at < $2 '
                       'returning *) insert into clinicdb.%I select * from moved', v_name)
          using v_month, v_month + interval '1 month';
        get diagnostics v_moved = row_count;
        perform set_config('clinicdb.audit_maintenance', '', true);
        execute format('alter table clinicdb.audit_log attach partition clinicdb.%I for values from (%L) to (%L)',
                       v_name, v_month, v_month + interval '1 month');
        execute format('alter table clinicdb.%I owner to clinicdb_owner', v_name);
        execute format('revoke all on clinicdb.%I from public', v_name);
        execute format('create trigger audit_log_guard_truncate before truncate on clinicdb.%I '
                       'for each statement execute function clinicdb.audit_log_guard()', v_name);
        execute format('comment on table clinicdb.%I is %L', v_name,
                       format('clinicdb: audit rows of %s (UTC).', to_char(v_month at time zone 'UTC', 'YYYY-MM')));

        partition_name := 'clinicdb.' || v_name;
        range_from := v_month;
        range_to := v_month + interval '1 month';
        moved_rows := v_moved;
        return next;
    end loop;
end
$$;
comment on function clinicdb.ensure_audit_partitions(integer) is
    'clinicdb: create monthly audit partitions up to months_ahead, moving matching rows out of the default partition.';
revoke execute on function clinicdb.ensure_audit_partitions(integer) from public;
grant execute on function clinicdb.ensure_audit_partitions(integer) to clinicdb_owner;

create or replace function clinicdb.prune_audit(p_retention interval default interval '2555 days',
                                                p_dry_run boolean default true)
returns table (partition_name text, range_from timestamptz, range_to timestamptz, row_count bigint, action text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_part record;
    v_cutoff timestamptz;
    v_rows bigint;
begin
    if p_retention is null or p_retention < interval '1 day' then
        raise exception 'retention must be at least 1 day, not %', coalesce(p_retention::text, 'NULL')
            using errcode = 'invalid_parameter_value', hint = 'the default is 2555 days (7 years)';
    end if;
    v_cutoff := now() - p_retention;
    for v_part in
        select p.* from clinicdb.audit_partitions() p
         where not p.is_default and p.range_to is not null and p.range_to <= v_cutoff
         order by p.range_from
    loop
        execute format('select count(*) from %s', v_part.partition_name) into v_rows;
        partition_name := v_part.partition_name;
        range_from := v_part.range_from;
        range_to := v_part.range_to;
        row_count := v_rows;
        if p_dry_run then
            action := 'would drop';
            return next;
            continue;
        end if;
        execute format('alter table clinicdb.audit_log detach partition %s', v_part.partition_name);
        execute format('drop table %s', v_part.partition_name);
        insert into clinicdb.audit_pruned_months (month, partition_name, row_count)
        values ((v_part.range_from at time zone 'UTC')::date, v_part.partition_name, v_rows)
        on conflict (month) do update set row_count = clinicdb.audit_pruned_months.row_count + excluded.row_count,
                                          pruned_at = now(), pruned_by = session_user;
        -- Blocks whose every row is now pruned keep only rows_digest, which
        -- still anchors the chain; their per-row arrays are no longer needed.
        update clinicdb.audit_seals s
           set row_ids = null, row_months = null, row_digests = null
         where s.row_months is not null
           and not exists (select 1 from unnest(s.row_months) m
                            where m not in (select clinicdb.audit_month(pm.month::timestamp at time zone 'UTC')
                                              from clinicdb.audit_pruned_months pm));
        insert into clinicdb.audit_log (clinic_id, table_name, action, new_values)
        values (null, v_part.partition_name, 'prune',
                jsonb_build_object('rows', v_rows, 'from', v_part.range_from, 'to', v_part.range_to,
                                   'retention', p_retention::text));
        action := 'dropped';
        return next;
    end loop;
end
$$;
comment on function clinicdb.prune_audit(interval, boolean) is
    'clinicdb: drop whole audit partitions older than the retention (default 2555 days); dry_run (default) only lists them.';
revoke execute on function clinicdb.prune_audit(interval, boolean) from public;
grant execute on function clinicdb.prune_audit(interval, boolean) to clinicdb_owner;
-- ---- sql/functions/audit_seal.sql ----
-- Tamper evidence for the audit trail: a hash chain over blocks of rows.
--
-- clinicdb.seal_audit(block_rows) is the sealing job (schedule it every few
-- minutes); clinicdb.verify_audit(from, to) recomputes the chain and the
-- rows and names the first altered, deleted or inserted row.
--
-- How blocks are cut without a lock in the write path:
--   Writers never touch the seal tables and take no lock for sealing. A row
--   is only sealed once no transaction can still add a row before it: the
--   sealer reads the oldest running transaction id (the xmin of its
--   snapshot); every row with txid below it is final (committed, or never
--   visible), while every running transaction has txid >= it (txid is the
--   top-level id). The round seals rows with key (txid, id) from the last
--   block's hi up to (xmin, 0), in (txid, id) order, in blocks of block_rows.
--   Consecutive key ranges touch (clinicdb.audit_seals), so any row later
--   added under the sealed horizon lands inside some block and is caught.
--   Sealers serialize among themselves with an advisory lock only.
--
-- What a block commits to: for each row, its id, its month and a SHA-256
-- digest of all its columns (clinicdb.audit_row_digest, a canonical JSON
-- text that depends on no session setting); the block hash covers the
-- previous block's hash, so altering any sealed row, block or link breaks
-- every hash after it.
--
-- Retention: a pruned month's rows are expected to be missing; the blocks
-- keep their digests (or, once entirely pruned, just rows_digest), so the
-- chain through them and every row still present stay verifiable.
--
-- What this cannot catch from inside the database: someone who can write
-- the seal table (owner, superuser) rewriting the chain from some block on.
-- Copy the head hash that `clinicdb audit seal` prints to somewhere they
-- cannot write, and check it with `clinicdb audit verify --expect BLOCK:HASH`.
-- Rows not sealed yet (newer than the last round) are not covered.

-- The canonical digest of one audit row. Change it only together with a
-- migration that re-seals: every stored block depends on it.
create or replace function clinicdb.audit_row_digest(p_row clinicdb.audit_log)
returns bytea
language sql
stable
parallel safe
as $$
    select pg_catalog.sha256(pg_catalog.textsend(pg_catalog.jsonb_build_array(
        p_row.id, p_row.txid, extract(epoch from p_row.logged_at), extract(epoch from p_row.statement_at),
        p_row.clinic_id, p_row.table_name, p_row.row_id, p_row.action, p_row.old_values, p_row.new_values,
        p_row.purpose, p_row.app_user, p_row.request_id, p_row.session_role, p_row.acting_role,
        p_row.client_addr, p_row.application_name)::text))
$$;
comment on function clinicdb.audit_row_digest(clinicdb.audit_log) is
    'clinicdb: SHA-256 of an audit row''s columns in a canonical, setting-independent text form (what seals commit to).';
revoke execute on function clinicdb.audit_row_digest(clinicdb.audit_log) from public;
grant execute on function clinicdb.audit_row_digest(clinicdb.audit_log) to clinicdb_owner, clinicdb_auditor;

create or replace function clinicdb.audit_block_hash(
    p_prev bytea, p_block_no bigint, p_lo_txid bigint, p_lo_id bigint, p_hi_txid bigint, p_hi_id bigint,
    p_row_count integer, p_rows_digest bytea)
returns bytea
language sql
immutable
parallel safe
as $$
    select pg_catalog.sha256(p_prev || pg_catalog.int8send(p_block_no) || pg_catalog.int8send(p_lo_txid)
                             || pg_catalog.int8send(p_lo_id) || pg_catalog.int8send(p_hi_txid)
                             || pg_catalog.int8send(p_hi_id) || pg_catalog.int4send(p_row_count) || p_rows_digest)
$$;
comment on function clinicdb.audit_block_hash(bytea, bigint, bigint, bigint, bigint, bigint, integer, bytea) is
    'clinicdb: the hash of one seal block, chaining it to the previous one.';
grant execute on function clinicdb.audit_block_hash(bytea, bigint, bigint, bigint, bigint, bigint, integer, bytea)
    to clinicdb_owner, clinicdb_auditor;

create or replace function clinicdb.seal_audit(p_block_rows integer default 10000)
returns table (block_no bigint, row_count integer, block_hash text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
as $$
declare
    v_last record;
    v_horizon bigint;
    v_lo_txid bigint := 0;
    v_lo_id bigint := 0;
    v_prev bytea := decode(repeat('00', 32), 'hex');
    v_no bigint := 0;
    v_chunk record;
    v_hash bytea;
begin
    if p_block_rows is null or p_block_rows < 1 or p_block_rows > 1000000 then
        raise exception 'block_rows must be between 1 and 1000000, not %', coalesce(p_block_rows::text, 'NULL')
            using errcode = 'invalid_parameter_value';
    end if;
    -- One sealer at a time; writers never take this lock.
    perform pg_advisory_xact_lock(hashtext('clinicdb.seal_audit'));
    v_horizon := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;

    select s.block_no, s.hi_txid, s.hi_id, s.block_hash into v_last
      from clinicdb.audit_seals s order by s.block_no desc limit 1;
    if found then
        v_no := v_last.block_no;
        v_lo_txid := v_last.hi_txid;
        v_lo_id := v_last.hi_id;
        v_prev := v_last.block_hash;
    end if;
    if v_lo_txid >= v_horizon then
        return;
    end if;

    for v_chunk in
        with rows as (
            select a.id, a.txid, clinicdb.audit_month(a.logged_at) as month, clinicdb.audit_row_digest(a) as digest,
                   (row_number() over (order by a.txid, a.id) - 1) / p_block_rows as chunk
              from clinicdb.audit_log a
             where a.txid >= v_lo_txid and a.txid < v_horizon and (a.txid, a.id) >= (v_lo_txid, v_lo_id)
        ), chunks as (
            -- rows arrive sorted by (txid, id) from the window's sort; each
            -- chunk is aggregated in that order (one sort, not one per array).
            select r.chunk, count(*)::integer as n, min(r.txid) as first_txid,
                   array_agg(r.id) as ids,
                   array_agg(r.month) as months,
                   array_agg(r.digest) as digests,
                   sha256(string_agg(int8send(r.id) || int4send(r.month) || r.digest, ''::bytea)) as rows_digest
              from (select * from rows order by rows.chunk, rows.txid, rows.id) r
             group by r.chunk
        )
        select c.*, lead(c.first_txid) over (order by c.chunk) as next_txid,
               lead(c.ids[1]) over (order by c.chunk) as next_id
          from chunks c
         order by c.chunk
    loop
        v_no := v_no + 1;
        v_hash := clinicdb.audit_block_hash(v_prev, v_no, v_lo_txid, v_lo_id,
                                            coalesce(v_chunk.next_txid, v_horizon), coalesce(v_chunk.next_id, 0),
                                            v_chunk.n, v_chunk.rows_digest);
        insert into clinicdb.audit_seals (block_no, lo_txid, lo_id, hi_txid, hi_id, row_count, row_ids, row_months,
                                          row_digests, rows_digest, prev_hash, block_hash)
        values (v_no, v_lo_txid, v_lo_id, coalesce(v_chunk.next_txid, v_horizon), coalesce(v_chunk.next_id, 0),
                v_chunk.n, v_chunk.ids, v_chunk.months, v_chunk.digests, v_chunk.rows_digest, v_prev, v_hash);
        v_lo_txid := coalesce(v_chunk.next_txid, v_horizon);
        v_lo_id := coalesce(v_chunk.next_id, 0);
        v_prev := v_hash;
        block_no := v_no;
        row_count := v_chunk.n;
        block_hash := encode(v_hash, 'hex');
        return next;
    end loop;
end
$$;
comment on function clinicdb.seal_audit(integer) is
    'clinicdb: seal every final, unsealed audit row into hash-chained blocks; returns the new blocks. Schedule it.';
revoke execute on function clinicdb.seal_audit(integer) from public;
grant execute on function clinicdb.seal_audit(integer) to clinicdb_owner;

-- The chain's head and how much is sealed, for `clinicdb audit seal` and monitoring.
create or replace function clinicdb.audit_seal_status(
    out blocks bigint, out sealed_rows bigint, out head_block bigint, out head_hash text,
    out sealed_until_txid bigint, out unsealed_rows bigint, out last_sealed_at timestamptz)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_head record;
begin
    select count(*), coalesce(sum(s.row_count), 0) into blocks, sealed_rows from clinicdb.audit_seals s;
    select s.block_no, s.block_hash, s.hi_txid, s.hi_id, s.sealed_at into v_head
      from clinicdb.audit_seals s order by s.block_no desc limit 1;
    head_block := v_head.block_no;
    head_hash := encode(v_head.block_hash, 'hex');
    sealed_until_txid := v_head.hi_txid;
    last_sealed_at := v_head.sealed_at;
    select count(*) into unsealed_rows from clinicdb.audit_log a
     where a.txid >= coalesce(v_head.hi_txid, 0) and (a.txid, a.id) >= (coalesce(v_head.hi_txid, 0), coalesce(v_head.hi_id, 0));
end
$$;
comment on function clinicdb.audit_seal_status() is
    'clinicdb: number of seal blocks and sealed rows, the head block and hash, and rows not sealed yet.';
revoke execute on function clinicdb.audit_seal_status() from public;
grant execute on function clinicdb.audit_seal_status() to clinicdb_owner, clinicdb_auditor;

-- Verify blocks p_from..p_to (all by default): the chain links and hashes,
-- then every row in their key ranges against the digests they committed to.
-- Returns nothing when all is well; otherwise the first problem found.
create or replace function clinicdb.verify_audit(p_from bigint default 1, p_to bigint default null)
returns table (block_no bigint, problem text, audit_id bigint, detail text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
as $$
declare
    v_prev bytea;
    v_expect bigint := p_from;
    v_block record;
    v_first record;
    v_last record;
    v_exp_ids bigint[];
    v_exp_digests bytea[];
    v_exp_blocks bigint[];
    v_act_ids bigint[];
    v_act_digests bytea[];
    v_act_txids bigint[];
    v_i integer;
    v_n integer;
    v_id bigint;
    v_kind text;
    v_row record;
begin
    p_to := coalesce(p_to, (select max(s.block_no) from clinicdb.audit_seals s));
    if p_to is null or p_from > p_to then
        return;
    end if;
    if p_from = 1 then
        v_prev := decode(repeat('00', 32), 'hex');
    else
        select s.block_hash into v_prev from clinicdb.audit_seals s where s.block_no = p_from - 1;
        if not found then
            return query select p_from - 1, 'block missing'::text, null::bigint, 'the seal chain has a gap'::text;
            return;
        end if;
    end if;

    -- 1. The chain: contiguous numbers, links, digests and hashes.
    for v_block in select s.* from clinicdb.audit_seals s where s.block_no between p_from and p_to order by s.block_no loop
        if v_block.block_no <> v_expect then
            return query select v_expect, 'block missing'::text, null::bigint, 'the seal chain has a gap'::text;
            return;
        end if;
        if v_block.prev_hash <> v_prev then
            return query select v_block.block_no, 'chain broken'::text, null::bigint,
                'prev_hash does not match the previous block''s hash (a block was altered or replaced)'::text;
            return;
        end if;
        if v_block.row_ids is not null and v_block.rows_digest <> (
            select sha256(string_agg(int8send(u.id) || int4send(u.month) || u.digest, ''::bytea order by u.ord))
              from unnest(v_block.row_ids, v_block.row_months, v_block.row_digests) with ordinality as u(id, month, digest, ord)) then
            return query select v_block.block_no, 'block altered'::text, null::bigint,
                'the stored row digests do not match rows_digest'::text;
            return;
        end if;
        if v_block.block_hash <> clinicdb.audit_block_hash(v_prev, v_block.block_no, v_block.lo_txid, v_block.lo_id,
                                                          v_block.hi_txid, v_block.hi_id, v_block.row_count,
                                                          v_block.rows_digest) then
            return query select v_block.block_no, 'block altered'::text, null::bigint,
                'block_hash does not match its contents'::text;
            return;
        end if;
        v_prev := v_block.block_hash;
        v_expect := v_expect + 1;
    end loop;
    if v_expect <= p_to then
        return query select v_expect, 'block missing'::text, null::bigint, 'the seal chain has a gap'::text;
        return;
    end if;

    -- 2. The rows: what the blocks committed to (minus pruned months) against
    -- every row now in their key ranges, in (txid, id) order.
    select s.* into v_first from clinicdb.audit_seals s where s.block_no = p_from;
    select s.* into v_last from clinicdb.audit_seals s where s.block_no = p_to;
    -- Each side is sorted once in a subquery and aggregated in that order
    -- (an ORDER BY per aggregate would sort once per array).
    select coalesce(array_agg(e.id), '{}'), coalesce(array_agg(e.digest), '{}'), coalesce(array_agg(e.block_no), '{}')
      into v_exp_ids, v_exp_digests, v_exp_blocks
      from (select u.id, u.digest, s.block_no
              from clinicdb.audit_seals s
             cross join lateral unnest(s.row_ids, s.row_months, s.row_digests) with ordinality as u(id, month, digest, ord)
             where s.block_no between p_from and p_to
               and u.month not in (select clinicdb.audit_month(pm.month::timestamp at time zone 'UTC')
                                     from clinicdb.audit_pruned_months pm)
             order by s.block_no, u.ord) e;
    select coalesce(array_agg(r.id), '{}'), coalesce(array_agg(r.digest), '{}'), coalesce(array_agg(r.txid), '{}')
      into v_act_ids, v_act_digests, v_act_txids
      from (select a.id, a.txid, clinicdb.audit_row_digest(a) as digest
              from clinicdb.audit_log a
             where a.txid >= v_first.lo_txid and a.txid <= v_last.hi_txid
               and (a.txid, a.id) >= (v_first.lo_txid, v_first.lo_id)
               and (a.txid, a.id) < (v_last.hi_txid, v_last.hi_id)
             order by a.txid, a.id) r;
    if v_exp_ids = v_act_ids and v_exp_digests = v_act_digests then
        return;
    end if;

    -- Something differs: find the first position and say what it is.
    v_n := greatest(cardinality(v_exp_ids), cardinality(v_act_ids));
    v_i := 1;
    while v_i <= v_n
          and v_exp_ids[v_i] is not distinct from v_act_ids[v_i]
          and v_exp_digests[v_i] is not distinct from v_act_digests[v_i] loop
        v_i := v_i + 1;
    end loop;
    if v_exp_ids[v_i] is not null and v_exp_ids[v_i] = v_act_ids[v_i] and v_act_ids[v_i + 1] = v_act_ids[v_i] then
        -- Two rows with one id, the first not the sealed one: a forged copy.
        v_kind := 'row inserted';
        v_id := v_act_ids[v_i];
    elsif v_exp_ids[v_i] is not null and v_exp_ids[v_i] = v_act_ids[v_i] then
        v_kind := 'row altered';
        v_id := v_act_ids[v_i];
    elsif v_exp_ids[v_i] is null
          or (v_act_ids[v_i] is not null and v_exp_ids[v_i] = any (v_act_ids[v_i + 1:])) then
        v_kind := 'row inserted';
        v_id := v_act_ids[v_i];
    else
        v_kind := 'row deleted';
        v_id := v_exp_ids[v_i];
    end if;
    if v_kind = 'row inserted' then
        select s.block_no into v_block from clinicdb.audit_seals s
         where (v_act_txids[v_i], v_id) >= (s.lo_txid, s.lo_id) and (v_act_txids[v_i], v_id) < (s.hi_txid, s.hi_id);
        block_no := v_block.block_no;
    else
        block_no := v_exp_blocks[v_i];
    end if;
    problem := v_kind;
    audit_id := v_id;
    select a.table_name, a.row_id, a.action, a.logged_at into v_row
      from clinicdb.audit_log a
     where a.id = v_id and a.txid >= v_first.lo_txid and a.txid <= v_last.hi_txid
     limit 1;
    if found then
        detail := format('audit row %s (%s %s %s at %s)', v_id, v_row.action, v_row.table_name,
                         coalesce(v_row.row_id, '-'), v_row.logged_at);
    else
        detail := format('audit row %s is missing', v_id);
    end if;
    return next;
end
$$;
comment on function clinicdb.verify_audit(bigint, bigint) is
    'clinicdb: recompute the seal chain and rows of blocks from..to; no rows means intact, else the first problem.';
revoke execute on function clinicdb.verify_audit(bigint, bigint) from public;
grant execute on function clinicdb.verify_audit(bigint, bigint) to clinicdb_owner, clinicdb_auditor;
-- ---- sql/functions/log_access.sql ----
-- clinicdb.log_access(table, ids, purpose): record that PHI was read.
-- Triggers cannot see SELECTs, so the application (through the driver) and
-- staff in psql call this after showing rows: one 'access' row per id, in
-- the same trail and with the same context as changes (clinic, app.user_id,
-- app.request_id, roles, txid, times, client address, application_name).
--
--   select clinicdb.log_access('patients', array['<patient uuid>']::uuid[], 'chart review');
--
-- SECURITY INVOKER on purpose: the row is inserted with the caller's rights
-- through the insert policy of clinicdb.audit_log, which admits only
-- 'access' rows of the clinic in force, and every context column is filled
-- by its default (the caller is not granted those columns). So a caller can
-- only ever say "I read these rows of my clinic", never write a change row
-- or speak for another clinic or user. ids may be of any type (uuid[],
-- text[], bigint[]); untyped literals need a cast.
create or replace function clinicdb.log_access(p_table regclass, p_ids anyarray, p_purpose text)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_table text;
    v_count integer;
begin
    if p_purpose is null or length(btrim(p_purpose)) = 0 then
        raise exception 'log_access needs a purpose'
            using errcode = 'invalid_parameter_value',
                  hint = 'say why the rows were read, e.g. ''treatment'', ''billing'', ''chart review''';
    end if;
    perform clinicdb.require_clinic_id();
    if not has_table_privilege(p_table, 'SELECT') then
        raise exception 'you cannot read %, so there is no access of it to log', p_table
            using errcode = 'insufficient_privilege', hint = 'log reads of tables the role may read';
    end if;
    select n.nspname || '.' || c.relname into v_table
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;
    insert into clinicdb.audit_log (table_name, row_id, action, purpose)
    select v_table, x::text, 'access', left(btrim(p_purpose), 500)
      from unnest(p_ids) as x
     where x is not null;
    get diagnostics v_count = row_count;
    return v_count;
end
$$;
comment on function clinicdb.log_access(regclass, anyarray, text) is
    'clinicdb: record a read of PHI (one audit row per id, action access) for the clinic in force; returns rows logged.';
revoke execute on function clinicdb.log_access(regclass, anyarray, text) from public;
grant execute on function clinicdb.log_access(regclass, anyarray, text) to clinicdb_app, clinicdb_staff;
-- ---- sql/schema/audit_attach_existing.sql ----
-- Audit every table protect_table() protected before the audit layer was
-- installed (protect_table calls attach_audit itself from now on).
-- clinicdb.policy_reference never holds rows and is left out.
select clinicdb.attach_audit(pt.table_name)
  from clinicdb.protected_tables pt
 where pt.table_name <> 'clinicdb.policy_reference'::regclass
 order by pt.table_name::text;

-- This month's and the next three months' partitions.
select count(*) from clinicdb.ensure_audit_partitions(3);
reset role;
