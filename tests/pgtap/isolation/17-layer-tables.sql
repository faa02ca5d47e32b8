-- The layer's own tables (schema clinicdb): each has row level security
-- enabled and forced, or grants nothing to anyone but its owner
-- (sql/schema/layer_tables.sql), and clinicdb.check_isolation() reports a
-- table of the schema that is neither.
begin;
select plan(8);

select is(array(select format('%I.%I', n.nspname, c.relname)
                  from pg_class c join pg_namespace n on n.oid = c.relnamespace
                 where n.nspname = 'clinicdb' and c.relkind in ('r', 'p')
                   and not (c.relrowsecurity and c.relforcerowsecurity)
                   and exists (select 1 from aclexplode(c.relacl) acl where acl.grantee <> c.relowner)
                 order by 1),
          '{}'::text[],
          'every table of the clinicdb schema has forced row level security or owner-only privileges');
select ok((select bool_and(c.relrowsecurity and c.relforcerowsecurity) from pg_class c
            where c.oid in ('clinicdb.audit_log'::regclass, 'clinicdb.staff_members'::regclass,
                            'clinicdb.key_events'::regclass, 'clinicdb.reencrypt_progress'::regclass)),
          'audit_log, staff_members, key_events and reencrypt_progress force row level security');
select ok((select bool_and(not exists (select 1 from aclexplode(c.relacl) acl where acl.grantee <> c.relowner))
             from pg_inherits i join pg_class c on c.oid = i.inhrelid
            where i.inhparent = 'clinicdb.audit_log'::regclass),
          'the audit partitions (monthly and default) grant nothing to anyone but their owner');
select ok(exists (select 1 from pg_inherits i where i.inhparent = 'clinicdb.audit_log'::regclass
                    and i.inhrelid = 'clinicdb.audit_log_default'::regclass),
          'the default partition is among them');

-- The owner still works through its policy; others see what their grants allow.
select clinicdb_tap.authenticate_as('clinicdb_owner');
select ok((select count(*) from clinicdb.tenant_policies) = 4,
          'the owner reads the registries it maintains (forced row level security, owner policy)');
select clinicdb_tap.authenticate_as('clinicdb_app');
select throws_ok('select * from clinicdb.key_events', '42501', 'permission denied for table key_events',
                 'the app reads no key events');
select clinicdb_tap.clear_authentication();

create table clinicdb.tap_loose (note text);
grant select on clinicdb.tap_loose to clinicdb_app;
select ok(exists (select 1 from clinicdb.check_isolation()
                   where table_name = 'clinicdb.tap_loose'
                     and finding = 'table of the clinicdb schema has neither forced row level security nor owner-only privileges'),
          'check_isolation reports a table of the layer''s schema that another role may read without a policy');
revoke select on clinicdb.tap_loose from clinicdb_app;
select ok(not exists (select 1 from clinicdb.check_isolation() where table_name = 'clinicdb.tap_loose'),
          'and stops once only its owner holds privileges');

select * from finish();
rollback;
