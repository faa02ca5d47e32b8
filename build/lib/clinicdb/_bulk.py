"""``copy_rows``: bulk load through COPY without stepping around row level security.

COPY into the real table would be fast but is one more path to keep in line
with policies and triggers. Instead rows are COPYed into a temporary table
shaped like the target's columns (``on commit drop``), then moved with one
``insert ... select`` that the tenant policies and any audit triggers see like
any other insert. Needs the TEMP privilege on the database (PUBLIC has it by
default in PostgreSQL; a deployment that revokes it must grant it to
clinicdb_app).
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

STAGE = "_clinicdb_copy_stage"


def table_identifier(table: str) -> sql.Identifier:
    """``'patients'`` or ``'public.patients'`` as a quoted identifier; ValueError otherwise."""
    if not isinstance(table, str) or not table:
        raise ValueError("table must be a table name such as 'patients' or 'public.patients'")
    parts = table.split(".")
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"table must be 'name' or 'schema.name', got {table[:80]!r}")
    return sql.Identifier(*parts)


def column_identifiers(columns: Sequence[str]) -> list[sql.Identifier]:
    if isinstance(columns, str) or not columns:
        raise ValueError("columns must be a non-empty list of column names")
    if len(set(columns)) != len(columns) or not all(isinstance(c, str) and c for c in columns):
        raise ValueError("columns must be distinct, non-empty column names")
    return [sql.Identifier(c) for c in columns]


HAS_CLINIC_ID = "select exists (select 1 from pg_attribute where attrelid = %s::regclass and attname = 'clinic_id')"


def statements(
    table: str, columns: Sequence[str], *, fill_clinic_id: bool
) -> tuple[sql.Composed, sql.Composed, sql.Composed]:
    """(create stage, copy into stage, insert ... select from stage).

    ``fill_clinic_id``: the insert names ``clinic_id`` and passes the
    transaction's clinic as one parameter (``%s``), instead of letting the
    column default call ``clinicdb.require_clinic_id()`` once per row (the
    default costs ~5x the whole load). The policies still check every row.
    """
    target = table_identifier(table)
    cols = sql.SQL(", ").join(column_identifiers(columns))
    stage = sql.Identifier(STAGE)
    if fill_clinic_id:
        insert = sql.SQL("insert into {target} (clinic_id, {cols}) select %s::uuid, {cols} from {stage}").format(
            target=target, cols=cols, stage=stage
        )
    else:
        insert = sql.SQL("insert into {target} ({cols}) select {cols} from {stage}").format(
            target=target, cols=cols, stage=stage
        )
    create = sql.SQL(
        "create temporary table {stage} on commit drop as select {cols} from {target} with no data"
    ).format(stage=stage, cols=cols, target=target)
    copy = sql.SQL("copy {stage} ({cols}) from stdin").format(stage=stage, cols=cols)
    return create, copy, insert
