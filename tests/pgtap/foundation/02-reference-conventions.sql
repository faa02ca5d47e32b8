-- Every reference table follows the conventions: uuid id, primary key (clinic_id, id),
-- clinic_id not null referencing clinicdb.clinics, created_at/updated_at/deleted_at,
-- and an index leading with the columns of every foreign key.
begin;
select plan(33);

-- Per table: id uuid, id is the primary key, clinic_id uuid not null.
select col_type_is(case t when 'clinics' then 'clinicdb' else 'public' end, t, 'id', 'uuid', format('%s.id is a uuid', t))
  from unnest(array['clinics', 'staff', 'patients', 'appointments', 'medical_records', 'prescriptions']) t;
select col_is_pk('clinicdb', 'clinics', 'id', 'clinics has id as its primary key');
select col_is_pk('public', t, array['clinic_id', 'id'], format('%s has (clinic_id, id) as its primary key, so it can be distributed by clinic', t))
  from unnest(array['staff', 'patients', 'appointments', 'medical_records', 'prescriptions']) t;
select col_not_null(case t when 'clinics' then 'clinicdb' else 'public' end, t, 'clinic_id', format('%s.clinic_id is not null', t))
  from unnest(array['clinics', 'staff', 'patients', 'appointments', 'medical_records', 'prescriptions']) t;
select fk_ok('public', t, 'clinic_id', 'clinicdb', 'clinics', 'id', format('%s.clinic_id references clinics (id)', t))
  from unnest(array['staff', 'patients', 'appointments', 'medical_records', 'prescriptions']) t;

-- Timestamps: created_at and updated_at required, deleted_at for soft delete.
select ok(
    (select count(*) = 3 from information_schema.columns
      where table_schema = case t when 'clinics' then 'clinicdb' else 'public' end and table_name = t
        and ((column_name in ('created_at', 'updated_at') and is_nullable = 'NO')
             or (column_name = 'deleted_at' and is_nullable = 'YES'))
        and data_type = 'timestamp with time zone'),
    format('%s has created_at and updated_at (not null) and deleted_at (nullable), all timestamptz', t))
  from unnest(array['clinics', 'staff', 'patients', 'appointments', 'medical_records', 'prescriptions']) t;

-- Every foreign key is served by an index whose leading columns are the key's.
select is(
    (select array_agg(format('%s(%s)', c.conrelid::regclass, c.conkey::text) order by 1)
       from pg_constraint c
      where c.contype = 'f'
        and c.connamespace = 'public'::regnamespace
        and not exists (
            select 1 from pg_index i
             where i.indrelid = c.conrelid
               and (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
               and (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)),
    null,
    'every foreign key in the reference schema has an index leading with its columns');

-- Composite keys: every child table's references carry clinic_id.
select is(
    (select array_agg(c.conname::text order by 1)
       from pg_constraint c
      where c.contype = 'f' and c.connamespace = 'public'::regnamespace
        and c.confrelid <> 'clinicdb.clinics'::regclass
        and not ((select attnum from pg_attribute where attrelid = c.conrelid and attname = 'clinic_id') = any (c.conkey))),
    null,
    'every reference between tenant tables includes clinic_id, so it cannot cross clinics');

-- PHI is inventoried.
select ok((select count(*) >= 10 from clinicdb.phi_columns), 'PHI columns are listed in clinicdb.phi_columns');
select is(col_description('public.patients'::regclass,
                          (select attnum from pg_attribute where attrelid = 'public.patients'::regclass and attname = 'ssn')::int),
          'PHI: identifier: social security number', 'PHI columns carry a PHI: comment a DBA sees in \d+');

select * from finish();
rollback;
