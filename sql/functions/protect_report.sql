-- Adopting an existing table: what stands in the way, and the SQL that
-- protects it. `clinicdb protect TABLE` prints the first and runs the second;
-- a DBA without Python can do the same from psql:
--
--   select * from clinicdb.protect_report('public.visits');   -- blockers, each with its fix
--   select clinicdb.adopt_table_sql('public.visits');         -- the statements, for review
--
-- Blockers are the things protect_table() cannot decide for you (which
-- clinic a row without one belongs to, how a key should read) and the ones
-- clinicdb.check_isolation() would report right after protecting (a unique
-- key or a foreign key without clinic_id, a view that reads the table with
-- its owner's rights). Rows with blocking = false are done by the adoption
-- SQL itself (owner, grants) or are advice. Both functions only read the
-- catalog (and count rows): no lock stronger than a select's.

create or replace function clinicdb.protect_report(p_table regclass)
returns table (blocker text, detail text, fix text, blocking boolean)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_rel record;
    v_col record;
    v_name text;
    v_count bigint;
    v_row record;
begin
    select c.oid, c.relkind, c.relispartition, pg_get_userbyid(c.relowner) as owner,
           format('%I.%I', n.nspname, c.relname) as qualified
      into v_rel
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.oid = p_table;
    v_name := v_rel.qualified;

    if v_rel.relkind not in ('r', 'p') then
        return query select 'not a table'::text, format('%s is a %s', v_name,
            case v_rel.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'f' then 'foreign table'
                               else 'relation of kind ' || v_rel.relkind end),
            'protect the table it reads from; a view over it needs security_invoker = on'::text, true;
        return;
    end if;
    if v_rel.relispartition then
        return query select 'a partition'::text, format('%s is a partition', v_name),
            format('protect its partitioned table (%s): its partitions are protected with it',
                   (select i.inhparent::regclass::text from pg_inherits i where i.inhrelid = p_table)), true;
        return;
    end if;

    select a.attnum, a.attnotnull, format_type(a.atttypid, a.atttypmod) as type_name
      into v_col
      from pg_attribute a where a.attrelid = p_table and a.attname = 'clinic_id' and not a.attisdropped;
    if not found then
        return query select 'no clinic_id column'::text, format('%s has no clinic_id column', v_name),
            format('alter table %s add column clinic_id uuid references clinicdb.clinics (id); then fill it for '
                   'every row (update %s set clinic_id = ...) and run clinicdb protect again', v_name, v_name), true;
        return;
    end if;
    if v_col.type_name <> 'uuid' then
        return query select 'clinic_id is not a uuid'::text, format('%s.clinic_id is %s', v_name, v_col.type_name),
            format('alter table %s alter column clinic_id type uuid using clinic_id::uuid (clinic ids are the '
                   'uuids of clinicdb.clinics)', v_name), true;
        return;
    end if;

    -- Rows no clinic can see, and rows of a clinic that does not exist.
    execute format('select count(*) from %s where clinic_id is null', p_table) into v_count;
    if v_count > 0 then
        return query select 'rows without a clinic'::text, format('%s rows of %s have no clinic_id', v_count, v_name),
            format('give each its clinic (update %s set clinic_id = ''<clinic uuid>'' where clinic_id is null and '
                   '...) or delete them; clinic_id must be NOT NULL', v_name), true;
    end if;
    -- Only a caller that sees every clinic (clinics has forced RLS) can tell an unknown one.
    if (select r.rolsuper or r.rolbypassrls from pg_roles r where r.rolname = current_user) then
        execute format('select count(*) from %s t where t.clinic_id is not null and not exists '
                       '(select 1 from clinicdb.clinics c where c.id = t.clinic_id)', p_table) into v_count;
    else
        v_count := 0;
    end if;
    if v_count > 0 then
        return query select 'rows of unknown clinics'::text,
            format('%s rows of %s name a clinic_id that is not in clinicdb.clinics', v_count, v_name),
            'create those clinics first (clinicdb clinic add NAME --id UUID) or correct the rows'::text, true;
    end if;

    -- The audit trail names rows by the primary key.
    if not exists (select 1 from pg_index i where i.indrelid = p_table and i.indisprimary) then
        return query select 'no primary key'::text, format('%s has no primary key; audit rows name rows by it', v_name),
            format('alter table %s add primary key (clinic_id, id) -- or the columns that identify a row', v_name), true;
    end if;

    -- Keys and references that cross clinics (the same rules as check_isolation()).
    for v_row in
        select i.indexrelid::regclass::text as index_name, con.conname, con.contype, i.indisprimary,
               (select string_agg(quote_ident(a.attname), ', ' order by k.ord)
                  from unnest(i.indkey::int2[]) with ordinality k(attnum, ord)
                  join pg_attribute a on a.attrelid = p_table and a.attnum = k.attnum) as columns,
               i.indexprs is null and not exists (select 1 from unnest(i.indkey::int2[]) k(attnum)
                  join pg_attribute a on a.attrelid = p_table and a.attnum = k.attnum
                 where a.atttypid <> 'uuid'::regtype) as uuid_only
          from pg_index i
          left join pg_constraint con on con.conindid = i.indexrelid and con.conrelid = p_table
         where i.indrelid = p_table and (i.indisunique or i.indisexclusion)
           and not (v_col.attnum = any (i.indkey::int2[]))
    loop
        if v_row.uuid_only then
            -- Random ids reveal nothing another clinic could probe without the id itself.
            return query select 'key without clinic_id'::text,
                format('%s (%s) leaves clinic_id out; fine on one server', v_row.index_name, v_row.columns),
                format('for Citus (distribution by clinic) make it (clinic_id, %s)', v_row.columns), false;
        else
            return query select 'unique key without clinic_id'::text,
                format('%s (%s) is checked across every clinic: a value another clinic has is refused, which '
                       'reveals it', v_row.index_name, v_row.columns),
                case when v_row.conname is not null
                     then format('alter table %s drop constraint %I, add constraint %I %s (clinic_id, %s)', v_name,
                                 v_row.conname, v_row.conname,
                                 case when v_row.indisprimary then 'primary key' else 'unique' end, v_row.columns)
                     else format('drop index %s; create unique index on %s (clinic_id, %s)', v_row.index_name,
                                 v_name, v_row.columns) end, true;
        end if;
    end loop;

    for v_row in
        select con.conname, con.confrelid::regclass::text as target,
               (select string_agg(quote_ident(a.attname), ', ' order by k.ord)
                  from unnest(con.conkey) with ordinality k(attnum, ord)
                  join pg_attribute a on a.attrelid = p_table and a.attnum = k.attnum) as columns,
               (select string_agg(quote_ident(a.attname), ', ' order by k.ord)
                  from unnest(con.confkey) with ordinality k(attnum, ord)
                  join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum) as target_columns
          from pg_constraint con
          join pg_attribute ra on ra.attrelid = con.confrelid and ra.attname = 'clinic_id' and not ra.attisdropped
         where con.conrelid = p_table and con.contype = 'f' and con.conparentid = 0
           and con.conkey <> array[v_col.attnum]
           and not exists (select 1 from unnest(con.conkey, con.confkey) k(l, r)
                            where k.l = v_col.attnum and k.r = ra.attnum)
    loop
        return query select 'foreign key without clinic_id'::text,
            format('%s references %s (%s) without clinic_id: a row could point at another clinic''s row',
                   v_row.conname, v_row.target, v_row.target_columns),
            format('alter table %s drop constraint %I, add constraint %I foreign key (clinic_id, %s) references '
                   '%s (clinic_id, %s) -- %s needs unique (clinic_id, %s)', v_name, v_row.conname, v_row.conname,
                   v_row.columns, v_row.target, v_row.target_columns, v_row.target, v_row.target_columns), true;
    end loop;

    -- Policies someone else wrote are OR-ed with the tenant policy.
    return query
    select 'permissive policy'::text,
           format('policy %I on %s is permissive and would widen the tenant policy', p.polname, v_name),
           format('drop policy %I on %s, or re-create it as restrictive', p.polname, v_name), true
      from pg_policy p
     where p.polrelid = p_table and p.polpermissive
       and p.polname not in (select tp.policy_name from clinicdb.tenant_policies tp);

    -- Views that read it with their owner's rights; materialized copies.
    return query
    select case v.relkind when 'm' then 'materialized view' else 'view without security_invoker' end,
           format('%s reads %s %s', v.oid::regclass, v_name,
                  case v.relkind when 'm' then 'and stores every clinic''s rows outside the policy'
                                 else 'with its owner''s rights' end),
           case v.relkind when 'm' then format('drop materialized view %s (or keep it out of reach of every '
                                               'application role)', v.oid::regclass)
                          else format('alter view %s set (security_invoker = on)', v.oid::regclass) end,
           true
      from pg_depend d
      join pg_rewrite rw on rw.oid = d.objid
      join pg_class v on v.oid = rw.ev_class and v.oid <> p_table
     where d.refobjid = p_table and d.classid = 'pg_rewrite'::regclass
       and (v.relkind = 'm'
            or (v.relkind = 'v' and not coalesce('security_invoker=true' = any (v.reloptions)
                                                  or 'security_invoker=on' = any (v.reloptions), false)))
     group by v.oid, v.relkind;

    -- Triggers whose names the layer uses for its own.
    return query
    select 'conflicting trigger'::text,
           format('trigger %I on %s has a name clinicdb uses but runs %s', t.tgname, v_name, t.tgfoid::regproc),
           format('alter trigger %I on %s rename to %I', t.tgname, v_name, 'app_' || t.tgname), true
      from pg_trigger t
      join pg_proc f on f.oid = t.tgfoid
     where t.tgrelid = p_table and not t.tgisinternal
       and t.tgname in ('clinicdb_touch_row', 'clinicdb_audit_insert', 'clinicdb_audit_update',
                        'clinicdb_audit_delete', 'clinicdb_audit_truncate', 'clinicdb_encrypt')
       and f.pronamespace <> 'clinicdb'::regnamespace;

    -- Done by the adoption SQL: recorded here so the report says everything.
    if v_rel.owner <> 'clinicdb_owner' then
        return query select 'owner'::text,
            format('%s is owned by %s; the owner can turn row level security off', v_name, v_rel.owner),
            format('alter table %s owner to clinicdb_owner (the adoption SQL does this)', v_name), false;
    end if;
    return query
    select 'privilege outside the policy'::text,
           format('%s holds %s on %s, which row level security does not cover',
                  case when acl.grantee = 0 then 'public' else pg_get_userbyid(acl.grantee) end,
                  acl.privilege_type, v_name),
           format('revoke %s on %s from %s (the adoption SQL does this)', lower(acl.privilege_type), v_name,
                  case when acl.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(acl.grantee)) end),
           false
      from aclexplode((select c.relacl from pg_class c where c.oid = p_table)) acl
     where acl.privilege_type in ('TRUNCATE', 'REFERENCES', 'TRIGGER')
       and acl.grantee <> (select c.relowner from pg_class c where c.oid = p_table)
       and pg_get_userbyid(acl.grantee) <> 'clinicdb_owner';
end
$$;
comment on function clinicdb.protect_report(regclass) is
    'clinicdb: what stands between a table and clinicdb.protect_table(): one row per blocker, with its fix (blocking = false: done by adopt_table_sql() or advice).';
revoke execute on function clinicdb.protect_report(regclass) from public;
grant execute on function clinicdb.protect_report(regclass) to clinicdb_owner, clinicdb_auditor;

-- The statements `clinicdb protect` runs in one transaction: the table handed
-- to clinicdb_owner, the application roles' usual rights (what the default
-- privileges give a table the owner creates), rights RLS does not cover
-- taken from everyone else, then protect_table() itself (policies, audit,
-- registry: clinicdb.protect_table_sql() lists its part).
create or replace function clinicdb.adopt_table_sql(p_table regclass)
returns setof text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_name text := (select format('%I.%I', n.nspname, c.relname)
                      from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table);
    v_grantee text;
begin
    if (select pg_get_userbyid(c.relowner) from pg_class c where c.oid = p_table) <> 'clinicdb_owner' then
        return next format('alter table %s owner to clinicdb_owner', v_name);
    end if;
    return next format('grant select, insert, update, delete on %s to clinicdb_app, clinicdb_staff', v_name);
    return next format('grant select on %s to clinicdb_readonly', v_name);
    for v_grantee in
        select distinct case when acl.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(acl.grantee)) end
          from aclexplode((select c.relacl from pg_class c where c.oid = p_table)) acl
         where acl.privilege_type in ('TRUNCATE', 'REFERENCES', 'TRIGGER')
           and acl.grantee <> (select c.relowner from pg_class c where c.oid = p_table)
           and pg_get_userbyid(acl.grantee) <> 'clinicdb_owner'
         order by 1
    loop
        return next format('revoke truncate, references, trigger on %s from %s', v_name, v_grantee);
    end loop;
    return next format('select clinicdb.protect_table(%L)', v_name);
end
$$;
comment on function clinicdb.adopt_table_sql(regclass) is
    'clinicdb: the statements `clinicdb protect` runs to adopt an existing table (owner, grants, then protect_table()).';
revoke execute on function clinicdb.adopt_table_sql(regclass) from public;
grant execute on function clinicdb.adopt_table_sql(regclass) to clinicdb_owner, clinicdb_auditor;
