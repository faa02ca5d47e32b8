-- 0005.encryption, third part (as the migrating login, on databases that ran 0003.reference-schema): the reference schema's encrypted columns.
-- Frozen: copied from sql/reference/encryption.sql when the migration was written; migrations.lock pins it.

-- ---- sql/reference/encryption.sql ----
-- The reference schema's encrypted columns (issue #5). Run as the migrating
-- superuser, not the owner: existing plaintext is encrypted on the spot, and
-- the owner does not see other clinics' rows (forced RLS).
select clinicdb.encrypt_column('public.patients', 'ssn', p_blind_index => true);
select clinicdb.encrypt_column('public.patients', 'phone');
select clinicdb.encrypt_column('public.medical_records', 'notes');
