-- 0005.encryption, first part (as the migrating login): keys and PHI stay out of the server log.
-- Frozen: copied from sql/schema/encryption_logging.sql when the migration was written; migrations.lock pins it.

-- ---- sql/schema/encryption_logging.sql ----
-- Keys and PHI reach the server as bind parameters ($1): keep them out of
-- the server log even under log_statement = 'all' or log_min_duration_statement.
-- Both settings are superuser-only, so the application cannot turn them back
-- on; set per database here (docs/encryption.md lists them for postgresql.conf
-- too). Run as the migrating superuser; anyone else is warned.
do $$
begin
    if (select rolsuper from pg_roles where rolname = current_user) then
        execute format('alter database %I set log_parameter_max_length = 0', current_database());
        execute format('alter database %I set log_parameter_max_length_on_error = 0', current_database());
    else
        raise warning 'not a superuser: set log_parameter_max_length = 0 and log_parameter_max_length_on_error = 0 '
                      'on the server yourself (docs/encryption.md)';
    end if;
end
$$;
