-- Moving a clinic's values to its active key version, one batch at a time.
--
-- `clinicdb keys reencrypt` calls reencrypt_batch() as clinicdb_app with the
-- clinic and the master key in force, in short transactions, so the table
-- stays online: each batch locks only the rows it rewrites, and commits with
-- its checkpoint (clinicdb.reencrypt_progress), so an interrupted run resumes
-- after the last committed row. Batches walk the (clinic_id, <row key>)
-- index in key order. A value is rewritten by writing its plaintext back
-- into the write slot, so the table's own trigger encrypts it with the active
-- version and recomputes its blind index; values already on the active
-- version are left alone (an update racing the batch re-checks the version
-- on the row it locks).

create or replace function clinicdb.reencrypt_batch(
    p_table regclass, p_after uuid, p_limit integer,
    out last_id uuid, out rows_scanned integer, out rows_rewritten integer
)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_ring clinicdb.keyring;
    v_row_key name;
    v_view text;
    v_set text := '';
    v_stale text := '';
    v_col record;
begin
    v_ring := clinicdb._clinic_keyring(clinicdb.require_clinic_id());
    if v_ring.problem is not null or v_ring.active_version is null then
        raise exception 'cannot re-encrypt %: %', p_table, coalesce(v_ring.problem, 'the clinic has no active key')
            using errcode = 'insufficient_privilege', hint = clinicdb._key_problem_hint();
    end if;
    for v_col in
        select ec.column_name as c, ec.column_name || '_ciphertext' as ct, ec.row_key
          from clinicdb.encrypted_columns ec where ec.table_name = p_table order by ec.column_name
    loop
        v_row_key := v_col.row_key;
        v_set := v_set || format('%s%I = case when clinicdb.key_version(t.%I) <> $3 then v.%I end',
                                 case when v_set = '' then '' else ', ' end, v_col.c, v_col.ct, v_col.c);
        v_stale := v_stale || format('%sclinicdb.key_version(t.%I) <> $3',
                                     case when v_stale = '' then '' else ' or ' end, v_col.ct);
    end loop;
    if v_row_key is null then
        raise exception '% has no encrypted columns', p_table using errcode = 'undefined_object';
    end if;
    v_view := (select format('%I.%I', n.nspname, left(c.relname || '_decrypted', 63))
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table);
    execute format($q$
        with batch as (
            select b.%1$I as id from %2$s b where ($1::uuid is null or b.%1$I > $1) order by b.%1$I limit $2
        ), moved as (
            update %2$s t set %3$s
              from %4$s v
             where v.%1$I = t.%1$I and t.%1$I in (select id from batch) and (%5$s)
            returning 1
        )
        select (select id from batch order by id desc limit 1), (select count(*) from batch)::integer,
               (select count(*) from moved)::integer$q$,
        v_row_key, p_table, v_set, v_view, v_stale)
        into last_id, rows_scanned, rows_rewritten
        using p_after, p_limit, v_ring.active_version;
end
$$;
comment on function clinicdb.reencrypt_batch(regclass, uuid, integer) is
    'clinicdb: move up to p_limit rows after p_after (row key order) of the clinic in force to its active key version.';
grant execute on function clinicdb.reencrypt_batch(regclass, uuid, integer) to clinicdb_app;

-- Values of the clinic in force still on an older key version (all columns).
create or replace function clinicdb.reencrypt_remaining(p_table regclass)
returns bigint
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_active integer;
    v_stale text := '';
    v_col record;
    v_count bigint;
begin
    select k.version into v_active
      from clinicdb.clinic_keys k where k.clinic_id = clinicdb.require_clinic_id() and k.state = 'active';
    for v_col in select ec.column_name || '_ciphertext' as ct from clinicdb.encrypted_columns ec
                  where ec.table_name = p_table loop
        v_stale := v_stale || format('%sclinicdb.key_version(%I) is distinct from $1 and %I is not null',
                                     case when v_stale = '' then '' else ' or ' end, v_col.ct, v_col.ct);
    end loop;
    if v_stale = '' then
        return 0;
    end if;
    execute format('select count(*) from %s where %s', p_table, v_stale) into v_count using v_active;
    return v_count;
end
$$;
comment on function clinicdb.reencrypt_remaining(regclass) is
    'clinicdb: how many rows of the clinic in force still hold a value under an older key version.';
grant execute on function clinicdb.reencrypt_remaining(regclass) to clinicdb_app, clinicdb_readonly, clinicdb_staff;

-- How many stored values use each key version, per encrypted column and
-- clinic: what an operator checks before and after `clinicdb keys reencrypt`.
-- Reads only the version bytes (no key needed); run by a role that sees
-- every clinic for the whole picture.
create or replace function clinicdb.key_usage()
returns table (table_name text, column_name name, clinic_id uuid, key_version integer, values_stored bigint)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_col record;
begin
    for v_col in select ec.table_name, ec.column_name from clinicdb.encrypted_columns ec
                  order by ec.table_name::text, ec.column_name loop
        return query execute format(
            'select %L::text, %L::name, t.clinic_id, clinicdb.key_version(t.%I), count(*)
               from %s t where t.%I is not null group by 3, 4 order by 3, 4',
            v_col.table_name::text, v_col.column_name, v_col.column_name || '_ciphertext',
            v_col.table_name, v_col.column_name || '_ciphertext');
    end loop;
end
$$;
comment on function clinicdb.key_usage() is
    'clinicdb: stored values per encrypted column, clinic and key version (no key needed; shows re-encryption progress).';
revoke execute on function clinicdb.key_usage() from public;
grant execute on function clinicdb.key_usage() to clinicdb_auditor;
