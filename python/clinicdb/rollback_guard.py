"""What a rollback would destroy, and what it keeps.

``clinicdb.schema.rollback`` first runs the chosen rollbacks once inside a
transaction it then rolls back (a dry run on the real database) and so learns
every table they would drop -- the layer's own, the reference schema's, and
any of yours that ``drop owned by`` or a cascade would take with them. This
module turns that list into a decision:

* a dropped table that holds rows makes the rollback refuse, naming each
  table and its row count, unless the caller asked to destroy data;
* even then the audit trail is kept: copied into the ``clinicdb_migrations``
  schema (which no rollback drops) before it goes;
* group-role memberships of logins and staff-to-clinic mappings, which
  rolling back ``0001.roles`` / ``0002.tenancy-core`` drops, are kept there
  too, and the next ``clinicdb migrate`` restores them.

Every query names its schema: the connection is yoyo's bookkeeping one,
whose search_path is the history schema.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

HISTORY_SCHEMA = "clinicdb_migrations"
GROUP_ROLES = ("clinicdb_owner", "clinicdb_app", "clinicdb_readonly", "clinicdb_staff", "clinicdb_auditor")
ROLES_MIGRATION = "0001.roles"
TENANCY_MIGRATION = "0002.tenancy-core"
# Tables of the layer's schema that configure the trail rather than hold it.
_AUDIT_CONFIGURATION = {"audit_settings", "audit_capture_state"}
# What a rollback may not drop without destroy_data.
_REFUSED = {"data", "audit trail", "key material"}

# Every table a rollback could drop: partitions are counted through their parent.
TABLES_QUERY = """
    select c.oid::bigint, format('%I.%I', n.nspname, c.relname), n.nspname::text, c.relname::text
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p') and not c.relispartition
       and n.nspname not in ('pg_catalog', 'information_schema', 'clinicdb_migrations')
       and n.nspname !~ '^pg_(toast|temp)'
"""


@dataclass(frozen=True)
class DroppedTable:
    """A table the rollback would drop, with its rows."""

    name: str
    schema: str
    relname: str
    rows: int

    @property
    def kind(self) -> str:
        """data, audit trail and key material are refused without destroy_data; the audit trail and evidence
        (seals, pruned months, key events) are copied before they go; configuration (the layer's registries,
        rebuilt by migrating again) is neither."""
        if self.schema != "clinicdb" or self.relname == "clinics":
            return "data"
        if self.relname == "audit_log":
            return "audit trail"
        if self.relname == "clinic_keys":
            return "key material"
        if self.relname == "key_events" or (
            self.relname.startswith("audit_") and self.relname not in _AUDIT_CONFIGURATION
        ):
            return "evidence"
        return "configuration"


def require_superuser(conn: Any) -> None:
    """Counting what a rollback drops needs a role that sees every clinic's rows."""
    row = conn.execute("select rolsuper or rolbypassrls from pg_catalog.pg_roles where rolname = current_user")
    found = row.fetchone()
    if not (found and found[0]):
        raise PermissionError(
            "rollback needs a superuser (or BYPASSRLS) login: it must see every clinic's rows to know what it would "
            "drop; pass --database-url with such a login"
        )


def count_rows(conn: Any, dropped: Sequence[tuple[str, str, str]]) -> list[DroppedTable]:
    """Row counts of the tables the dry run dropped (they exist again after it rolled back)."""
    tables: list[DroppedTable] = []
    for name, schema, relname in dropped:
        found = conn.execute(
            sql.SQL("select count(*) from {}.{}").format(sql.Identifier(schema), sql.Identifier(relname))
        )
        row = found.fetchone()
        tables.append(DroppedTable(name, schema, relname, int(row[0]) if row else 0))
    return tables


def refusal(tables: Sequence[DroppedTable]) -> str:
    """One line: what would be destroyed, and how to proceed anyway."""
    holding = [t for t in tables if t.rows and t.kind in _REFUSED]
    parts = [f"{t.name} ({t.rows:,} {'rows' if t.kind == 'data' else t.kind + ' rows'})" for t in holding]
    return (
        f"this rollback would drop {len(holding)} table(s) holding rows: {', '.join(parts)}; nothing was rolled back. "
        "Pass --destroy-data to proceed (the audit trail is copied into the clinicdb_migrations schema first)"
    )


def at_risk(tables: Sequence[DroppedTable]) -> bool:
    """True when a dropped table holds rows that are not just configuration."""
    return any(t.rows and t.kind in _REFUSED for t in tables)


def keep_audit_trail(conn: Any, tables: Sequence[DroppedTable]) -> list[str]:
    """Copy every dropped audit-trail table that holds rows into the history schema; say where each went."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    kept: list[str] = []
    for table in tables:
        if table.kind not in ("audit trail", "evidence") or not table.rows:
            continue
        copy = f"{table.relname}_kept_{stamp}"[:63]
        conn.execute(
            sql.SQL("create table {}.{} as table {}.{}").format(
                sql.Identifier(HISTORY_SCHEMA),
                sql.Identifier(copy),
                sql.Identifier(table.schema),
                sql.Identifier(table.relname),
            )
        )
        conn.execute(
            sql.SQL("revoke all on {}.{} from public").format(sql.Identifier(HISTORY_SCHEMA), sql.Identifier(copy))
        )
        kept.append(f"kept {table.kind} in {HISTORY_SCHEMA}.{copy} ({table.rows:,} rows of {table.name})")
    return kept


def _ensure_keep_tables(conn: Any) -> None:
    conn.execute(
        f"create table if not exists {HISTORY_SCHEMA}.kept_memberships ("
        " member name not null, group_name name not null, kept_at timestamptz not null default now(),"
        " primary key (member, group_name))"
    )
    conn.execute(
        f"create table if not exists {HISTORY_SCHEMA}.kept_staff_members ("
        " role_name name not null, role_oid oid not null, clinic_id uuid not null,"
        " kept_at timestamptz not null default now(), primary key (role_name, clinic_id))"
    )


def keep_memberships(conn: Any, chosen: Sequence[str]) -> list[str]:
    """Before 0001/0002 roll back: keep what they would drop that is not theirs (logins' grants, staff mappings)."""
    notes: list[str] = []
    if ROLES_MIGRATION in chosen:
        _ensure_keep_tables(conn)
        kept = conn.execute(
            f"insert into {HISTORY_SCHEMA}.kept_memberships (member, group_name)"
            " select m.rolname, g.rolname from pg_catalog.pg_auth_members a"
            " join pg_catalog.pg_roles g on g.oid = a.roleid join pg_catalog.pg_roles m on m.oid = a.member"
            " where g.rolname = any (%s) and not m.rolname = any (%s)"
            " on conflict do nothing",
            (list(GROUP_ROLES), list(GROUP_ROLES)),
        ).rowcount
        if kept:
            notes.append(
                f"kept {kept} login membership(s) in clinicdb's group roles; the next migrate grants them again"
            )
    if TENANCY_MIGRATION in chosen:
        exists = conn.execute("select to_regclass('clinicdb.staff_members') is not null").fetchone()
        if exists and exists[0]:
            _ensure_keep_tables(conn)
            kept = conn.execute(
                f"insert into {HISTORY_SCHEMA}.kept_staff_members (role_name, role_oid, clinic_id)"
                " select role_name, role_oid, clinic_id from clinicdb.staff_members on conflict do nothing"
            ).rowcount
            if kept:
                notes.append(
                    f"kept {kept} staff mapping(s); the next migrate restores each whose login and clinic exist"
                )
    return notes


def restore(conn: Any) -> list[str]:
    """After a migrate: grant kept memberships again and restore kept staff mappings that can be; say what remains."""
    notes: list[str] = []
    present = conn.execute(
        "select to_regclass(%s) is not null, to_regclass(%s) is not null,"
        " to_regclass('clinicdb.staff_members') is not null",
        (f"{HISTORY_SCHEMA}.kept_memberships", f"{HISTORY_SCHEMA}.kept_staff_members"),
    ).fetchone()
    if not present:
        return notes
    memberships, mappings, staff_table = present
    if memberships:
        rows = conn.execute(
            f"select k.member, k.group_name from {HISTORY_SCHEMA}.kept_memberships k"
            " join pg_catalog.pg_roles m on m.rolname = k.member join pg_catalog.pg_roles g on g.rolname = k.group_name"
        ).fetchall()
        for member, group in rows:
            conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(group), sql.Identifier(member)))
            conn.execute(
                f"delete from {HISTORY_SCHEMA}.kept_memberships where member = %s and group_name = %s", (member, group)
            )
        if rows:
            notes.append(f"restored {len(rows)} login membership(s) kept by a rollback")
    if mappings and staff_table:
        restored = conn.execute(
            f"with r as (delete from {HISTORY_SCHEMA}.kept_staff_members k"
            " where exists (select 1 from pg_catalog.pg_roles r where r.rolname = k.role_name and r.oid = k.role_oid)"
            "   and exists (select 1 from clinicdb.clinics c where c.id = k.clinic_id)"
            " returning k.role_name, k.role_oid, k.clinic_id)"
            " insert into clinicdb.staff_members (role_name, role_oid, clinic_id)"
            " select role_name, role_oid, clinic_id from r on conflict do nothing"
        ).rowcount
        if restored:
            notes.append(f"restored {restored} staff mapping(s) kept by a rollback")
        left = conn.execute(f"select count(*) from {HISTORY_SCHEMA}.kept_staff_members").fetchone()
        if left and left[0]:
            notes.append(
                f"{left[0]} kept staff mapping(s) wait for their clinic or login "
                f"({HISTORY_SCHEMA}.kept_staff_members); create the clinic with its old id and migrate again, "
                "or grant anew with clinicdb staff grant"
            )
    return notes
