-- Every reference table is a tenant table: one call each, nothing hand-written.
select clinicdb.protect_table(t::regclass)
  from unnest(array['public.clinics', 'public.staff', 'public.patients', 'public.appointments',
                    'public.medical_records', 'public.prescriptions']) as t;
