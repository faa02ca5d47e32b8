-- clinicdb.touch_row(): before-update trigger on tenant tables.
-- updated_at is set by the database (clock time, so two updates in one
-- transaction still differ), and clinic_id never changes: a row moves
-- between clinics only by copy, never in place, even for roles the policies
-- do not bind (owner, superuser).
create or replace function clinicdb.touch_row()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    -- NEW.clinic_id is NULL here when clinic_id is a generated column (as on
    -- clinics): BEFORE triggers run before it is computed. Such a row's clinic
    -- follows its key, which the update policy's WITH CHECK and the foreign
    -- keys guard; a NULL written into a plain clinic_id fails NOT NULL.
    if new.clinic_id is not null and new.clinic_id is distinct from old.clinic_id then
        raise exception 'clinic_id of a % row cannot change', tg_table_name
            using errcode = 'check_violation',
                  hint = 'insert a copy under the other clinic and soft-delete this one';
    end if;
    new.updated_at := clock_timestamp();
    return new;
end
$$;
comment on function clinicdb.touch_row() is
    'clinicdb: keeps updated_at current and clinic_id unchanged on update.';
grant execute on function clinicdb.touch_row() to public;
