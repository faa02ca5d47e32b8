-- 0013.reference-composite-keys: undo 0013: primary keys back to (id), the unique (clinic_id, id) the foreign keys point at restored;
-- every row kept.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/(hand-written) when it was
-- written. migrations/migrations.lock pins it: change sql/ and add a new migration instead of editing
-- this file.

set local role clinicdb_owner;
-- The composite foreign keys between reference tables point at the key the
-- tables are changing: set them aside, swap the keys, put them back under
-- the same names (validated again: every row is checked).
do $$
declare
    v_tables regclass[] := array['public.staff', 'public.patients', 'public.appointments',
                                 'public.medical_records', 'public.prescriptions']::regclass[];
    v_fkeys text[][];
    v_fk text[];
    v_table regclass;
    v_rel name;
begin
    select coalesce(array_agg(array[con.conrelid::regclass::text, con.conname::text, pg_get_constraintdef(con.oid)]
                              order by con.conrelid::regclass::text, con.conname), '{}')
      into v_fkeys
      from pg_constraint con
     where con.contype = 'f' and con.confrelid = any (v_tables) and cardinality(con.conkey) = 2;
    foreach v_fk slice 1 in array v_fkeys loop
        execute format('alter table %s drop constraint %I', v_fk[1], v_fk[2]);
    end loop;
    foreach v_table in array v_tables loop
        v_rel := (select relname from pg_class where oid = v_table);
        execute format('alter table %s drop constraint if exists %I', v_table, v_rel || '_clinic_id_id_key');
        execute format('alter table %s drop constraint %I, add constraint %I primary key (id)', v_table,
                       v_rel || '_pkey', v_rel || '_pkey');
        execute format('alter table %s add constraint %I unique (clinic_id, id)', v_table, v_rel || '_clinic_id_id_key');
    end loop;
    foreach v_fk slice 1 in array v_fkeys loop
        execute format('alter table %s add constraint %I %s', v_fk[1], v_fk[2], v_fk[3]);
    end loop;
end
$$;
-- The trail names these rows by id either way (audit_key_columns); the
-- capture is regenerated from the table's key all the same.
select clinicdb.attach_audit(t::regclass)
  from unnest(array['public.staff', 'public.patients', 'public.appointments',
                    'public.medical_records', 'public.prescriptions']) as t;
reset role;
