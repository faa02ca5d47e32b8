-- With the audit layer installed (issue #4), shredding leaves an audit row:
-- the audited update of clinicdb.clinic_keys (state -> shredded), whose row
-- images never hold the wrapped key (the audit layer is always installed with encryption).
begin;
select plan(3);

select set_config('app.master_key', repeat('e1', 32), true);
select set_config('test.clinic', clinicdb_tap.create_clinic('shred audit')::text, true);
select clinicdb.rotate_clinic_key(current_setting('test.clinic')::uuid);
select clinicdb.shred_clinic_keys(current_setting('test.clinic')::uuid, 'audit test');

create function pg_temp.audit_rows(p_clinic uuid) returns setof jsonb language plpgsql as $$
begin
    return query execute
        'select to_jsonb(a) from clinicdb.audit_log a where a.table_name = ''clinicdb.clinic_keys'' and a.clinic_id = $1'
        using p_clinic;
end $$;

select ok(exists (select 1 from pg_temp.audit_rows(current_setting('test.clinic')::uuid) r
                  where r ->> 'action' = 'update' and r -> 'new_values' ->> 'state' = 'shredded'),
          'shredding a clinic''s keys leaves an audit row (state becomes shredded)');
select ok(not exists (select 1 from pg_temp.audit_rows(current_setting('test.clinic')::uuid) r
                      where r::text ~ '\\\\x[0-9a-f]{64}'),
          'no audit row of clinic_keys holds wrapped key material');
select ok(exists (select 1 from pg_temp.audit_rows(current_setting('test.clinic')::uuid) r
                  where r ->> 'action' = 'insert'),
          'creating the key is audited too');

select * from finish();
rollback;
