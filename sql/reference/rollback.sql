delete from clinicdb.phi_columns
 where table_name::text in ('patients', 'appointments', 'medical_records', 'prescriptions');
delete from clinicdb.protected_tables
 where table_name::text in ('staff', 'patients', 'appointments', 'medical_records', 'prescriptions');
drop table if exists public.prescriptions, public.medical_records, public.appointments,
    public.patients, public.staff;
