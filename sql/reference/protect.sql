-- Every reference table is a tenant table: one call each, nothing hand-written.
-- (clinicdb.clinics is the core's and protected there.)
select clinicdb.protect_table(t::regclass)
  from unnest(array['public.staff', 'public.patients', 'public.appointments',
                    'public.medical_records', 'public.prescriptions']) as t;
