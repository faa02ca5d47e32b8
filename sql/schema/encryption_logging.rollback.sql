do $$
begin
    if (select rolsuper from pg_roles where rolname = current_user) then
        execute format('alter database %I reset log_parameter_max_length', current_database());
        execute format('alter database %I reset log_parameter_max_length_on_error', current_database());
    end if;
end
$$;
