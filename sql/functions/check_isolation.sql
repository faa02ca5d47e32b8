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
