-- 0009.reference-encryption, apply (as the migrating login): the encrypted columns.
-- Frozen: copied from sql/reference/encryption.sql when the migration was written; migrations.lock pins it.

-- ---- sql/reference/encryption.sql ----
-- The reference schema's encrypted columns (issue #5). Run as the migrating
-- superuser, not the owner: existing plaintext is encrypted on the spot, and
-- the owner does not see other clinics' rows (forced RLS). A column already
-- encrypted (a clinicdb 0.1 database, whose 0005 did this) is left as it is.
-- One at a time, in this order: each adds its columns to the table, so the
-- order fixes the tables' column order on every PostgreSQL version.
do $$
declare
    v_col record;
begin
    for v_col in
        select c.table_name, c.column_name, c.blind_index
          from (values (1, 'public.patients', 'ssn', true),
                       (2, 'public.patients', 'phone', false),
                       (3, 'public.medical_records', 'notes', false)) as c (ord, table_name, column_name, blind_index)
         order by c.ord
    loop
        if not exists (select 1 from clinicdb.encrypted_columns ec
                        where ec.table_name = v_col.table_name::regclass and ec.column_name = v_col.column_name) then
            perform clinicdb.encrypt_column(v_col.table_name::regclass, v_col.column_name,
                                            p_blind_index => v_col.blind_index);
        end if;
    end loop;
end
$$;
