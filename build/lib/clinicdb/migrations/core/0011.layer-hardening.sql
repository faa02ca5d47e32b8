-- 0011.layer-hardening: The layer's own tables under forced row level security or owner-only privileges, and
-- check_isolation() reporting any that is neither; no planner statistics on PHI, encrypted and blind-
-- index columns; MAINTAIN (17+) revoked and reported; the audit sequence out of the app's and staff's
-- reach and access rows only for rows the caller can see; encrypted columns masked in the audit trail,
-- so decrypting never writes plaintext into it (#13).
-- depends: 0010.protect-report
--
-- Frozen: the SQL below is what this migration runs, copied from sql/functions/protect_table.sql,
-- sql/functions/check_isolation.sql, sql/functions/encrypt_column.sql, sql/functions/log_access.sql,
-- sql/functions/secure_layer_table.sql, sql/policies/tenant_policies.sql, sql/schema/layer_tables.sql
-- when it was written. migrations/migrations.lock pins it: change sql/ and add a new migration instead
-- of editing this file.

set local role clinicdb_owner;
-- ---- sql/functions/protect_table.sql ----
-- clinicdb.protect_table(regclass): make a table with a clinic_id column
-- tenant-isolated. Idempotent: safe to run again after a change to the
-- standard policy, which it then re-applies.
--
-- clinicdb.protect_table_sql(regclass) returns the exact statements, so a DBA
-- can review them (`clinicdb sql policies TABLE`); protect_table runs those
-- same statements and nothing else, then records the table in the registry.

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
begin
    select a.attnotnull, a.attgenerated, format_type(a.atttypid, a.atttypmod) as type_name
      into v_col
      from pg_attribute a
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
    if v_col.attgenerated = '' then
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
begin
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

    insert into clinicdb.protected_tables (table_name) values (p_table)
    on conflict (table_name) do update set protected_at = now(), protected_by = session_user;
end
$$;
comment on function clinicdb.protect_table(regclass) is
    'clinicdb: make a table with a clinic_id column tenant-isolated (forced RLS, the standard policies). Idempotent.';
grant execute on function clinicdb.protect_table(regclass) to clinicdb_owner;
-- ---- sql/functions/check_isolation.sql ----
-- clinicdb.check_isolation(): prove, in a live database, that every table
-- with a clinic_id column in the application schemas is protected, and that
-- nothing beside the policies opens a way around them. One row per finding;
-- no rows means protected. `clinicdb check` prints these and exits 1 on any.
--
-- The standard policies are compared with those of clinicdb.policy_reference,
-- a table protected from the same clinicdb.tenant_policies rows, through
-- pg_get_expr: a policy edited by hand on any table shows up as a finding.

create table if not exists clinicdb.policy_reference (clinic_id uuid not null);
comment on table clinicdb.policy_reference is
    'clinicdb: never holds rows; carries the standard tenant policies so check_isolation() can compare against them.';
revoke all on clinicdb.policy_reference from public;

create or replace function clinicdb.check_isolation(p_schemas text[] default null)
returns table (table_name text, finding text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_schemas text[];
    v_encrypted text[] := '{}';
begin
    -- Encrypted columns (with their ciphertext and blind index) as 'table oid.column',
    -- once the encryption layer is installed.
    if to_regclass('clinicdb.encrypted_columns') is not null then
        execute 'select coalesce(array_agg(ec.table_name::oid::text || ''.'' || c), ''{}'')
                   from clinicdb.encrypted_columns ec,
                        unnest(array[ec.column_name, ec.column_name || ''_ciphertext'', ec.column_name || ''_blind_index'']) c'
           into v_encrypted;
    end if;
    -- Application schemas: every non-system schema except the layer's own
    -- (its tables have their own tests) unless the caller names them.
    select coalesce(p_schemas, array_agg(n.nspname::text)) into v_schemas
      from pg_namespace n
     where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast', 'clinicdb', 'clinicdb_tap')
       and n.nspname not like 'pg\_temp\_%' and n.nspname not like 'pg\_toast\_temp\_%';

    return query
    with tenant_tables as (
        -- Names are always schema-qualified, whatever the caller's search_path.
        select c.oid as relid, format('%I.%I', n.nspname, c.relname) as name, c.relrowsecurity, c.relforcerowsecurity,
               c.relowner, c.relkind, a.attnotnull
          from pg_class c
          join pg_namespace n on n.oid = c.relnamespace
          join pg_attribute a on a.attrelid = c.oid and a.attname = 'clinic_id' and not a.attisdropped
         -- Partitions included: a query that names a partition directly is
         -- checked against the partition's own policies, not its parent's.
         -- The layer's own tenant tables (clinicdb.clinics) are held to the
         -- same standard whichever schemas are swept.
         where (n.nspname = any (v_schemas)
                or (n.nspname = 'clinicdb' and exists (select 1 from clinicdb.protected_tables pt where pt.table_name = c.oid)))
           and c.relkind in ('r', 'p')
    ),
    reference as (
        select p.polname, p.polcmd, p.polpermissive, p.polroles,
               pg_get_expr(p.polqual, p.polrelid) as qual,
               pg_get_expr(p.polwithcheck, p.polrelid) as withcheck
          from pg_policy p
         where p.polrelid = 'clinicdb.policy_reference'::regclass
    ),
    findings as (
        select t.name, 'row level security is not enabled'::text as finding
          from tenant_tables t where not t.relrowsecurity
        union all
        select t.name, 'row level security is not forced (the owner bypasses it)'
          from tenant_tables t where not t.relforcerowsecurity
        union all
        select t.name, 'clinic_id allows NULL'
          from tenant_tables t where not t.attnotnull
        union all
        select t.name, 'not registered by clinicdb.protect_table()'
          from tenant_tables t
         where not exists (select 1 from clinicdb.protected_tables pt where pt.table_name = t.relid)
        union all
        select t.name, format('standard policy %s is missing', r.polname)
          from tenant_tables t cross join reference r
         where not exists (select 1 from pg_policy p where p.polrelid = t.relid and p.polname = r.polname)
        union all
        select t.name, format('policy %s differs from the standard definition', p.polname)
          from tenant_tables t
          join pg_policy p on p.polrelid = t.relid
          join reference r on r.polname = p.polname
         where p.polcmd <> r.polcmd or p.polpermissive <> r.polpermissive or p.polroles <> r.polroles
            or pg_get_expr(p.polqual, p.polrelid) is distinct from r.qual
            or pg_get_expr(p.polwithcheck, p.polrelid) is distinct from r.withcheck
        union all
        select t.name, format('extra permissive policy %s widens the tenant policy', p.polname)
          from tenant_tables t
          join pg_policy p on p.polrelid = t.relid
         where p.polpermissive and p.polname not in (select r.polname from reference r)
        union all
        select t.name, format('owned by %s, which holds an application or staff role', pg_get_userbyid(t.relowner))
          from tenant_tables t
         -- An owner can disable RLS; it must not be a role the app or staff
         -- can act as. (A superuser counts as a member of every role, but no
         -- application role can become one: that is checked below.)
         where not (select r.rolsuper from pg_roles r where r.oid = t.relowner)
           and (pg_has_role(t.relowner, 'clinicdb_app', 'MEMBER')
                or pg_has_role(t.relowner, 'clinicdb_readonly', 'MEMBER')
                or pg_has_role(t.relowner, 'clinicdb_staff', 'MEMBER'))
        union all
        -- A foreign key between tenant tables that does not carry clinic_id
        -- lets a row point at another clinic's row. Referential checks run
        -- below row level security, so inserting such a row also confirms
        -- that the other clinic's key exists, and ON DELETE/UPDATE actions
        -- reach across clinics. The clinic_id -> clinics (id) key is fine.
        select t.name, format('foreign key %s references %s without clinic_id: a row can point at another clinic''s row',
                              con.conname, con.confrelid::regclass)
          from tenant_tables t
          join pg_constraint con on con.conrelid = t.relid and con.contype = 'f' and con.conparentid = 0
          join pg_attribute la on la.attrelid = t.relid and la.attname = 'clinic_id' and not la.attisdropped
          join pg_attribute ra on ra.attrelid = con.confrelid and ra.attname = 'clinic_id' and not ra.attisdropped
         where con.conkey <> array[la.attnum]
           and not exists (select 1 from unnest(con.conkey, con.confkey) k(l, r) where k.l = la.attnum and k.r = ra.attnum)
        union all
        -- A unique (or exclusion) index without clinic_id is checked across
        -- every clinic: inserting a value another clinic already has fails,
        -- which tells the inserter that value exists (an SSN, an e-mail).
        -- Keys made only of uuid columns (random ids) are left out: probing
        -- them needs the id already (docs: residual risks).
        select t.name, format('unique index %s leaves clinic_id out: a value another clinic has is refused, which reveals it',
                              i.indexrelid::regclass)
          from tenant_tables t
          join pg_index i on i.indrelid = t.relid and (i.indisunique or i.indisexclusion)
          join pg_attribute la on la.attrelid = t.relid and la.attname = 'clinic_id' and not la.attisdropped
         where not (la.attnum = any (i.indkey::int2[]))
           and (i.indexprs is not null
                or exists (select 1 from unnest(i.indkey::int2[]) k(attnum)
                             join pg_attribute a on a.attrelid = t.relid and a.attnum = k.attnum
                            where a.atttypid <> 'uuid'::regtype))
        union all
        -- TRUNCATE, REFERENCES, TRIGGER and (17+) MAINTAIN are not covered by RLS.
        select t.name, format('%s holds %s, which row level security does not cover',
                              case when acl.grantee = 0 then 'public' else pg_get_userbyid(acl.grantee) end,
                              acl.privilege_type)
          from tenant_tables t
          cross join lateral aclexplode((select c.relacl from pg_class c where c.oid = t.relid)) acl
         where acl.privilege_type in ('TRUNCATE', 'REFERENCES', 'TRIGGER', 'MAINTAIN')
           and acl.grantee <> t.relowner
        union all
        -- Statistics of PHI and encrypted columns describe every clinic's
        -- values, and EXPLAIN estimates show them to anyone who may query.
        select t.name, format('column %I is PHI but collects planner statistics (EXPLAIN estimates reveal other '
                              'clinics'' values): run clinicdb.protect_table(%L) again', a.attname, t.name)
          from tenant_tables t
          join pg_attribute a on a.attrelid = t.relid and a.attnum > 0 and not a.attisdropped
         where coalesce(a.attstattarget, -1) <> 0
           and (exists (select 1 from clinicdb.phi_columns pc where pc.table_name = t.relid and pc.column_name = a.attname)
                or t.relid::oid::text || '.' || a.attname = any (v_encrypted))
        union all
        -- A view that is not security_invoker reads the table with its
        -- owner's rights; if that owner bypasses RLS, so does every reader.
        -- A materialized view stores whatever its refresher could see.
        select t.name, format('%s %s reads it %s',
                              case v.relkind when 'm' then 'materialized view' else 'view' end,
                              (select format('%I.%I', vn.nspname, v.relname) from pg_namespace vn where vn.oid = v.relnamespace),
                              case v.relkind when 'm' then 'and stores rows outside the policy'
                                   else 'without security_invoker' end)
          from tenant_tables t
          join pg_depend d on d.refobjid = t.relid and d.classid = 'pg_rewrite'::regclass
          join pg_rewrite rw on rw.oid = d.objid
          join pg_class v on v.oid = rw.ev_class and v.oid <> t.relid
         where v.relkind = 'm'
            or (v.relkind = 'v' and not coalesce('security_invoker=true' = any (v.reloptions)
                                                  or 'security_invoker=on' = any (v.reloptions), false))
    )
    select distinct f.name, f.finding from findings f
    union all
    -- The layer's own tables: each one either has row level security
    -- enabled and forced (its policies say who reads what) or grants
    -- nothing to anyone but its owner (sql/schema/layer_tables.sql).
    select format('%I.%I', n.nspname, c.relname),
           'table of the clinicdb schema has neither forced row level security nor owner-only privileges'
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'clinicdb' and c.relkind in ('r', 'p')
       and not (c.relrowsecurity and c.relforcerowsecurity)
       and exists (select 1 from aclexplode(c.relacl) acl where acl.grantee <> c.relowner)
    union all
    -- The application path must never be able to skip the policies.
    select r.rolname::text, 'role holds an application or staff role and bypasses row level security'
      from pg_roles r
     where (r.rolsuper or r.rolbypassrls)
       and r.rolname not in ('clinicdb_owner')
       and (exists (select 1 from pg_auth_members m join pg_roles g on g.oid = m.roleid
                     where m.member = r.oid
                       and g.rolname in ('clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor')))
    union all
    select r.rolname::text, 'clinicdb group role is SUPERUSER or BYPASSRLS'
      from pg_roles r
     where r.rolname in ('clinicdb_owner', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor')
       and (r.rolsuper or r.rolbypassrls)
    union all
    -- CREATEROLE can grant membership in any role that is not a superuser:
    -- clinicdb_owner, clinicdb_app, another staff login. Not on this path.
    -- REPLICATION lets a login stream the WAL or take a base backup: every
    -- clinic's rows, below any policy.
    select r.rolname::text, case when r.rolcreaterole
                                 then 'role on the application path has CREATEROLE and can grant itself any role'
                                 else 'role on the application path has REPLICATION and can stream every clinic''s data'
                            end
      from pg_roles r
     where (r.rolcreaterole or r.rolreplication) and not r.rolsuper
       and (pg_has_role(r.oid, 'clinicdb_app', 'MEMBER') or pg_has_role(r.oid, 'clinicdb_readonly', 'MEMBER')
            or pg_has_role(r.oid, 'clinicdb_staff', 'MEMBER') or pg_has_role(r.oid, 'clinicdb_auditor', 'MEMBER'))
    union all
    -- SET ROLE escapes: a role on the application path (the app, readonly,
    -- staff, auditor groups and their members) that also holds -- directly or
    -- through other roles -- a role with another way in. SET ROLE needs only
    -- membership, so holding is enough, whatever INHERIT says. grant_staff
    -- refuses these at grant time; this catches a GRANT made afterwards.
    select h.member_name::text, format('can SET ROLE to %s, which %s', h.role_name, h.why)
      from (
        select m.rolname as member_name, g.rolname as role_name,
               case
                   when g.rolsuper or g.rolbypassrls then 'bypasses row level security'
                   when g.rolcreaterole then 'has CREATEROLE and can grant itself any role, clinicdb_owner included'
                   -- Predefined roles whose rights sit below row level security.
                   when g.rolname in ('pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program')
                       then 'reads or writes the server''s files (table files included) or runs programs as the server'
                   when g.rolname in ('pg_read_all_stats', 'pg_monitor')
                       then 'shows the text of every session''s queries, other clinics'' values included'
                   when g.rolname = 'pg_write_all_data'
                       then 'writes every table, the layer''s registries included'
                   -- PostgreSQL 17+: VACUUM, ANALYZE, CLUSTER, REINDEX, REFRESH
                   -- and LOCK on every table.
                   when g.rolname = 'pg_maintain'
                       then 'may LOCK every table (blocking every clinic) and ANALYZE it'
                   when g.rolname = 'clinicdb_owner'
                     or exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                                 where c.relowner = g.oid and (n.nspname = 'clinicdb' or n.nspname = any (v_schemas)))
                     or exists (select 1 from pg_namespace n where n.nspowner = g.oid and n.nspname = 'clinicdb')
                     or exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                                 where p.proowner = g.oid and n.nspname = 'clinicdb')
                       then 'owns tables or functions of the layer and can turn its protection off'
                   when pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER')
                    and g.rolname in ('clinicdb_app', 'clinicdb_readonly')
                       then 'lets a staff login choose any clinic with app.clinic_id'
                   when pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER') and g.rolname = 'clinicdb_auditor'
                       then 'reads the audit data of every clinic'
                   when pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER') and g.rolname <> 'clinicdb_staff'
                    and pg_has_role(g.oid, 'clinicdb_staff', 'MEMBER')
                       then 'is another staff login, mapped to its own clinics'
                   when pg_has_role(m.oid, 'clinicdb_auditor', 'MEMBER')
                    and (g.rolname in ('clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff')
                         or pg_has_role(g.oid, 'clinicdb_staff', 'MEMBER'))
                       then 'gives the auditor the rows of a clinic'
               end as why
          from (
            -- Every (member, role held) pair, through any chain of grants.
            with recursive held(member, roleid) as (
                select am.member, am.roleid from pg_auth_members am
                union
                select held.member, am.roleid from held join pg_auth_members am on am.member = held.roleid
            )
            select held.member, held.roleid from held
          ) pairs
          join pg_roles m on m.oid = pairs.member
          join pg_roles g on g.oid = pairs.roleid
         where not m.rolsuper and m.oid <> g.oid
           and (pg_has_role(m.oid, 'clinicdb_app', 'MEMBER') or pg_has_role(m.oid, 'clinicdb_readonly', 'MEMBER')
                or pg_has_role(m.oid, 'clinicdb_staff', 'MEMBER') or pg_has_role(m.oid, 'clinicdb_auditor', 'MEMBER'))
      ) h
     where h.why is not null
    union all
    -- SECURITY DEFINER functions the application path may call run as their
    -- owner: an owner that bypasses RLS hands its rows to every caller, and a
    -- body resolved at run time through a search_path that does not end in
    -- pg_temp (pg_temp is searched FIRST for tables when not named) can be
    -- pointed at the caller's temporary objects. SQL-standard bodies
    -- (begin atomic) are bound at creation and need no pinned path.
    select f.signature, f.why
      from (
        select p.oid::regprocedure::text as signature,
               case
                   when o.rolsuper or o.rolbypassrls
                       then format('SECURITY DEFINER function owned by %s, which bypasses row level security, '
                                   'is executable by the application or staff', o.rolname)
                   when p.prosqlbody is null
                    and not exists (select 1 from unnest(p.proconfig) c
                                     where c ~ '^search_path=' and c ~ 'pg_temp"?$')
                       then 'SECURITY DEFINER function without a pinned search_path ending in pg_temp '
                            'is executable by the application or staff'
               end as why
          from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
          join pg_roles o on o.oid = p.proowner
         where p.prosecdef
           and n.nspname not in ('pg_catalog', 'information_schema')
           and (has_function_privilege('clinicdb_app', p.oid, 'EXECUTE')
                or has_function_privilege('clinicdb_readonly', p.oid, 'EXECUTE')
                or has_function_privilege('clinicdb_staff', p.oid, 'EXECUTE')
                or has_function_privilege('clinicdb_auditor', p.oid, 'EXECUTE'))
      ) f
     where f.why is not null
    order by 1, 2;

    -- Mappings left behind by a dropped role or a revoked membership grant
    -- nothing (current_clinic_id matches name and oid) but are clutter that
    -- hides who may act where; report them. Only callers that
    -- can read every mapping (the owner, DBAs) can check; others skip it.
    if has_table_privilege('clinicdb.staff_members', 'select')
       and (pg_has_role('clinicdb_owner', 'MEMBER')
            or (select rolsuper or rolbypassrls from pg_roles where rolname = current_user)) then
        return query
        select sm.role_name::text,
               case when r.oid is null
                    then 'staff mapping of a role that no longer exists (or was recreated): run clinicdb.revoke_staff'
                    else 'staff mapping of a role that is not in clinicdb_staff: granting the group would revive it'
               end
          from (select distinct s.role_name, s.role_oid from clinicdb.staff_members s) sm
          left join pg_roles r on r.rolname = sm.role_name and r.oid = sm.role_oid
         where r.oid is null or not pg_has_role(r.oid, 'clinicdb_staff', 'MEMBER')
         order by 1;
    end if;
end
$$;
comment on function clinicdb.check_isolation(text[]) is
    'clinicdb: findings that break tenant isolation in the application schemas (tables named schema.table); no rows means every clinic_id table is protected.';
grant execute on function clinicdb.check_isolation(text[]) to clinicdb_owner, clinicdb_auditor;
-- ---- sql/functions/encrypt_column.sql ----
-- Declaring a column encrypted, and what that generates.
--
-- clinicdb.encrypt_column('public.patients', 'ssn', p_blind_index => true):
--   * patients.ssn stays, as the column the application writes plaintext
--     into (insert, update, COPY: every path). A BEFORE trigger encrypts it
--     into ssn_ciphertext (and ssn_blind_index) and sets ssn to NULL, and a
--     CHECK constraint proves no plaintext is ever stored in it.
--   * public.patients_decrypted, a security_invoker view, gives every column
--     with ssn decrypted for the clinic in force, under the same name.
-- Why a write slot beside a bytea column (and not the column itself turned
-- into ciphertext): existing writers keep working unchanged and cannot store
-- plaintext by accident; bytea keeps decryption to one HMAC and one AES call
-- per value (text envelopes would need base64 decoding several times per
-- row). The cost: reading patients.ssn directly gives NULL; read the view.
-- docs/encryption.md discusses the choice.
--
-- clinicdb.encryption_sql(table) returns the generated statements, for
-- review (`clinicdb keys sql TABLE`); encrypt_column runs exactly those.

create or replace function clinicdb._label_prefix_literal(p_label text)
returns text
language sql
immutable
parallel safe
return quote_literal('\x' || encode(int4send(octet_length(p_label)) || convert_to(p_label, 'UTF8'), 'hex')) || '::bytea';

-- encrypt_column adds columns and decrypt_column drops them: an audited
-- table's generated capture functions are regenerated from its columns
-- (attach_audit), so they never name a column the table lacks.
create or replace function clinicdb._refresh_audit(p_table regclass)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if exists (select 1 from pg_trigger where tgrelid = p_table and tgname = 'clinicdb_audit_update') then
        perform clinicdb.attach_audit(p_table);
    end if;
end
$$;
comment on function clinicdb._refresh_audit(regclass) is
    'clinicdb: regenerate an audited table''s capture functions after encrypt_column() or decrypt_column() changed its columns.';
revoke execute on function clinicdb._refresh_audit(regclass) from public;

create or replace function clinicdb.encryption_sql(p_table regclass)
returns setof text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $body$
declare
    v_schema name;
    v_rel name;
    v_owner name;
    v_table text;
    v_function text;
    v_view text;
    v_row_key name;
    v_col record;
    v_body text := '';
    v_any text := '';
    v_key_check text := '';
    v_update_of text := '';
    v_columns text := '';
    v_attr record;
    v_enc record;
begin
    select n.nspname, c.relname, pg_get_userbyid(c.relowner) into v_schema, v_rel, v_owner
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;
    v_table := format('%I.%I', v_schema, v_rel);
    v_function := format('clinicdb.%I', left('seal_' || v_schema || '_' || v_rel, 63));
    v_view := format('%I.%I', v_schema, left(v_rel || '_decrypted', 63));

    if not exists (select 1 from clinicdb.encrypted_columns where table_name = p_table) then
        return next format('drop view if exists %s', v_view);
        return next format('drop trigger if exists clinicdb_encrypt on %s', v_table);
        return next format('drop function if exists %s()', v_function);
        return;
    end if;

    for v_col in
        select ec.column_name as c, ec.column_name || '_ciphertext' as ct, ec.column_name || '_blind_index' as bi,
               ec.label, ec.blind_index, ec.row_key
          from clinicdb.encrypted_columns ec where ec.table_name = p_table order by ec.column_name
    loop
        v_row_key := v_col.row_key;
        v_any := v_any || format('%s new.%I is not null', case when v_any = '' then '' else ' or' end, v_col.c);
        v_key_check := v_key_check || format('%s new.%I is not null', case when v_key_check = '' then '' else ' or' end, v_col.ct);
        v_update_of := v_update_of || format('%I, %I, ', v_col.c, v_col.ct);
        v_body := v_body || format($f$
    if new.%1$I is not null then
        v_iv := clinicdb._random_bytes(16);
        v_body := clinicdb._seal_body(new.%1$I, v_version, v_iv, substring(v_keys from 1 for 32));
        new.%2$I := clinicdb._seal_tag(v_body, %3$s || uuid_send(new.%4$I), substring(v_keys from 33 for 32));$f$,
            v_col.c, v_col.ct, clinicdb._label_prefix_literal(v_col.label), v_col.row_key);
        if v_col.blind_index then
            v_body := v_body || format($f$
        new.%1$I := clinicdb._blind_index_value(new.%2$I, %3$s, substring(v_keys from 65 for 32));$f$,
                v_col.bi, v_col.c, clinicdb._label_prefix_literal(v_col.label));
        end if;
        v_body := v_body || format($f$
        new.%1$I := null;$f$, v_col.c);
        if v_col.blind_index then
            v_body := v_body || format($f$
    elsif new.%1$I is null then
        new.%2$I := null;$f$, v_col.ct, v_col.bi);
        end if;
        v_body := v_body || E'\n    end if;';
    end loop;

    return next format($f$create or replace function %1$s()
returns trigger
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
-- Generated by clinicdb.encryption_sql('%2$s'): do not edit; declare columns
-- with clinicdb.encrypt_column() and it is generated again.
-- Plaintext written into an encrypted column is encrypted into its
-- _ciphertext column and removed; NULL means "unchanged".
declare
    v_cache text;
    v_keys bytea;
    v_version integer;
    v_iv bytea;
    v_body bytea;
begin
    if tg_op = 'UPDATE' and new.%3$I is distinct from old.%3$I and (%4$s) then
        raise exception 'the %3$s of a %2$s row holding encrypted values cannot change'
            using errcode = 'check_violation', hint = 'encrypted values are bound to their row; insert a new row instead';
    end if;
    if %5$s then
        v_cache := current_setting('clinicdb.write_keys', true);
        if v_cache is null or left(v_cache, 36) is distinct from new.clinic_id::text
           or split_part(v_cache, '/', 2) <> hashtext(coalesce(current_setting('app.master_key', true), ''))::text then
            v_cache := clinicdb._load_write_keys(new.clinic_id, %6$L);
        end if;
        v_version := split_part(v_cache, '/', 3)::integer;
        v_keys := decode(split_part(v_cache, '/', 4), 'hex');
    end if;%7$s
    return new;
end
$fn$$f$, v_function, v_table, v_row_key, v_key_check, v_any, v_table, v_body);
    return next format('alter function %s() owner to %I', v_function, v_owner);
    return next format('comment on function %s() is %L', v_function,
                       format('clinicdb: encrypts the encrypted columns of %s on write (generated).', v_table));
    return next format('drop trigger if exists clinicdb_encrypt on %s', v_table);
    return next format('create trigger clinicdb_encrypt before insert or update of %s%I on %s '
                       'for each row execute function %s()', v_update_of, v_row_key, v_table, v_function);

    -- The decrypting view: every column in table order, each encrypted column
    -- decrypted under its own name, ciphertext left out.
    for v_attr in
        select a.attname from pg_attribute a
         where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped order by a.attnum
    loop
        select ec.column_name, ec.label, ec.row_key into v_enc
          from clinicdb.encrypted_columns ec where ec.table_name = p_table and ec.column_name = v_attr.attname;
        if found then
            v_columns := v_columns || format(E',\n       clinicdb._open(t.%I, %s || uuid_send(t.%I), %L, k.clinic_id, '
                                             'k.enc_keys, k.mac_keys, k.problem) as %I',
                                             v_attr.attname || '_ciphertext', clinicdb._label_prefix_literal(v_enc.label),
                                             v_enc.row_key, v_enc.label, v_attr.attname);
        elsif not exists (select 1 from clinicdb.encrypted_columns ec
                           where ec.table_name = p_table and ec.column_name || '_ciphertext' = v_attr.attname) then
            v_columns := v_columns || format(E',\n       t.%I', v_attr.attname);
        end if;
    end loop;
    return next format('drop view if exists %s', v_view);
    return next format(E'create view %s with (security_invoker = true) as\nselect %s\n  from %s t\n'
                       '  cross join clinicdb._statement_keyring() k',
                       v_view, substr(v_columns, 10), v_table);
    return next format('alter view %s owner to %I', v_view, v_owner);
    return next format('revoke all on %s from public, clinicdb_app, clinicdb_readonly, clinicdb_staff', v_view);
    return next format('grant select on %s to clinicdb_app, clinicdb_readonly, clinicdb_staff', v_view);
    return next format('comment on view %s is %L', v_view,
                       format('clinicdb: %s with its encrypted columns decrypted for the clinic in force '
                              '(needs app.master_key); generated, security_invoker.', v_table));
end
$body$;
comment on function clinicdb.encryption_sql(regclass) is
    'clinicdb: the statements (trigger function, trigger, decrypting view) encrypt_column() runs for a table, for review.';
revoke execute on function clinicdb.encryption_sql(regclass) from public;

-- Declare a text column of a protected table encrypted; idempotent. Existing
-- plaintext is encrypted on the spot, which needs the master key and a role
-- that sees every clinic (the migration of the reference schema, or a DBA);
-- clinics with plaintext and no key get their first key version.
create or replace function clinicdb.encrypt_column(
    p_table regclass, p_column name, p_blind_index boolean default false, p_row_key name default 'id'
)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_schema name;
    v_rel name;
    v_type text;
    v_label text;
    v_statement text;
    v_constraint name;
    v_clinic uuid;
    v_remaining bigint;
begin
    select n.nspname, c.relname into v_schema, v_rel
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;
    if not exists (select 1 from clinicdb.protected_tables where table_name = p_table) then
        raise exception 'table % is not protected', p_table
            using errcode = 'object_not_in_prerequisite_state', hint = 'run clinicdb.protect_table() on it first';
    end if;
    select format_type(a.atttypid, a.atttypmod) into v_type
      from pg_attribute a where a.attrelid = p_table and a.attname = p_column and not a.attisdropped;
    if v_type is null then
        raise exception 'table % has no column %', p_table, p_column using errcode = 'undefined_column';
    end if;
    if v_type not in ('text', 'character varying') and v_type not like 'character varying(%' then
        raise exception 'column %.% is %; only text columns can be encrypted', p_table, p_column, v_type
            using errcode = 'datatype_mismatch', hint = 'store the value as text';
    end if;
    if (select format_type(a.atttypid, a.atttypmod) from pg_attribute a
         where a.attrelid = p_table and a.attname = p_row_key and not a.attisdropped) is distinct from 'uuid' then
        raise exception 'table % has no uuid column % to bind encrypted values to their row', p_table, p_row_key
            using errcode = 'undefined_column', hint = 'pass p_row_key => the table''s uuid primary key column';
    end if;

    v_label := format('%s.%s.%s', v_schema, v_rel, p_column);
    insert into clinicdb.encrypted_columns (table_name, column_name, label, blind_index, row_key)
    values (p_table, p_column, v_label, p_blind_index, p_row_key)
    on conflict (table_name, column_name) do update
        set blind_index = clinicdb.encrypted_columns.blind_index or excluded.blind_index;
    select ec.label, ec.blind_index into v_label, p_blind_index
      from clinicdb.encrypted_columns ec where ec.table_name = p_table and ec.column_name = p_column;

    execute format('alter table %s add column if not exists %I bytea', p_table, p_column || '_ciphertext');
    execute format('comment on column %s.%I is %L', p_table, p_column || '_ciphertext',
                   format('clinicdb: %s encrypted (AES-256-CBC + HMAC-SHA256, key version in bytes 2-3); '
                          'read it through %s_decrypted.', p_column, v_rel));
    if p_blind_index then
        execute format('alter table %s add column if not exists %I bytea', p_table, p_column || '_blind_index');
        execute format('create index if not exists %I on %s (clinic_id, %I)',
                       left(v_rel || '_' || p_column || '_blind_index_idx', 63), p_table, p_column || '_blind_index');
        execute format('comment on column %s.%I is %L', p_table, p_column || '_blind_index',
                       format('clinicdb: keyed blind index (HMAC) of %s for equality lookups: '
                              '= any (clinicdb.blind_index(%L, %L, $1)).', p_column, p_table::text, p_column));
    end if;

    for v_statement in select s from clinicdb.encryption_sql(p_table) s loop
        execute v_statement;
    end loop;

    -- Planner statistics would describe every clinic's values (ciphertexts
    -- and blind indexes included: a blind index repeats with its value).
    execute format('alter table %s alter column %I set statistics 0, alter column %I set statistics 0', p_table,
                   p_column, p_column || '_ciphertext');
    if p_blind_index then
        execute format('alter table %s alter column %I set statistics 0', p_table, p_column || '_blind_index');
    end if;
    perform clinicdb._forget_statistics(p_table);
    -- The write slot only ever holds plaintext on its way in: the trail
    -- records "[masked]" for it, never the value (the ciphertext is recorded).
    perform clinicdb.set_audit_column(p_table, p_column, 'mask');

    -- Existing plaintext: every clinic holding some needs a key first.
    for v_clinic in execute format(
        'select distinct t.clinic_id from %s t where t.%I is not null
            and not exists (select 1 from clinicdb.clinic_keys k where k.clinic_id = t.clinic_id and k.state = ''active'')',
        p_table, p_column)
    loop
        perform clinicdb.rotate_clinic_key(v_clinic);
    end loop;
    execute format('update %s set %I = %I where %I is not null', p_table, p_column, p_column, p_column);

    v_constraint := left(v_rel || '_' || p_column || '_plaintext_never_stored', 63);
    if not exists (select 1 from pg_constraint where conrelid = p_table and conname = v_constraint) then
        begin
            execute format('alter table %s add constraint %I check (%I is null)', p_table, v_constraint, p_column);
        exception when check_violation then
            execute format('select count(*) from %s where %I is not null', p_table, p_column) into v_remaining;
            raise exception 'plaintext remains in %.% that this role cannot see or encrypt', p_table, p_column
                using errcode = 'object_not_in_prerequisite_state',
                      hint = 'run clinicdb.encrypt_column() as a superuser with app.master_key set';
        end;
    end if;
    -- The column keeps its own comment (the PHI inventory's); the constraint says how it works.
    execute format('comment on constraint %I on %s is %L', v_constraint, p_table,
                   format('clinicdb: %s is write-only. Plaintext written into it is encrypted into %s_ciphertext and '
                          'the column is set to NULL; read it from %s_decrypted.', p_column, p_column, v_rel));
    -- New columns: the audit capture functions are regenerated to name them.
    perform clinicdb._refresh_audit(p_table);
    insert into clinicdb.key_events (event, detail)
    values ('encrypt_column', jsonb_build_object('table', p_table::text, 'column', p_column,
                                                 'blind_index', p_blind_index));
end
$$;
comment on function clinicdb.encrypt_column(regclass, name, boolean, name) is
    'clinicdb: store a text column of a protected table encrypted (write slot + ciphertext + optional blind index + _decrypted view).';
revoke execute on function clinicdb.encrypt_column(regclass, name, boolean, name) from public;

-- The reverse, for migration rollbacks: plaintext back into the column,
-- ciphertext and blind index dropped. Needs the master key whenever a
-- ciphertext exists; values of shredded clinics become NULL (they are
-- unrecoverable by design), with a notice.
create or replace function clinicdb.decrypt_column(p_table regclass, p_column name)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_label text;
    v_row_key name;
    v_rel name := (select relname from pg_class where oid = p_table);
    v_statement text;
    v_clinic uuid;
    v_ring clinicdb.keyring;
    v_ct name := p_column || '_ciphertext';
begin
    select ec.label, ec.row_key into v_label, v_row_key
      from clinicdb.encrypted_columns ec where ec.table_name = p_table and ec.column_name = p_column;
    if not found then
        return;
    end if;
    delete from clinicdb.encrypted_columns where table_name = p_table and column_name = p_column;
    execute format('alter table %s drop constraint if exists %I', p_table,
                   left(v_rel || '_' || p_column || '_plaintext_never_stored', 63));
    -- Trigger and view go first (the update below must not encrypt again,
    -- and the view depends on the columns dropped below); regenerated last.
    execute format('drop trigger if exists clinicdb_encrypt on %s', p_table);
    execute format('drop view if exists %I.%I', (select n.nspname from pg_class c join pg_namespace n
                                                  on n.oid = c.relnamespace where c.oid = p_table),
                   left(v_rel || '_decrypted', 63));
    -- The plaintext written back must not reach the audit trail, which only
    -- ever held this column's ciphertext: the column stays masked there.
    perform clinicdb.set_audit_column(p_table, p_column, 'mask');
    for v_clinic in execute format('select distinct clinic_id from %s where %I is not null', p_table, v_ct) loop
        v_ring := clinicdb._clinic_keyring(v_clinic);
        if v_ring.problem like '%shredded%' then
            raise notice 'clinic %: keys shredded, its % values stay unrecoverable (set to NULL)', v_clinic, v_label;
            execute format('update %s set %I = null where clinic_id = $1', p_table, p_column) using v_clinic;
            continue;
        end if;
        execute format('update %1$s set %2$I = clinicdb._open(%3$I, clinicdb._aad($1, %4$I), $1, $2, $3, $4, $5) '
                       'where clinic_id = $2 and %3$I is not null', p_table, p_column, v_ct, v_row_key)
            using v_label, v_clinic, v_ring.enc_keys, v_ring.mac_keys, v_ring.problem;
    end loop;
    execute format('alter table %s drop column if exists %I, drop column if exists %I', p_table, v_ct,
                   p_column || '_blind_index');
    for v_statement in select s from clinicdb.encryption_sql(p_table) s loop
        execute v_statement;
    end loop;
    -- Dropped columns: an update capture function that still names them
    -- would make every later update of the table fail.
    perform clinicdb._refresh_audit(p_table);
    insert into clinicdb.key_events (event, detail)
    values ('decrypt_column', jsonb_build_object('table', p_table::text, 'column', p_column));
end
$$;
comment on function clinicdb.decrypt_column(regclass, name) is
    'clinicdb: undo encrypt_column(): decrypt values back into the column (needs app.master_key) and drop the rest.';
revoke execute on function clinicdb.decrypt_column(regclass, name) from public;
-- ---- sql/functions/log_access.sql ----
-- clinicdb.log_access(table, ids, purpose): record that PHI was read.
-- Triggers cannot see SELECTs, so the application (through the driver) and
-- staff in psql call this after showing rows: one 'access' row per id, in
-- the same trail and with the same context as changes (clinic, app.user_id,
-- app.request_id, roles, txid, times, client address, application_name).
--
--   select clinicdb.log_access('patients', array['<patient uuid>']::uuid[], 'chart review');
--
-- SECURITY INVOKER on purpose: the row is inserted with the caller's rights
-- through the insert policy of clinicdb.audit_log below, which admits only
-- 'access' rows of the clinic in force naming a row the caller can see, and
-- every context column is filled by its default (the caller is not granted
-- those columns). So a caller can only ever say "I read these rows of my
-- clinic", never write a change row, speak for another clinic or user, or
-- claim to have read a row it cannot see. ids may be of any type (uuid[],
-- text[], bigint[]); untyped literals need a cast. An id that is not a row
-- the caller can see refuses the whole call: nothing is logged.
--
-- The access row's id comes from the trail's sequence through a trigger
-- that runs as the owner: the app and staff hold no right on the sequence,
-- whose nextval would count every clinic's activity. (The ids of a clinic's
-- own audit rows, which it may read, still show gaps: docs/security.md.)

-- The column that names a row of p_table in access rows: its one-column
-- primary key, or the second column of a (clinic_id, key) primary key.
create or replace function clinicdb._access_key_column(p_table regclass)
returns name
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_keys text[] := clinicdb.audit_key_columns(p_table);
begin
    if cardinality(v_keys) = 1 then
        return v_keys[1];
    elsif cardinality(v_keys) = 2 and v_keys[1] = 'clinic_id' then
        return v_keys[2];
    end if;
    raise exception 'table % has no primary key of one column (or clinic_id and one column) to name rows by', p_table
        using errcode = 'invalid_table_definition', hint = 'log_access names rows by such a primary key';
end
$$;
comment on function clinicdb._access_key_column(regclass) is
    'clinicdb: the key column access rows name a table''s rows by (log_access).';
revoke execute on function clinicdb._access_key_column(regclass) from public;
grant execute on function clinicdb._access_key_column(regclass) to clinicdb_app, clinicdb_staff;
grant execute on function clinicdb.audit_key_columns(regclass) to clinicdb_app, clinicdb_staff;

-- True when row_id names a row of the table the CALLER can see (row level
-- security applies: it runs as the caller). row_id is the key as text, or
-- for a (clinic_id, key) table the JSON array the audit trail writes.
create or replace function clinicdb._access_row_visible(p_table text, p_row_id text)
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_table regclass := to_regclass(p_table);
    v_key name;
    v_found boolean;
begin
    if v_table is null or p_row_id is null or not has_table_privilege(v_table, 'SELECT') then
        return false;
    end if;
    v_key := clinicdb._access_key_column(v_table);
    if cardinality(clinicdb.audit_key_columns(v_table)) = 2 then
        execute format('select exists (select 1 from %s t where jsonb_build_array(t.clinic_id, t.%I)::text = $1)',
                       v_table, v_key)
           into v_found using p_row_id;
    else
        execute format('select exists (select 1 from %s t where t.%I::text = $1)', v_table, v_key)
           into v_found using p_row_id;
    end if;
    return v_found;
end
$$;
comment on function clinicdb._access_row_visible(text, text) is
    'clinicdb: whether an access row names a row the caller can see (the insert policy of audit_log checks it).';
revoke execute on function clinicdb._access_row_visible(text, text) from public;
grant execute on function clinicdb._access_row_visible(text, text) to clinicdb_app, clinicdb_staff;

create or replace function clinicdb.log_access(p_table regclass, p_ids anyarray, p_purpose text)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_table text;
    v_key name;
    v_clinic uuid;
    v_all text[];
    v_asked text[];
    v_visible text[];
    v_count integer;
begin
    if p_purpose is null or length(btrim(p_purpose)) = 0 then
        raise exception 'log_access needs a purpose'
            using errcode = 'invalid_parameter_value',
                  hint = 'say why the rows were read, e.g. ''treatment'', ''billing'', ''chart review''';
    end if;
    v_clinic := clinicdb.require_clinic_id();
    if not has_table_privilege(p_table, 'SELECT') then
        raise exception 'you cannot read %, so there is no access of it to log', p_table
            using errcode = 'insufficient_privilege', hint = 'log reads of tables the role may read';
    end if;
    select n.nspname || '.' || c.relname into v_table
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table;
    v_key := clinicdb._access_key_column(p_table);
    select coalesce(array_agg(x::text), '{}') into v_all from unnest(p_ids) as x where x is not null;
    select coalesce(array_agg(distinct x), '{}') into v_asked from unnest(v_all) as x;
    -- The rows the caller can see, as the caller: another clinic's row is not among them.
    execute format('select coalesce(array_agg(t.%I::text), ''{}'') from %s t where t.%I::text = any ($1)',
                   v_key, p_table, v_key)
       into v_visible using v_asked;
    if cardinality(v_visible) < cardinality(v_asked) then
        raise exception '% of % ids are not rows of % you can see: nothing was logged',
                        cardinality(v_asked) - cardinality(v_visible), cardinality(v_asked), v_table
            using errcode = 'insufficient_privilege',
                  hint = 'log only rows your clinic''s query returned';
    end if;
    insert into clinicdb.audit_log (id, table_name, row_id, action, purpose)
    select 0, v_table,
           case when cardinality(clinicdb.audit_key_columns(p_table)) = 2
                then jsonb_build_array(v_clinic, x)::text else x end,
           'access', left(btrim(p_purpose), 500)
      from unnest(v_all) as x;
    get diagnostics v_count = row_count;
    return v_count;
end
$$;
comment on function clinicdb.log_access(regclass, anyarray, text) is
    'clinicdb: record a read of PHI (one audit row per id, action access) for the clinic in force; returns rows logged.';
revoke execute on function clinicdb.log_access(regclass, anyarray, text) from public;
grant execute on function clinicdb.log_access(regclass, anyarray, text) to clinicdb_app, clinicdb_staff;

-- Writes by the app and staff: access rows of their own clinic only, about a
-- row they can see. The context columns are not granted (below), so their
-- defaults always apply; the id the caller gives is replaced by the trigger.
drop policy if exists audit_log_access_insert on clinicdb.audit_log;
create policy audit_log_access_insert on clinicdb.audit_log for insert
    to clinicdb_app, clinicdb_staff
    with check (action = 'access' and old_values is null and new_values is null
                and clinic_id = (select clinicdb.require_clinic_id())
                and clinicdb._access_row_visible(table_name, row_id));

create or replace function clinicdb.audit_access_id()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- The app and staff cannot choose (or learn in advance) an id; the owner
    -- and superusers write rows as they are (restores, tests of the seals).
    if not pg_has_role(clinicdb.audit_acting_role(), 'clinicdb_owner', 'MEMBER')
       and not (select r.rolsuper from pg_roles r where r.rolname = clinicdb.audit_acting_role()) then
        new.id := nextval('clinicdb.audit_log_id_seq');
    end if;
    return new;
end
$$;
comment on function clinicdb.audit_access_id() is
    'clinicdb: gives an access row its id from the trail''s sequence (as the owner; callers hold no sequence right).';
revoke execute on function clinicdb.audit_access_id() from public;
drop trigger if exists clinicdb_audit_access_id on clinicdb.audit_log;
create trigger clinicdb_audit_access_id before insert on clinicdb.audit_log
    for each row when (new.action = 'access') execute function clinicdb.audit_access_id();

grant insert (id, table_name, row_id, action, purpose) on clinicdb.audit_log to clinicdb_app, clinicdb_staff;
revoke usage on sequence clinicdb.audit_log_id_seq from clinicdb_app, clinicdb_staff;
-- ---- sql/functions/secure_layer_table.sql ----
-- clinicdb._secure_layer_table(table, readable): row level security enabled
-- and forced on one of the layer's own tables, with policies that say who
-- reads and writes it. The owner (the layer's functions and migrations) may
-- do anything its privileges allow; with p_readable, every role that holds
-- SELECT reads every row (registries with no clinic data: which columns are
-- PHI, which are encrypted, the key epoch). sql/schema/layer_tables.sql
-- applies it to each table; clinicdb.check_isolation() reports a table of
-- the schema that has neither forced RLS nor owner-only privileges.
create or replace function clinicdb._secure_layer_table(p_table regclass, p_readable boolean)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    execute format('alter table %s enable row level security', p_table);
    execute format('alter table %s force row level security', p_table);
    execute format('drop policy if exists clinicdb_layer_owner on %s', p_table);
    execute format('create policy clinicdb_layer_owner on %s to clinicdb_owner using (true) with check (true)',
                   p_table);
    execute format('drop policy if exists clinicdb_layer_read on %s', p_table);
    if p_readable then
        execute format('create policy clinicdb_layer_read on %s for select using (true)', p_table);
    end if;
end
$$;
comment on function clinicdb._secure_layer_table(regclass, boolean) is
    'clinicdb: force row level security on a table of the layer, with its owner policy (and a read-all policy if readable).';
revoke execute on function clinicdb._secure_layer_table(regclass, boolean) from public;
-- ---- sql/policies/tenant_policies.sql ----
-- THE tenant policy: the one definition every tenant table gets.
--
-- protect_table() creates these four policies from this table's rows,
-- `clinicdb sql policies` prints what protect_table would run, and
-- clinicdb.check_isolation() compares each table's live policies with a
-- reference table protected from these same rows. Change the rule here, once.
--
-- Invariants:
--   * select: a row is visible only while its clinic is in force; with no
--     clinic in force, current_clinic_id() is NULL and nothing is visible.
--   * insert/update/delete: require_clinic_id() raises a clear error when no
--     clinic is in force, so a write never silently does nothing.
--   * update: WITH CHECK too, so a row can never be moved to another clinic.
--   * Each call is wrapped in (select ...): PostgreSQL evaluates it once per
--     statement (an InitPlan), and `clinic_id = $initplan` can use the
--     (clinic_id, ...) indexes. A bare call would run once per row.
create table if not exists clinicdb.tenant_policies (
    command text primary key check (command in ('select', 'insert', 'update', 'delete')),
    policy_name name not null unique,
    using_expr text,
    check_expr text
);
comment on table clinicdb.tenant_policies is
    'clinicdb: the single definition of the tenant policy, one row per command.';

insert into clinicdb.tenant_policies (command, policy_name, using_expr, check_expr) values
    ('select', 'clinicdb_tenant_select',
        'clinic_id = (select clinicdb.current_clinic_id())', null),
    ('insert', 'clinicdb_tenant_insert',
        null, 'clinic_id = (select clinicdb.require_clinic_id())'),
    ('update', 'clinicdb_tenant_update',
        'clinic_id = (select clinicdb.require_clinic_id())',
        'clinic_id = (select clinicdb.require_clinic_id())'),
    ('delete', 'clinicdb_tenant_delete',
        'clinic_id = (select clinicdb.require_clinic_id())', null)
on conflict (command) do update
    set policy_name = excluded.policy_name,
        using_expr = excluded.using_expr,
        check_expr = excluded.check_expr;
-- Reviewers (the auditor) read the definition; nobody else needs it.
grant select on clinicdb.tenant_policies to clinicdb_auditor;
-- ---- sql/schema/layer_tables.sql ----
-- Every table of the clinicdb schema, and who may see its rows. The rule,
-- which clinicdb.check_isolation() enforces for every table of the schema:
-- row level security enabled and forced, with policies that say who reads
-- what, or no privilege for anyone but the owner.
--
--   * Tenant tables -- clinicdb.clinics, clinicdb.clinic_keys and
--     clinicdb.policy_reference -- carry the standard tenant policy
--     (protect_table): each clinic sees its own rows.
--   * clinicdb.audit_log: its own policies (a clinic reads its trail, the
--     auditor every clinic's, the app and staff append access rows; see
--     sql/schema/audit_log.sql and sql/functions/log_access.sql) and the
--     owner's.
--   * clinicdb.staff_members: a staff login reads its own mapping; the owner's.
--   * Registries without clinic data: whoever holds SELECT reads every row.
--   * Owner-only, without row level security: the audit_log partitions
--     (audit_log_default and audit_log_yYYYYmMM). The trail is read through
--     clinicdb.audit_log, whose policies apply; a partition named directly
--     is its owner's alone (ensure_audit_partitions revokes every other
--     privilege), so there is nothing for a policy to decide.
select clinicdb._secure_layer_table('clinicdb.audit_log', false);
select clinicdb._secure_layer_table('clinicdb.staff_members', false);
select clinicdb._secure_layer_table(t::regclass, true)
  from unnest(array['clinicdb.phi_columns', 'clinicdb.tenant_policies', 'clinicdb.protected_tables',
                    'clinicdb.audit_settings', 'clinicdb.audit_capture_state', 'clinicdb.audit_seals',
                    'clinicdb.audit_pruned_months', 'clinicdb.key_epoch', 'clinicdb.key_events',
                    'clinicdb.encrypted_columns', 'clinicdb.reencrypt_progress']) as t;
reset role;
-- ---- migration only ----
set local role clinicdb_owner;
-- Encrypted columns' write slots are masked in the trail (encrypt_column does
-- this from now on; these were encrypted before).
select clinicdb.set_audit_column(ec.table_name, ec.column_name, 'mask')
  from clinicdb.encrypted_columns ec order by ec.table_name::text, ec.column_name;
reset role;
-- As the migrating login (a superuser deletes statistics already stored):
-- every protected table again, for its statistics targets and revokes.
select clinicdb.protect_table(pt.table_name)
  from clinicdb.protected_tables pt
 where pt.table_name <> 'clinicdb.policy_reference'::regclass
 order by pt.table_name::text;
