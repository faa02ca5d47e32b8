-- Undo the Citus-aware set_audit_column(): the function as 0004 left it
-- (now() in its DO UPDATE SET; statement-level triggers only). The other
-- functions of attach_audit.sql are unchanged by that migration.
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
