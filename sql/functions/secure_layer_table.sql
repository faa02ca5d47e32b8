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
