-- 0009.reference-encryption, apply (as the migrating login): the encrypted columns.
-- Frozen: copied from sql/reference/encryption.sql when the migration was written; migrations.lock pins it.

-- ---- sql/reference/encryption.sql ----
-- The reference schema's encrypted columns (issue #5). Run as the migrating
-- superuser, not the owner: existing plaintext is encrypted on the spot, and
-- the owner does not see other clinics' rows (forced RLS). A column already
-- encrypted (a clinicdb 0.1 database, whose 0005 did this) is left as it is.
select clinicdb.encrypt_column(c.table_name::regclass, c.column_name, p_blind_index => c.blind_index)
  from (values ('public.patients', 'ssn', true),
               ('public.patients', 'phone', false),
               ('public.medical_records', 'notes', false)) as c (table_name, column_name, blind_index)
 where not exists (select 1 from clinicdb.encrypted_columns ec
                    where ec.table_name = c.table_name::regclass and ec.column_name = c.column_name);
