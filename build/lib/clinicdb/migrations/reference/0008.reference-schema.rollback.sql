-- 0008.reference-schema: undo 0008.reference-schema.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/reference/rollback.sql when it
-- was written. migrations/migrations.lock pins it: change sql/ and add a new migration instead of
-- editing this file.

set local role clinicdb_owner;
-- ---- sql/reference/rollback.sql ----
-- Undo the reference schema (run after its columns are decrypted). The
-- registries first -- they name tables by regclass, which a drop would leave
-- dangling -- then the tables; the capture functions the audit trigger
-- generated for them go last. Their audit rows stay: the trail is evidence.
delete from clinicdb.phi_columns where table_name::text in
    ('public.staff', 'public.patients', 'public.appointments', 'public.medical_records', 'public.prescriptions',
     'staff', 'patients', 'appointments', 'medical_records', 'prescriptions');
select clinicdb.detach_audit(pt.table_name)
  from clinicdb.protected_tables pt
 where pt.table_name = any (array[to_regclass('public.staff'), to_regclass('public.patients'),
                                  to_regclass('public.appointments'), to_regclass('public.medical_records'),
                                  to_regclass('public.prescriptions')]);
delete from clinicdb.audit_settings
 where table_name = any (array[to_regclass('public.staff'), to_regclass('public.patients'),
                               to_regclass('public.appointments'), to_regclass('public.medical_records'),
                               to_regclass('public.prescriptions')]);
delete from clinicdb.protected_tables
 where table_name = any (array[to_regclass('public.staff'), to_regclass('public.patients'),
                               to_regclass('public.appointments'), to_regclass('public.medical_records'),
                               to_regclass('public.prescriptions')]);
drop table if exists public.prescriptions, public.medical_records, public.appointments,
    public.patients, public.staff;
reset role;
