-- clinicdb_tap: helpers for pgTAP suites that prove tenant isolation, for
-- clinicdb's own tests and for yours. Install after pgTAP:
--     create extension pgtap; \i sql/tap/clinicdb_tap.sql
-- Tests run as a superuser inside begin ... rollback; the helpers switch
-- personas with transaction-local settings, so the rollback undoes them.
create schema if not exists clinicdb_tap;
grant usage on schema clinicdb_tap to public;

-- Become the application for one clinic, as the driver does it: role plus a
-- transaction-local app.clinic_id. A NULL clinic means "no clinic in force".
create or replace function clinicdb_tap.authenticate_as_app(p_clinic uuid, p_role name default 'clinicdb_app')
returns void language plpgsql as $$
begin
    perform set_config('role', p_role, true);
    perform set_config('app.clinic_id', coalesce(p_clinic::text, ''), true);
end $$;
comment on function clinicdb_tap.authenticate_as_app(uuid, name) is
    'clinicdb_tap: act as an application role with app.clinic_id set for this transaction.';

-- Become any role (a staff login, the owner, the auditor).
create or replace function clinicdb_tap.authenticate_as(p_role name)
returns void language plpgsql as $$
begin
    perform set_config('role', p_role, true);
end $$;
comment on function clinicdb_tap.authenticate_as(name) is 'clinicdb_tap: act as this role for the rest of the transaction.';

-- Back to the superuser the test connected as, with no clinic in force.
create or replace function clinicdb_tap.clear_authentication()
returns void language plpgsql as $$
begin
    perform set_config('role', 'none', true);
    perform set_config('app.clinic_id', '', true);
end $$;
comment on function clinicdb_tap.clear_authentication() is 'clinicdb_tap: back to the connecting superuser, no clinic.';

-- A clinic for a test (as superuser).
create or replace function clinicdb_tap.create_clinic(p_name text)
returns uuid language sql as $$
    select clinicdb.create_clinic(p_name)
$$;

-- A login role mapped as staff to a clinic (rolled back with the test).
create or replace function clinicdb_tap.create_staff_login(p_role name, p_clinic uuid)
returns name language plpgsql as $$
begin
    execute format('create role %I login', p_role);
    perform clinicdb.grant_staff(p_role, p_clinic);
    return p_role;
end $$;

-- Encrypted columns (issue #5) need a master key in force and a data key for
-- the clinic. For tests only: a fixed, public test master key is put in force
-- for the transaction when none is, and the clinic gets its first data key.
-- No-op where the encryption layer is not installed. Never use this key for
-- real data.
create or replace function clinicdb_tap.use_test_keys(p_clinic uuid)
returns void language plpgsql as $$
begin
    if to_regprocedure('clinicdb.rotate_clinic_key(uuid)') is null then
        return;
    end if;
    if coalesce(current_setting('app.master_key', true), '') = '' then
        perform set_config('app.master_key', repeat('7e', 32), true);
    end if;
    if not exists (select 1 from clinicdb.clinic_keys where clinic_id = p_clinic and state = 'active') then
        perform clinicdb.rotate_clinic_key(p_clinic);
    end if;
end $$;
comment on function clinicdb_tap.use_test_keys(uuid) is
    'clinicdb_tap: put the public TEST master key in force (if none) and give the clinic a data key (as superuser).';

-- The tenant tables of the reference schema, for suites that loop over them.
create or replace function clinicdb_tap.reference_tables()
returns setof regclass language sql stable as $$
    select t::regclass from unnest(array['clinicdb.clinics', 'public.staff', 'public.patients', 'public.appointments',
                                         'public.medical_records', 'public.prescriptions']) t
$$;

-- One row in every reference table for a clinic; returns the patient id.
create or replace function clinicdb_tap.seed_reference(p_clinic uuid)
returns uuid language plpgsql as $$
declare
    v_staff uuid := gen_random_uuid();
    v_patient uuid := gen_random_uuid();
    v_appointment uuid := gen_random_uuid();
    v_record uuid := gen_random_uuid();
begin
    perform clinicdb_tap.use_test_keys(p_clinic);
    insert into public.staff (id, clinic_id, display_name, email)
        values (v_staff, p_clinic, 'Dr Test', v_staff || '@example.test');
    insert into public.patients (id, clinic_id, mrn, given_name, family_name, ssn)
        values (v_patient, p_clinic, 'MRN-' || left(v_patient::text, 8), 'Pat', 'Test', '123-45-6789');
    insert into public.appointments (id, clinic_id, patient_id, staff_id, starts_at, ends_at, reason)
        values (v_appointment, p_clinic, v_patient, v_staff, now(), now() + interval '30 min', 'checkup');
    insert into public.medical_records (id, clinic_id, patient_id, appointment_id, recorded_by, notes)
        values (v_record, p_clinic, v_patient, v_appointment, v_staff, 'note');
    insert into public.prescriptions (clinic_id, patient_id, medical_record_id, prescribed_by, medication, dosage)
        values (p_clinic, v_patient, v_record, v_staff, 'amoxicillin', '500mg');
    return v_patient;
end $$;

-- The plan of p_sql (EXPLAIN, costs off) as one text, for matches()/ok() on
-- which index or plan shape a query uses under the current persona.
create or replace function clinicdb_tap.plan_of(p_sql text)
returns text language plpgsql as $$
declare
    v_line text;
    v_plan text := '';
begin
    for v_line in execute 'explain (costs off) ' || p_sql loop
        v_plan := v_plan || v_line || E'\n';
    end loop;
    return v_plan;
end $$;

-- Every node of a query's plan (EXPLAIN (FORMAT JSON, COSTS OFF)), one row
-- each: its type, relation, index, index condition and how it hangs off its
-- parent ('InitPlan', 'Outer', ...). For assertions on a plan's shape that
-- hold on every PostgreSQL version: EXPLAIN's text changes between them
-- (17 writes "(InitPlan 1).col1" where 16 wrote "$0").
create or replace function clinicdb_tap.plan_nodes(p_sql text)
returns table (node_type text, relation text, index_name text, index_cond text, parent_relationship text)
language plpgsql as $$
declare
    v_plan jsonb;
begin
    execute 'explain (format json, costs off) ' || p_sql into v_plan;
    return query
    with recursive nodes(node) as (
        select v_plan -> 0 -> 'Plan'
        union all
        select child from nodes, jsonb_array_elements(coalesce(nodes.node -> 'Plans', '[]'::jsonb)) as child
    )
    select n.node ->> 'Node Type', n.node ->> 'Relation Name', n.node ->> 'Index Name', n.node ->> 'Index Cond',
           n.node ->> 'Parent Relationship'
      from nodes n;
end $$;
comment on function clinicdb_tap.plan_nodes(text) is
    'clinicdb_tap: the nodes of a query''s plan (type, relation, index, index condition), whatever the server version.';

-- Rows of p_table visible to the current persona, and how many of them
-- belong to p_clinic. Dynamic so one helper serves every table.
create or replace function clinicdb_tap.visible_rows(p_table regclass, p_clinic uuid, out total bigint, out own bigint)
language plpgsql as $$
begin
    execute format('select count(*), count(*) filter (where clinic_id = $1) from %s', p_table)
       into total, own using p_clinic;
end $$;

-- ok() when the current persona sees rows of p_table and all of them are p_clinic's.
create or replace function clinicdb_tap.sees_only_clinic(p_table regclass, p_clinic uuid, p_description text)
returns text language plpgsql as $$
declare
    v record;
begin
    select * into v from clinicdb_tap.visible_rows(p_table, p_clinic);
    return ok(v.total > 0 and v.total = v.own,
              p_description || format(' (saw %s rows, %s of the clinic)', v.total, v.own));
end $$;

-- ok() when the current persona sees no row at all of p_table.
create or replace function clinicdb_tap.sees_nothing(p_table regclass, p_description text)
returns text language plpgsql as $$
declare
    v record;
begin
    select * into v from clinicdb_tap.visible_rows(p_table, null);
    return ok(v.total = 0, p_description || format(' (saw %s rows)', v.total));
end $$;

-- How many rows of p_other an update or delete by the current persona reaches.
create or replace function clinicdb_tap.rows_changed(p_sql text, p_table regclass, p_other uuid)
returns bigint language plpgsql as $$
declare
    v_count bigint;
begin
    execute format(p_sql, p_table) using p_other;
    get diagnostics v_count = row_count;
    return v_count;
end $$;

-- The structural proof for one table: clinicdb.check_isolation() has no
-- finding for it (forced RLS, standard policies unchanged, not null, no
-- widening grants, views or policies).
create or replace function clinicdb_tap.is_tenant_isolated(p_table regclass, p_description text default null)
returns text language plpgsql as $$
declare
    v_findings text;
begin
    select string_agg(finding, '; ') into v_findings
      from clinicdb.check_isolation()
     where table_name = (select format('%I.%I', n.nspname, c.relname)
                           from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table);
    return ok(v_findings is null and exists (select 1 from clinicdb.protected_tables where table_name = p_table),
              coalesce(p_description, format('%s is tenant-isolated', p_table)))
        || case when v_findings is null then '' else E'\n' || diag(v_findings) end;
end $$;
comment on function clinicdb_tap.is_tenant_isolated(regclass, text) is
    'clinicdb_tap: ok when check_isolation() reports nothing for the table and it is registered.';

grant execute on all functions in schema clinicdb_tap to public;
