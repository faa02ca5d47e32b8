-- The audit triggers: what attach_audit() installs on every tenant table.
--
-- Design (measured, see bench/bench_audit.py and docs/audit.md):
--   * INSERT and DELETE: AFTER ... FOR EACH STATEMENT with a transition
--     table, so a multi-row statement runs one INSERT ... SELECT into the
--     trail instead of one trigger call and one planned insert per row; the
--     context (time, txid, user, role, address) is read once per statement.
--   * UPDATE: AFTER ... FOR EACH ROW. Pairing OLD and NEW rows from two
--     transition tables needs a join on the key (and breaks when the key
--     itself changes); the row trigger has both at hand, and only changed
--     columns are written anyway.
--   * TRUNCATE: one system row (clinic_id NULL) naming the table.
--   * Column lists (excluded, masked, key) arrive as trigger arguments, set
--     by attach_audit() from clinicdb.audit_settings: the write path reads
--     no settings table.
--
-- plan_cache_mode = force_generic_plan: the INSERT ... SELECT takes the
-- context as parameters, and with the default the plan cache kept planning
-- it afresh (a custom plan) on every statement; measured, that was half the
-- cost of auditing a single-row insert.
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
-- several columns (the single-column case is inlined by the triggers).
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

-- INSERT and DELETE, once per statement, from the transition table.
create or replace function clinicdb.audit_capture_rows()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_excluded text[] := tg_argv[0]::text[];
    v_masked text[] := tg_argv[1]::text[];
    v_keys text[] := tg_argv[2]::text[];
    v_key text := case when cardinality(tg_argv[2]::text[]) = 1 then (tg_argv[2]::text[])[1] end;
    v_has_masks boolean := cardinality(tg_argv[1]::text[]) > 0;
    v_table text := tg_table_schema || '.' || tg_table_name;
    v_logged_at timestamptz := clock_timestamp();
    v_statement_at timestamptz := statement_timestamp();
    v_txid bigint := txid_current();
    v_user text := nullif(current_setting('app.user_id', true), '');
    v_request text := nullif(current_setting('app.request_id', true), '');
    v_acting name := coalesce(nullif(current_setting('role'), 'none'), session_user);
    v_addr inet := inet_client_addr();
    v_app text := nullif(current_setting('application_name', true), '');
begin
    if tg_op = 'INSERT' then
        insert into clinicdb.audit_log (id, logged_at, statement_at, txid, clinic_id, table_name, row_id, action,
                                        new_values, app_user, request_id, session_role, acting_role,
                                        client_addr, application_name)
        select nextval('clinicdb.audit_log_id_seq'), v_logged_at, v_statement_at, v_txid, r.clinic_id, v_table,
               case when v_key is not null then r.image ->> v_key else clinicdb.audit_key_text(r.image, v_keys) end,
               'insert',
               case when v_has_masks then clinicdb.audit_mask(r.image - v_excluded, v_masked)
                    else r.image - v_excluded end,
               v_user, v_request, session_user, v_acting, v_addr, v_app
          from (select n.clinic_id, to_jsonb(n) as image from new_table n) r;
    elsif tg_op = 'DELETE' then
        insert into clinicdb.audit_log (id, logged_at, statement_at, txid, clinic_id, table_name, row_id, action,
                                        old_values, app_user, request_id, session_role, acting_role,
                                        client_addr, application_name)
        select nextval('clinicdb.audit_log_id_seq'), v_logged_at, v_statement_at, v_txid, r.clinic_id, v_table,
               case when v_key is not null then r.image ->> v_key else clinicdb.audit_key_text(r.image, v_keys) end,
               'delete',
               case when v_has_masks then clinicdb.audit_mask(r.image - v_excluded, v_masked)
                    else r.image - v_excluded end,
               v_user, v_request, session_user, v_acting, v_addr, v_app
          from (select o.clinic_id, to_jsonb(o) as image from old_table o) r;
    end if;
    return null;
end
$$;
comment on function clinicdb.audit_capture_rows() is
    'clinicdb: statement-level audit trigger for INSERT and DELETE (transition tables). Args: excluded, masked, key columns.';
revoke execute on function clinicdb.audit_capture_rows() from public;

-- UPDATE, once per row: the changed columns (plus the key) before and after.
-- An update that changes no audited column (nothing, or only excluded
-- columns such as updated_at) writes no audit row: the data did not change.
create or replace function clinicdb.audit_capture_update()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    v_excluded text[] := tg_argv[0]::text[];
    v_masked text[] := tg_argv[1]::text[];
    v_keys text[] := tg_argv[2]::text[];
    v_old jsonb := to_jsonb(old) - tg_argv[0]::text[];
    v_new jsonb := to_jsonb(new) - tg_argv[0]::text[];
begin
    if v_old = v_new then
        return null;
    end if;
    -- One statement: the diff and the insert (a second query per row costs
    -- as much as the insert itself).
    insert into clinicdb.audit_log (id, logged_at, statement_at, txid, clinic_id, table_name, row_id, action,
                                    old_values, new_values, app_user, request_id, session_role, acting_role,
                                    client_addr, application_name)
    select nextval('clinicdb.audit_log_id_seq'), clock_timestamp(), statement_timestamp(), txid_current(),
           new.clinic_id, tg_table_schema || '.' || tg_table_name,
           case when cardinality(v_keys) = 1 then v_new ->> v_keys[1] else clinicdb.audit_key_text(v_new, v_keys) end,
           'update',
           case when cardinality(v_masked) > 0 then clinicdb.audit_mask(d.old_part, v_masked) else d.old_part end,
           case when cardinality(v_masked) > 0 then clinicdb.audit_mask(d.new_part, v_masked) else d.new_part end,
           nullif(current_setting('app.user_id', true), ''), nullif(current_setting('app.request_id', true), ''),
           session_user, coalesce(nullif(current_setting('role'), 'none'), session_user),
           inet_client_addr(), nullif(current_setting('application_name', true), '')
      from (select jsonb_object_agg(n.key, v_old -> n.key) as old_part, jsonb_object_agg(n.key, n.value) as new_part
              from jsonb_each(v_new) n
             where v_old -> n.key is distinct from n.value or n.key = any (v_keys)) d;
    return null;
end
$$;
comment on function clinicdb.audit_capture_update() is
    'clinicdb: row-level audit trigger for UPDATE (changed columns plus key). Args: excluded, masked, key columns.';
revoke execute on function clinicdb.audit_capture_update() from public;

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
