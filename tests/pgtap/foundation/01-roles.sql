-- The five group roles exist with least privilege; the app can never bypass RLS.
begin;
select plan(14);

select has_role(r, format('group role %s exists', r))
  from unnest(array['clinicdb_owner', 'clinicdb_app', 'clinicdb_readonly', 'clinicdb_staff', 'clinicdb_auditor']) r;

select is(
    (select count(*)::int from pg_roles
      where rolname like 'clinicdb\_%' and rolname not like '%\_user'
        and (rolsuper or rolbypassrls or rolcanlogin or rolcreaterole or rolcreatedb or rolreplication)),
    0, 'no clinicdb group role can log in, is superuser, bypasses RLS or creates roles/databases');
select ok(not (select rolbypassrls from pg_roles where rolname = 'clinicdb_app'), 'clinicdb_app is not BYPASSRLS');
select ok(not (select rolsuper from pg_roles where rolname = 'clinicdb_app'), 'clinicdb_app is not superuser');
select is(
    (select count(*)::int from pg_class c where pg_has_role(c.relowner, 'clinicdb_app', 'MEMBER')
        and c.relowner <> 10),
    0, 'clinicdb_app owns no relation');
select is(
    (select count(*)::int from pg_proc p where pg_has_role(p.proowner, 'clinicdb_app', 'MEMBER') and p.proowner <> 10),
    0, 'clinicdb_app owns no function');
select is(
    (select nspowner::regrole::text from pg_namespace where nspname = 'clinicdb'),
    'clinicdb_owner', 'the clinicdb schema is owned by clinicdb_owner');
select is(
    (select count(*)::int from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname in ('clinicdb', 'public') and c.relkind in ('r', 'p', 'v', 'm', 'S')
        and c.relname not like '%yoyo%'
        and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')
        and c.relowner <> 'clinicdb_owner'::regrole),
    0, 'every clinicdb and reference relation is owned by clinicdb_owner');
select ok(not has_table_privilege('clinicdb_app', 'public.patients', 'TRUNCATE'), 'clinicdb_app cannot TRUNCATE patients');
select ok(not has_table_privilege('clinicdb_auditor', 'public.patients', 'SELECT'), 'clinicdb_auditor cannot read PHI tables');

select * from finish();
rollback;
