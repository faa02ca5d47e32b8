-- 0004.audit: undo 0004.audit.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/schema/audit.rollback.sql when it
-- was written. migrations/migrations.lock pins it: change sql/ and add a new migration instead of
-- editing this file.

set local role clinicdb_owner;
-- ---- sql/schema/audit.rollback.sql ----
-- Undo migration 0004 (the audit trail): detach the triggers from every
-- table, then drop the trail, its seals and functions. The trail's rows are
-- lost with it: archive first (clinicdb audit archive --to DIR --all).
select clinicdb.detach_audit(pt.table_name) from clinicdb.protected_tables pt;
-- Generated capture functions of tables detached some other way (absent
-- in a database migrated by the first version of this migration).
do $$
begin
    if to_regprocedure('clinicdb.drop_unused_audit_capture()') is not null then
        perform clinicdb.drop_unused_audit_capture();
    end if;
end
$$;

drop function if exists clinicdb.verify_audit(bigint, bigint);
drop function if exists clinicdb.audit_seal_status();
drop function if exists clinicdb.seal_audit(integer);
drop function if exists clinicdb.audit_block_hash(bytea, bigint, bigint, bigint, bigint, bigint, integer, bytea);
drop function if exists clinicdb.audit_row_digest(clinicdb.audit_log);
drop function if exists clinicdb.log_access(regclass, anyarray, text);
drop function if exists clinicdb.prune_audit(interval, boolean);
drop function if exists clinicdb.ensure_audit_partitions(integer);
drop function if exists clinicdb.audit_month(timestamptz);
drop function if exists clinicdb.audit_partitions();
drop function if exists clinicdb.audit_findings();
drop function if exists clinicdb.set_audit_column(regclass, name, text);
drop function if exists clinicdb.detach_audit(regclass);
drop function if exists clinicdb.attach_audit(regclass);
drop function if exists clinicdb.audit_key_columns(regclass);
drop function if exists clinicdb.audit_capture_truncate();
drop function if exists clinicdb.drop_unused_audit_capture();
drop function if exists clinicdb.create_audit_capture(regclass, text[], text[], text[]);
drop function if exists clinicdb.audit_capture_name(regclass, text);
-- The shared capture functions of the first version of this migration.
drop function if exists clinicdb.audit_capture_update();
drop function if exists clinicdb.audit_capture_rows();
drop function if exists clinicdb.audit_acting_role();
drop function if exists clinicdb.audit_mask(jsonb, text[]);
drop function if exists clinicdb.audit_key_text(jsonb, text[]);
drop table if exists clinicdb.audit_pruned_months, clinicdb.audit_seals, clinicdb.audit_settings, clinicdb.audit_capture_state;
drop table if exists clinicdb.audit_log;
drop function if exists clinicdb.audit_log_guard();
drop sequence if exists clinicdb.audit_log_id_seq;
reset role;
