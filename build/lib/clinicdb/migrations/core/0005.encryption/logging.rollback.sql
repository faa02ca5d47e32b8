-- 0005.encryption, rollback, last part: the database's logging settings back to the server's.
-- Frozen: copied from sql/schema/encryption_logging.rollback.sql when the migration was written; migrations.lock pins it.

-- ---- sql/schema/encryption_logging.rollback.sql ----
do $$
begin
    if (select rolsuper from pg_roles where rolname = current_user) then
        execute format('alter database %I reset log_parameter_max_length', current_database());
        execute format('alter database %I reset log_parameter_max_length_on_error', current_database());
    end if;
end
$$;
