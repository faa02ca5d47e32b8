-- 0003.reference-schema: undo 0003.reference-schema.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/reference/rollback.sql when it
-- was written. migrations/migrations.lock pins it: change sql/ and add a new migration instead of
-- editing this file.

set local role clinicdb_owner;
-- ---- sql/reference/rollback.sql ----
delete from clinicdb.phi_columns
 where table_name::text in ('patients', 'appointments', 'medical_records', 'prescriptions');
delete from clinicdb.protected_tables
 where table_name::text in ('staff', 'patients', 'appointments', 'medical_records', 'prescriptions');
drop table if exists public.prescriptions, public.medical_records, public.appointments,
    public.patients, public.staff;
reset role;
