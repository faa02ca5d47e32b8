"""A comparable description of what a database holds, for tests that compare two databases.

``snapshot(url)`` reads the catalog of every application and layer schema
(not yoyo's history, not pgTAP's helpers): relations with their RLS flags,
owners, privileges and comments; columns with types, defaults, statistics
targets and comments; constraints, indexes, policies, triggers, views,
sequences, functions (whole definitions, owners, privileges, settings), types,
default privileges, the database's privileges and settings, and the contents
of the layer's registries. Generated names that carry a table's OID (the audit
capture functions) are normalised, since two databases give the same table
different OIDs. Each section is a sorted list, so ``diff()`` names exactly
what differs.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

# Schemas that are bookkeeping, not the layer or the application.
_SKIPPED = ("pg_catalog", "information_schema", "pg_toast", "clinicdb_migrations", "clinicdb_tap")
_OID_IN_NAME = re.compile(r"(audit_[a-z0-9_]+?_)\d+(_(?:insert|update|delete))")

_SCHEMAS = f"""n.nspname not in ({", ".join(f"'{s}'" for s in _SKIPPED)})
  and n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'"""

# Registry tables whose rows define behaviour; columns that are times or
# people (who ran the migration) are left out.
_REGISTRIES = {
    "clinicdb.protected_tables": "table_name::text",
    "clinicdb.phi_columns": "table_name::text, column_name, note",
    "clinicdb.tenant_policies": "*",
    "clinicdb.audit_settings": "table_name::text, column_name, mode",
    "clinicdb.encrypted_columns": "table_name::text, column_name, label, blind_index, row_key",
}

_QUERIES = {
    "schemas": f"""
        select n.nspname, pg_get_userbyid(n.nspowner), array(select a::text from unnest(n.nspacl) a order by 1),
               obj_description(n.oid, 'pg_namespace')
          from pg_namespace n where {_SCHEMAS}""",
    "relations": f"""
        select c.oid::regclass::text, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.relpersistence,
               pg_get_userbyid(c.relowner), array(select a::text from unnest(c.relacl) a order by 1),
               array(select o from unnest(c.reloptions) o order by 1), obj_description(c.oid, 'pg_class'),
               pg_get_partkeydef(c.oid), c.relispartition
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where {_SCHEMAS} and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')""",
    "columns": f"""
        select c.oid::regclass::text, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attgenerated, a.attidentity, a.attstattarget,
               array(select x::text from unnest(a.attacl) x order by 1), col_description(c.oid, a.attnum)
          from pg_attribute a
          join pg_class c on c.oid = a.attrelid
          join pg_namespace n on n.oid = c.relnamespace
          left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where {_SCHEMAS} and c.relkind in ('r', 'p', 'v', 'm', 'f') and a.attnum > 0 and not a.attisdropped""",
    "constraints": f"""
        -- NOT NULL constraints (catalogued from PostgreSQL 18) get generated names that depend on what the
        -- table was called when the column was made (a renamed table keeps them): compared without the name.
        select c.conrelid::regclass::text, case when c.contype = 'n' then '' else c.conname end,
               pg_get_constraintdef(c.oid),
               obj_description(c.oid, 'pg_constraint')
          from pg_constraint c join pg_namespace n on n.oid = c.connamespace
         where {_SCHEMAS} and c.conrelid <> 0""",
    "indexes": f"""
        select i.indrelid::regclass::text, pg_get_indexdef(i.indexrelid)
          from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
         where {_SCHEMAS}""",
    "policies": f"""
        select p.polrelid::regclass::text, p.polname, p.polcmd, p.polpermissive,
               array(select r::regrole::text from unnest(p.polroles) r order by 1),
               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
          from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
         where {_SCHEMAS}""",
    "triggers": f"""
        select t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
          from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
         where {_SCHEMAS} and not t.tgisinternal""",
    "views": f"""
        select c.oid::regclass::text, pg_get_viewdef(c.oid)
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where {_SCHEMAS} and c.relkind in ('v', 'm')""",
    "sequences": f"""
        select s.seqrelid::regclass::text, format_type(s.seqtypid, null), s.seqincrement, s.seqmin, s.seqmax, s.seqcycle
          from pg_sequence s join pg_class c on c.oid = s.seqrelid join pg_namespace n on n.oid = c.relnamespace
         where {_SCHEMAS}""",
    "functions": f"""
        select p.oid::regprocedure::text, pg_get_functiondef(p.oid), pg_get_userbyid(p.proowner),
               array(select a::text from unnest(p.proacl) a order by 1), obj_description(p.oid, 'pg_proc')
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where {_SCHEMAS} and p.prokind in ('f', 'p', 'w')
           and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')""",
    "aggregates": f"""
        select p.oid::regprocedure::text, pg_get_userbyid(p.proowner)
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where {_SCHEMAS} and p.prokind = 'a'
           and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')""",
    "types": f"""
        select t.oid::regtype::text, t.typtype, pg_get_userbyid(t.typowner), obj_description(t.oid, 'pg_type'),
               array(select format('%s %s', a.attname, format_type(a.atttypid, a.atttypmod))
                       from pg_attribute a where a.attrelid = t.typrelid and a.attnum > 0 order by a.attnum)
          from pg_type t join pg_namespace n on n.oid = t.typnamespace
         where {_SCHEMAS} and t.typtype in ('c', 'd', 'e')
           and (t.typrelid = 0 or (select relkind from pg_class where oid = t.typrelid) = 'c')""",
    "extensions": """
        select e.extname, e.extnamespace::regnamespace::text from pg_extension e""",
    "default_privileges": """
        select pg_get_userbyid(d.defaclrole), coalesce(d.defaclnamespace::regnamespace::text, ''), d.defaclobjtype,
               array(select a::text from unnest(d.defaclacl) a order by 1)
          from pg_default_acl d""",
    "database": """
        select array(select a::text from unnest(datacl) a order by 1) from pg_database
         where datname = current_database()""",
    "database_settings": """
        select array(select s from unnest(setconfig) s order by 1) from pg_db_role_setting
         where setdatabase = (select oid from pg_database where datname = current_database()) and setrole = 0""",
    "builtin_function_privileges": """
        select p.oid::regprocedure::text, array(select a::text from unnest(p.proacl) a order by 1)
          from pg_proc p where p.pronamespace = 'pg_catalog'::regnamespace and p.proacl is not null""",
}


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return _OID_IN_NAME.sub(r"\1<oid>\2", value)
    if isinstance(value, list | tuple):
        return tuple(_normalise(v) for v in value)
    return value


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every section of the catalog (and the registries' rows), each a sorted list of tuples."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for section, query in _QUERIES.items():
            rows = conn.execute(query).fetchall()
            result[section] = sorted((_normalise(tuple(r)) for r in rows), key=repr)
        for table, columns in _REGISTRIES.items():
            if conn.execute("select to_regclass(%s)", (table,)).fetchone() == (None,):
                continue
            rows = conn.execute(f"select {columns} from {table}").fetchall()
            result[f"rows of {table}"] = sorted((_normalise(tuple(r)) for r in rows), key=repr)
    return result


def diff(left: dict[str, list[tuple[Any, ...]]], right: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    """Lines naming each entry found on one side only (empty: the two catalogs are the same)."""
    lines: list[str] = []
    for section in sorted(set(left) | set(right)):
        a, b = set(left.get(section, [])), set(right.get(section, []))
        lines += [f"{section}: only left: {row!r}" for row in sorted(a - b, key=repr)]
        lines += [f"{section}: only right: {row!r}" for row in sorted(b - a, key=repr)]
    return lines
