-- PostgreSQL 17 added the MAINTAIN privilege (VACUUM, ANALYZE, CLUSTER,
-- REINDEX, REFRESH, LOCK TABLE) and the pg_maintain role that holds it on
-- every table. Row level security does not cover them: LOCK TABLE ... ACCESS
-- EXCLUSIVE blocks every clinic. protect_table() revokes MAINTAIN, and
-- check_isolation() reports a grant of it and pg_maintain on the
-- application path. On 15 and 16 neither exists, and these are skipped.
begin;
select plan(3);

create role tap_maintainer login;
grant clinicdb_app to tap_maintainer;
do $$
begin
    if current_setting('server_version_num')::integer >= 170000 then
        execute 'grant maintain on public.patients to clinicdb_readonly';
        execute 'grant pg_maintain to tap_maintainer';
    end if;
end
$$;

select case when current_setting('server_version_num')::integer < 170000
            then skip('MAINTAIN and pg_maintain exist from PostgreSQL 17 on', 2)
            else collect_tap(
                ok(exists (select 1 from clinicdb.check_isolation()
                            where table_name = 'public.patients'
                              and finding = 'clinicdb_readonly holds MAINTAIN, which row level security does not cover'),
                   'check_isolation reports MAINTAIN granted on a tenant table'),
                ok(exists (select 1 from clinicdb.check_isolation()
                            where table_name = 'tap_maintainer' and finding like 'can SET ROLE to pg_maintain, which%'),
                   'check_isolation reports an application login that holds pg_maintain'))
       end;

select clinicdb.protect_table('public.patients');
select case when current_setting('server_version_num')::integer < 170000
            then skip('MAINTAIN exists from PostgreSQL 17 on', 1)
            else ok(not has_table_privilege('clinicdb_readonly', 'public.patients', 'MAINTAIN'),
                    'protect_table revokes MAINTAIN from the application roles')
       end;

select * from finish();
rollback;
