-- 0009.reference-encryption, rollback (as the migrating login): plaintext back into the columns.
-- Frozen: copied from sql/reference/encryption.rollback.sql when the migration was written; migrations.lock pins it.

-- ---- sql/reference/encryption.rollback.sql ----
-- Plaintext back into the reference columns (needs app.master_key when any
-- value is stored; values of shredded clinics stay lost, as NULL).
select clinicdb.decrypt_column('public.medical_records', 'notes');
select clinicdb.decrypt_column('public.patients', 'phone');
select clinicdb.decrypt_column('public.patients', 'ssn');
