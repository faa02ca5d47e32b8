-- Which reference columns hold protected health information. Audit and
-- encryption read this registry; reviewers read it as the PHI inventory.
insert into clinicdb.phi_columns (table_name, column_name, note) values
    ('public.patients', 'given_name', 'identifier: name'),
    ('public.patients', 'family_name', 'identifier: name'),
    ('public.patients', 'birth_date', 'identifier: date of birth'),
    ('public.patients', 'ssn', 'identifier: social security number'),
    ('public.patients', 'phone', 'identifier: telephone'),
    ('public.patients', 'email', 'identifier: e-mail'),
    ('public.patients', 'address', 'identifier: address'),
    ('public.patients', 'mrn', 'identifier: medical record number'),
    ('public.appointments', 'reason', 'health information'),
    ('public.medical_records', 'diagnosis_code', 'health information'),
    ('public.medical_records', 'notes', 'health information'),
    ('public.prescriptions', 'medication', 'health information'),
    ('public.prescriptions', 'dosage', 'health information')
on conflict do nothing;

do $$
declare
    v_col record;
begin
    for v_col in select table_name, column_name, note from clinicdb.phi_columns loop
        execute format('comment on column %s.%I is %L', v_col.table_name, v_col.column_name, 'PHI: ' || v_col.note);
    end loop;
end
$$;
