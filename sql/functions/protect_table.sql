-- clinicdb.protect_table(regclass): make a table with a clinic_id column
-- tenant-isolated. Idempotent: safe to run again after a change to the
-- standard policy, which it then re-applies.
--
-- clinicdb.protect_table_sql(regclass) returns the exact statements, so a DBA
-- can review them (`clinicdb sql policies TABLE`); protect_table runs those
-- same statements and nothing else, then records the table in the registry.
-- On a Citus coordinator that is already distributed it distributes the
-- table with the others first (clinicdb._citus_distribute_table()) and
-- ends with the row-level audit capture (clinicdb._citus_audit_table()).

create table if not exists clinicdb.protected_tables (
    table_name regclass primary key,
    protected_at timestamptz not null default now(),
    protected_by name not null default session_user
);
comment on table clinicdb.protected_tables is 'clinicdb: tables protect_table() has made tenant-isolated.';
grant select on clinicdb.protected_tables to clinicdb_auditor;

create or replace function clinicdb.protect_table_sql(p_table regclass)
returns setof text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_col record;
    v_policy record;
    v_role text;
    v_partition text;
    v_statistics name;
    v_hidden name[];
    v_encrypted name[];
    v_distributed boolean := false;
begin
    select a.attnotnull, a.attgenerated, format_type(a.atttypid, a.atttypmod) as type_name,
           pg_get_expr(d.adbin, d.adrelid) as default_expr
      into v_col
      from pg_attribute a
      left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
     where a.attrelid = p_table and a.attname = 'clinic_id' and not a.attisdropped;
    if not found then
        raise exception 'table % has no clinic_id column', p_table
            using errcode = 'undefined_column',
                  hint = 'add one first: alter table ... add column clinic_id uuid not null references clinics (id)';
    end if;
    if v_col.type_name <> 'uuid' then
        raise exception 'table %: clinic_id is %, not uuid', p_table, v_col.type_name
            using errcode = 'datatype_mismatch',
                  hint = 'clinic ids are uuids; alter the column type to uuid';
    end if;
    if (select c.relkind from pg_class c where c.oid = p_table) not in ('r', 'p') then
        raise exception '% is not a table', p_table
            using errcode = 'wrong_object_type',
                  hint = 'protect the underlying table; views should use security_invoker';
    end if;

    -- Inserts need not name the clinic; with none in force the default raises.
    -- Citus refuses to alter a distribution column: a table distributed by
    -- clinic_id that has the default already gets no statement.
    if to_regclass('pg_catalog.pg_dist_partition') is not null
       and v_col.default_expr = 'clinicdb.require_clinic_id()' then
        execute 'select exists (select 1 from pg_catalog.pg_dist_partition where logicalrelid = $1)'
           into v_distributed using p_table;
    end if;
    if v_col.attgenerated = '' and not v_distributed then
        return next format('alter table %s alter column clinic_id set default clinicdb.require_clinic_id()', p_table);
    end if;
    if not v_col.attnotnull then
        return next format('alter table %s alter column clinic_id set not null', p_table);
    end if;

    -- Forced: the owner is subject to the policies too; only superusers and
    -- BYPASSRLS roles (which the layer never creates) are not.
    return next format('alter table %s enable row level security', p_table);
    return next format('alter table %s force row level security', p_table);

    for v_policy in select * from clinicdb.tenant_policies order by command loop
        return next format('drop policy if exists %I on %s', v_policy.policy_name, p_table);
        return next format('create policy %I on %s as permissive for %s to public%s%s',
            v_policy.policy_name, p_table, v_policy.command,
            coalesce(' using (' || v_policy.using_expr || ')', ''),
            coalesce(' with check (' || v_policy.check_expr || ')', ''));
    end loop;

    -- RLS does not cover TRUNCATE (wipes every clinic), REFERENCES (a foreign
    -- key from a table you own probes other clinics' keys), TRIGGER, or
    -- (PostgreSQL 17+) MAINTAIN (LOCK TABLE blocks every clinic; ANALYZE).
    foreach v_role in array array['public', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor'] loop
        return next format('revoke truncate, references, trigger%s on %s from %s',
                           case when current_setting('server_version_num')::integer >= 170000 then ', maintain' end,
                           p_table, v_role);
    end loop;

    -- Planner statistics are computed over every clinic's rows, and EXPLAIN
    -- estimates use them for anyone who may query the table: a PHI value's
    -- frequency across all clinics would show in a row estimate. None are
    -- collected for PHI columns (clinicdb.phi_columns) or encrypted ones.
    v_hidden := array(select pc.column_name from clinicdb.phi_columns pc where pc.table_name = p_table);
    -- The encryption layer (a later migration) may not be installed yet.
    if to_regclass('clinicdb.encrypted_columns') is not null then
        execute 'select coalesce(array_agg(c), ''{}'') from clinicdb.encrypted_columns ec,
                        unnest(array[ec.column_name, ec.column_name || ''_ciphertext'', ec.column_name || ''_blind_index'']) c
                  where ec.table_name = $1'
           into v_encrypted using p_table;
        v_hidden := v_hidden || v_encrypted;
    end if;
    for v_statistics in
        select a.attname
          from pg_attribute a
         where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped
           and coalesce(a.attstattarget, -1) <> 0 and a.attname = any (v_hidden)
         order by a.attnum
    loop
        return next format('alter table %s alter column %I set statistics 0', p_table, v_statistics);
    end loop;

    -- Partitions are tables of their own: a query naming a partition directly
    -- is checked against the PARTITION's policies, not the parent's. Without
    -- this, a protected partitioned table hands every clinic's rows to anyone
    -- who selects from one of its partitions (they get the default grants).
    -- Partitions created later are reported by check_isolation() until
    -- protect_table runs again (on the parent or on them).
    for v_partition in
        select i.inhrelid::regclass::text from pg_inherits i where i.inhparent = p_table order by 1
    loop
        if (select c.relkind from pg_class c where c.oid = p_table) = 'p' then
            return next format('select clinicdb.protect_table(%L)', v_partition);
        end if;
    end loop;

    -- updated_at is kept by the database, not trusted from the client. A
    -- partition gets the trigger from its partitioned table (PostgreSQL
    -- clones row triggers onto partitions), and cannot drop that clone.
    if exists (select 1 from pg_attribute where attrelid = p_table and attname = 'updated_at' and not attisdropped)
       and not (select c.relispartition from pg_class c where c.oid = p_table) then
        return next format('drop trigger if exists clinicdb_touch_row on %s', p_table);
        return next format('create trigger clinicdb_touch_row before update on %s '
                           'for each row execute function clinicdb.touch_row()', p_table);
    end if;
end
$$;
comment on function clinicdb.protect_table_sql(regclass) is
    'clinicdb: the statements protect_table() would run for a table, for review.';
grant execute on function clinicdb.protect_table_sql(regclass) to clinicdb_owner, clinicdb_auditor;

-- Remove the planner statistics of a table's columns that collect none
-- (statistics target 0): ANALYZE skips such columns and leaves what an
-- earlier ANALYZE stored. Superusers delete them; on PostgreSQL 18 the
-- table's owner can clear them; anyone else is told who can.
create or replace function clinicdb._forget_statistics(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_column name;
    v_schema name := (select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table);
    v_rel name := (select c.relname from pg_class c where c.oid = p_table);
begin
    if (select r.rolsuper from pg_roles r where r.rolname = current_user) then
        delete from pg_catalog.pg_statistic s
         using pg_catalog.pg_attribute a
         where s.starelid = p_table and a.attrelid = p_table and a.attnum = s.staattnum and a.attstattarget = 0;
        return;
    end if;
    if to_regprocedure('pg_catalog.pg_clear_attribute_stats(text, text, text, boolean)') is not null then
        for v_column in
            select a.attname from pg_attribute a
             where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped and a.attstattarget = 0
        loop
            execute 'select pg_catalog.pg_clear_attribute_stats($1, $2, $3, false)' using v_schema, v_rel, v_column;
        end loop;
        return;
    end if;
    raise notice 'statistics % collected before its PHI columns were set to collect none remain until a superuser '
                 'runs clinicdb.protect_table(%) again', p_table, p_table;
end
$$;
comment on function clinicdb._forget_statistics(regclass) is
    'clinicdb: delete stored planner statistics of columns set to collect none (PHI, encrypted), where the caller may.';
revoke execute on function clinicdb._forget_statistics(regclass) from public;

create or replace function clinicdb.protect_table(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_stmt text;
    v_extra text;
    v_citus boolean := to_regprocedure('clinicdb._citus_distribute_table(regclass)') is not null;
    v_ddl_propagation text := current_setting('citus.enable_ddl_propagation', true);
begin
    -- On a Citus coordinator whose layer is already distributed, the table
    -- is distributed with the others first (sql/functions/citus_profile.sql;
    -- nothing happens elsewhere): the registry rows below name it on every
    -- node. Its oid may change then; it is found again by name. DDL
    -- propagation is on from there to the end, then as the caller had it.
    if v_citus then
        execute 'select clinicdb._citus_distribute_table($1)' into p_table using p_table;
    end if;

    for v_stmt in select * from clinicdb.protect_table_sql(p_table) loop
        execute v_stmt;
    end loop;

    -- A permissive policy of someone else's is OR-ed with ours and widens
    -- access; clinicdb.check_isolation() reports it as a finding.
    select string_agg(polname::text, ', ') into v_extra
      from pg_policy
     where polrelid = p_table and polpermissive
       and polname not in (select policy_name from clinicdb.tenant_policies);
    if v_extra is not null then
        raise warning 'table % has other permissive policies (%), which widen the tenant policy', p_table, v_extra
            using hint = 'drop them, or make them restrictive (as restrictive)';
    end if;

    -- Later layers (audit) attach their triggers when they are installed
    -- (to a partitioned table, whose row triggers partitions inherit).
    if to_regprocedure('clinicdb.attach_audit(regclass)') is not null
       and not (select c.relispartition from pg_class c where c.oid = p_table) then
        execute 'select clinicdb.attach_audit($1)' using p_table;
    end if;

    -- Statistics gathered before the columns were set to collect none stay
    -- until removed; only a superuser (or, on 18+, pg_clear_attribute_stats)
    -- can remove them.
    perform clinicdb._forget_statistics(p_table);

    -- The time and login come from the column defaults, evaluated once for
    -- the inserted row: Citus refuses a function call in DO UPDATE SET on a
    -- reference table, which the registry is there.
    insert into clinicdb.protected_tables (table_name) values (p_table)
    on conflict (table_name) do update set protected_at = excluded.protected_at, protected_by = excluded.protected_by;

    -- On a Citus coordinator whose layer is already distributed: the
    -- row-level audit capture (sql/functions/citus_profile.sql).
    if v_citus then
        execute 'select clinicdb._citus_audit_table($1)' using p_table;
        if v_ddl_propagation is not null then
            perform set_config('citus.enable_ddl_propagation', v_ddl_propagation, true);
        end if;
    end if;
end
$$;
comment on function clinicdb.protect_table(regclass) is
    'clinicdb: make a table with a clinic_id column tenant-isolated (forced RLS, the standard policies). Idempotent.';
grant execute on function clinicdb.protect_table(regclass) to clinicdb_owner;
