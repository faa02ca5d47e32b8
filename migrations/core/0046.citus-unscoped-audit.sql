-- 0046.citus-unscoped-audit: clinicdb.citus_unscoped_audit(): on a Citus coordinator, audit rows with no clinic (truncate, prune)
-- go to the reference table clinicdb.audit_log_unscoped and are sealed and verified in the no-clinic
-- chain; audit prune works there; nothing changes on a single node
-- depends: 0045.citus-function-sync
--
-- Frozen: the SQL below is what this migration runs, copied from
-- sql/functions/citus_unscoped_audit.sql when it was written. migrations/migrations.lock pins it:
-- change sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/citus_unscoped_audit.sql ----
-- clinicdb.citus_unscoped_audit(): on a Citus coordinator, a home for the
-- audit rows that have no clinic (issue #16). Called by `clinicdb migrate`
-- after the other Citus profile steps (it needs citus_audit_profile()'s
-- clinicdb._citus_audit_trail()), as a superuser; idempotent; changes
-- nothing on a single node unless called there.
--
-- Why: clinicdb.audit_log is distributed by clinic_id, and Citus refuses a
-- row whose distribution column is NULL. The rows without a clinic -- the
-- statement-level record of a TRUNCATE, the record prune_audit() writes for
-- each month it drops -- had nowhere to go: a truncate of an audited table
-- failed, `clinicdb audit prune` failed, and the no-clinic seal chain stayed
-- empty. On Citus they go to clinicdb.audit_log_unscoped instead:
--
--   * Same row type as clinicdb.audit_log (created LIKE it), plus
--     check (clinic_id is null): only clinic-less rows live there.
--   * A reference table, not a coordinator-local one: citus_distribute(),
--     which `migrate` runs again every time, makes every clinicdb table a
--     reference table (a plain or Citus-local table in the schema would be
--     converted by the next migrate anyway), and the writes are rare (one
--     row per TRUNCATE statement or pruned month), so the copy per node
--     costs nothing that matters. It is not partitioned (Citus has no
--     partitioned reference tables): prune_audit() deletes a pruned month's
--     rows from it, in the same transaction that drops the month.
--   * Append-only like the trail: no role the layer creates may insert,
--     update, delete or truncate it (the capture functions insert as the
--     owner); the owner is stopped by the same guard, clinicdb.audit_log_guard(),
--     outside prune_audit(). Row level security forced, with the trail's
--     policies (the owner's, and the read policy: only clinicdb_auditor sees
--     its rows, whose clinic_id is NULL), so `clinicdb check` holds.
--   * Where the TRUNCATE record is written: a TRUNCATE of a distributed table
--     through the coordinator fires the table's statement-level triggers on
--     the coordinator's table AND on every shard on the workers (Citus copies
--     a table's triggers to its shards), and a reference table's also on the
--     coordinator's own copy (a shard too). Only the coordinator's firing on
--     the table itself writes the record (citus_is_coordinator() and not
--     relation_is_a_known_shard()): one row per TRUNCATE statement, written
--     in the truncating transaction.
--   * Sealing and verification read the trail through
--     clinicdb._citus_audit_trail() (citus_audit_profile()): it returns these
--     rows too, so the no-clinic chain is sealed and verified, and a changed,
--     deleted or added row there is reported like any other.
--   * prune_audit() on Citus reads the trail through _citus_audit_trail()
--     (its whole-row digests cannot run on a shard's row type), counts and
--     deletes the month's no-clinic rows with its partition, writes its prune
--     row here, and sets clinicdb.audit_maintenance with SET LOCAL, which
--     Citus carries to every node's copy of the seal tables and of this table
--     (set_config() does not reach them, and their guards would refuse); the
--     mark is emptied again before the next month, as on a single node.
--
-- The rewrites of the function bodies are listed once
-- (clinicdb._citus_unscoped_rewrites()) and undone by p_undo, which refuses
-- while the table holds a row: a no-clinic row cannot go back into the
-- distributed trail, and dropping it would lose an audit row.
create or replace function clinicdb._citus_unscoped_rewrites()
returns table (fn regprocedure, single_node text, on_citus text)
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
    select r.fn::regprocedure, r.single_node, r.on_citus
      from (values
        -- 1. The trail that sealing and verification read includes the no-clinic rows.
        (1, 'clinicdb._citus_audit_trail()',
         'return query select * from clinicdb.audit_log;',
         'return query select * from clinicdb.audit_log;
    -- The rows without a clinic (clinicdb.citus_unscoped_audit()).
    return query select * from clinicdb.audit_log_unscoped;'),
        -- 2. A TRUNCATE's record: written once, by the coordinator's firing on the table itself.
        (2, 'clinicdb.audit_capture_truncate()',
         'begin
    insert into clinicdb.audit_log (',
         'begin
    -- On Citus (clinicdb.citus_unscoped_audit()): the shards'' triggers fire too; only the coordinator''s
    -- firing on the table itself writes the one record, into the no-clinic table.
    if not pg_catalog.citus_is_coordinator() or pg_catalog.relation_is_a_known_shard(tg_relid) then
        return null;
    end if;
    insert into clinicdb.audit_log_unscoped ('),
        -- 3. prune_audit(): whole-row digests over the gathered trail, not on the shards.
        (3, 'clinicdb.prune_audit(interval, boolean)',
         'from clinicdb.audit_log a',
         'from clinicdb._citus_audit_trail() a'),
        -- 4. A month's count includes its no-clinic rows.
        (4, 'clinicdb.prune_audit(interval, boolean)',
         'execute format(''select count(*) from %s'', v_part.partition_name) into v_rows;',
         'execute format(''select count(*) from %s'', v_part.partition_name) into v_rows;
        v_rows := v_rows + (select count(*) from clinicdb.audit_log_unscoped u
                             where u.logged_at >= v_part.range_from and u.logged_at < v_part.range_to);'),
        -- 5. The maintenance mark reaches every node's copy of the seal tables (SET LOCAL propagates).
        (5, 'clinicdb.prune_audit(interval, boolean)',
         'perform set_config(''clinicdb.audit_maintenance'', ''on'', true);',
         'set local citus.propagate_set_commands = ''local'';
        set local clinicdb.audit_maintenance = ''on'';'),
        -- 6. The month's no-clinic rows go with its partition.
        (6, 'clinicdb.prune_audit(interval, boolean)',
         'perform set_config(''clinicdb.audit_maintenance'', '''', true);',
         'delete from clinicdb.audit_log_unscoped u
         where u.logged_at >= v_part.range_from and u.logged_at < v_part.range_to;
        set local clinicdb.audit_maintenance = '''';'),
        -- 7. Citus refuses a function that is not immutable in ON CONFLICT DO UPDATE on a reference table.
        (7, 'clinicdb.prune_audit(interval, boolean)',
         'pruned_at = now(), pruned_by = session_user;',
         'pruned_at = excluded.pruned_at, pruned_by = excluded.pruned_by;'),
        -- 8. The prune row has no clinic.
        (8, 'clinicdb.prune_audit(interval, boolean)',
         'insert into clinicdb.audit_log (clinic_id, table_name, action, new_values)',
         'insert into clinicdb.audit_log_unscoped (clinic_id, table_name, action, new_values)')
      ) as r(k, fn, single_node, on_citus)
     order by r.fn, r.k
$$;
comment on function clinicdb._citus_unscoped_rewrites() is
    'clinicdb: the text rewrites citus_unscoped_audit() applies (trail read, truncate capture, prune).';
revoke execute on function clinicdb._citus_unscoped_rewrites() from public;

create or replace procedure clinicdb.citus_unscoped_audit(p_undo boolean default false)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_fn regprocedure;
    v_def text;
    v_new text;
    v_rewrite record;
    v_rows bigint;
begin
    if not exists (select 1 from pg_extension where extname = 'citus') then
        raise exception 'the citus extension is not installed in this database'
            using errcode = 'feature_not_supported';
    end if;
    if p_undo and to_regclass('clinicdb.audit_log_unscoped') is not null then
        execute 'select count(*) from clinicdb.audit_log_unscoped' into v_rows;
        if v_rows > 0 then
            raise exception 'clinicdb.audit_log_unscoped holds % audit rows without a clinic: they cannot go back '
                            'into the distributed trail, and rolling back would lose them', v_rows
                using errcode = 'object_not_in_prerequisite_state',
                      hint = 'keep this migration: on Citus these rows have no other place. To roll back anyway, '
                             'a superuser first copies them elsewhere and empties the table';
        end if;
    end if;

    if not p_undo then
        -- Built on the coordinator, then copied to every node as a reference table (with its triggers,
        -- policy and grants; Citus copies triggers only when allowed to).
        set local citus.enable_unsafe_triggers = on;
        if to_regclass('clinicdb.audit_log_unscoped') is null then
            create table clinicdb.audit_log_unscoped (
                like clinicdb.audit_log including defaults including constraints,
                constraint audit_log_unscoped_no_clinic check (clinic_id is null)
            );
            alter table clinicdb.audit_log_unscoped alter column clinic_id set default null;
            alter table clinicdb.audit_log_unscoped owner to clinicdb_owner;
            comment on table clinicdb.audit_log_unscoped is
                'clinicdb: on Citus, the audit rows without a clinic (truncate, prune), append-only; sealed in the '
                'no-clinic chain. See docs/citus.md.';
            create index audit_log_unscoped_time_idx on clinicdb.audit_log_unscoped (logged_at);
            -- As the trail (sql/schema/layer_tables.sql): row level security forced, the owner's policy, and
            -- the trail's read policy in the form Citus accepts.
            perform clinicdb._secure_layer_table('clinicdb.audit_log_unscoped', false);
            create policy audit_log_read on clinicdb.audit_log_unscoped for select
                using (clinic_id = clinicdb.current_clinic_id() or pg_has_role('clinicdb_auditor', 'MEMBER'));
            revoke all on clinicdb.audit_log_unscoped from public;
            grant select on clinicdb.audit_log_unscoped
                to clinicdb_app, clinicdb_staff, clinicdb_readonly, clinicdb_auditor;
            create trigger audit_log_guard before update or delete on clinicdb.audit_log_unscoped
                for each row execute function clinicdb.audit_log_guard();
            create trigger audit_log_guard_truncate before truncate on clinicdb.audit_log_unscoped
                for each statement execute function clinicdb.audit_log_guard();
        end if;
        if not exists (select 1 from pg_dist_partition d
                        where d.logicalrelid = 'clinicdb.audit_log_unscoped'::regclass) then
            perform create_reference_table('clinicdb.audit_log_unscoped');
        end if;
    end if;

    for v_fn in select distinct r.fn from clinicdb._citus_unscoped_rewrites() r loop
        v_def := pg_get_functiondef(v_fn);
        v_new := v_def;
        for v_rewrite in select * from clinicdb._citus_unscoped_rewrites() r where r.fn = v_fn loop
            if p_undo then
                v_new := replace(v_new, v_rewrite.on_citus, v_rewrite.single_node);
            elsif strpos(v_new, v_rewrite.on_citus) = 0 then
                if strpos(v_new, v_rewrite.single_node) = 0 then
                    raise exception 'citus_unscoped_audit: % no longer reads as the profile expects (%)',
                        v_fn, left(v_rewrite.single_node, 60);
                end if;
                v_new := replace(v_new, v_rewrite.single_node, v_rewrite.on_citus);
            end if;
        end loop;
        if v_new <> v_def then
            execute v_new;
        end if;
    end loop;
    if p_undo and to_regclass('clinicdb.audit_log_unscoped') is not null then
        drop table clinicdb.audit_log_unscoped;
    end if;
end
$$;
comment on procedure clinicdb.citus_unscoped_audit(boolean) is
    'clinicdb: on a Citus coordinator, write the audit rows without a clinic (truncate, prune) to '
    'clinicdb.audit_log_unscoped and seal them in the no-clinic chain (p_undo: take it back while it is empty). '
    'Idempotent; docs/citus.md.';
revoke execute on procedure clinicdb.citus_unscoped_audit(boolean) from public;
reset role;
