"""One re-encryption batch on a Citus coordinator: values opened and sealed again there, never on a worker.

On a single node ``clinicdb.reencrypt_batch()`` rewrites values in SQL on the
rows, through the table's trigger and ``_decrypted`` view. On Citus those run
on the workers, which never hold a key (it travels by ``set_config``, which
Citus does not propagate), so that path fails closed. Here each batch:

1. reads the row keys and ciphertexts of one clinic's next rows from the
   shards (``where clinic_id = %s``: one shard), and the key version of each
   value (``clinicdb.key_version()`` reads bytes, no key);
2. per encrypted column, opens the values still under an older version and
   seals them again under the active one in a single statement that names no
   table, so Citus runs it on the coordinator, where the master key is in
   force as a bind parameter: ``clinicdb.decrypt_values()`` feeds
   ``clinicdb.encrypt_value()`` (and ``write_blind_index()``) inside the
   statement, so the plaintext never leaves it, not even to this process;
3. writes the new ciphertext (and blind index) back by ``clinic_id`` and row
   key, only where the row still holds the ciphertext it read: a value the
   application rewrote meanwhile is never overwritten; that row counts as
   skipped, and the caller's final check walks the table again if it is
   still under an older version.

The shards receive ciphertext and blind indexes only, and the updates are
audited there like any other write. The caller runs this in a transaction
with the master key and the clinic (``clinicdb.citus.clinic_context_statements``)
in force, and commits it with its checkpoint.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql

_COLUMNS = (
    "select column_name, row_key, blind_index from clinicdb.encrypted_columns"
    " where table_name = %s::regclass order by column_name"
)
_ACTIVE = "select version from clinicdb.clinic_keys where clinic_id = %s and state = 'active'"


def _columns(conn: psycopg.Connection[Any], table: str) -> tuple[str, list[tuple[str, bool]]]:
    """The table's row key and its encrypted columns (name, has a blind index)."""
    rows = conn.execute(_COLUMNS, (table,)).fetchall()
    if not rows:
        raise ValueError(f"{table} has no encrypted columns")
    return str(rows[0][1]), [(str(r[0]), bool(r[2])) for r in rows]


def _active_version(conn: psycopg.Connection[Any], clinic: uuid.UUID) -> int:
    row = conn.execute(_ACTIVE, (clinic,)).fetchone()
    if row is None:
        raise ValueError(f"cannot re-encrypt clinic {clinic}: it has no active key (shredded meanwhile?)")
    return int(row[0])


def _reseal(
    conn: psycopg.Connection[Any], table: str, column: str, blind: bool, rows: list[tuple[uuid.UUID, bytes]]
) -> list[tuple[bytes, bytes | None]]:
    """(ciphertext, blind index or None) under the active version for each (row key, old ciphertext), in order.

    One statement with no table in it: Citus runs it on the coordinator. The
    opened plaintext only flows from decrypt_values() into encrypt_value().
    """
    index = sql.SQL("clinicdb.write_blind_index(%(table)s::regclass, %(column)s, u.p)" if blind else "null::bytea")
    query = sql.SQL(
        "select clinicdb.encrypt_value(%(table)s::regclass, %(column)s, u.k, u.p), {index}"
        "  from unnest(%(keys)s::uuid[],"
        "              clinicdb.decrypt_values(%(values)s::bytea[], %(table)s::regclass, %(column)s, %(keys)s::uuid[]))"
        "       with ordinality as u(k, p, n)"
        " order by u.n"
    ).format(index=index)
    params = {"table": table, "column": column, "keys": [r[0] for r in rows], "values": [r[1] for r in rows]}
    sealed = conn.execute(query, params).fetchall()
    if len(sealed) != len(rows):
        raise psycopg.DataError(f"re-encryption sealed {len(sealed)} values of {table}.{column} for {len(rows)} rows")
    return [(bytes(s[0]), None if s[1] is None else bytes(s[1])) for s in sealed]


def _write_back(
    conn: psycopg.Connection[Any],
    table: str,
    clinic: uuid.UUID,
    key: sql.Identifier,
    columns: list[tuple[str, bool]],
    changes: dict[uuid.UUID, dict[int, tuple[bytes, bytes, bytes | None]]],
) -> int:
    """Write the new values by clinic and row key where the row still holds the old ones; returns rows written.

    One UPDATE per row (Citus routes each to the clinic's shard), sent in one
    pipeline per set of changed columns. A row whose ciphertext changed since
    it was read (or that was deleted) matches nothing and is left as it is.
    """
    ciphertexts = [sql.Identifier(f"{c}_ciphertext") for c, _ in columns]
    rewritten = 0
    shapes: dict[tuple[int, ...], list[uuid.UUID]] = {}
    for row_id, changed in changes.items():
        shapes.setdefault(tuple(sorted(changed)), []).append(row_id)
    for shape, row_ids in shapes.items():
        sets: list[sql.Composable] = []
        checks: list[sql.Composable] = []
        for i in shape:
            column, blind = columns[i]
            sets.append(sql.SQL("{} = %s").format(ciphertexts[i]))
            if blind:
                sets.append(sql.SQL("{} = %s").format(sql.Identifier(f"{column}_blind_index")))
            checks.append(sql.SQL(" and {} = %s").format(ciphertexts[i]))
        update = sql.SQL("update {table} set {sets} where clinic_id = %s and {key} = %s{checks}").format(
            table=sql.SQL(table), sets=sql.SQL(", ").join(sets), key=key, checks=sql.Composed(checks)
        )
        params: list[list[Any]] = []
        for row_id in row_ids:
            values: list[Any] = []
            for i in shape:
                _old, new, index = changes[row_id][i]
                values.append(new)
                if columns[i][1]:
                    values.append(index)
            values += [clinic, row_id, *(changes[row_id][i][0] for i in shape)]
            params.append(values)
        with conn.cursor() as cur:
            cur.executemany(update, params)
            rewritten += max(cur.rowcount, 0)
    return rewritten


def citus_batch(
    conn: psycopg.Connection[Any], table: str, clinic: uuid.UUID, after: uuid.UUID | None, limit: int
) -> tuple[uuid.UUID | None, int, int, int]:
    """Move up to ``limit`` rows of ``clinic`` after row key ``after`` to the active key version.

    Returns (last row key scanned, rows scanned, rows rewritten, rows skipped
    because they changed since they were read). ``table`` is a regclass's
    text from clinicdb.encrypted_columns (already quoted).
    """
    row_key, columns = _columns(conn, table)
    active = _active_version(conn, clinic)
    key = sql.Identifier(row_key)
    ciphertexts = [sql.Identifier(f"{c}_ciphertext") for c, _ in columns]
    read = sql.SQL(
        "select {key}, {values}, {versions} from {table} where clinic_id = %s{after} order by {key} limit %s"
    ).format(
        key=key,
        values=sql.SQL(", ").join(ciphertexts),
        versions=sql.SQL(", ").join(sql.SQL("clinicdb.key_version({})").format(c) for c in ciphertexts),
        table=sql.SQL(table),
        after=sql.SQL("") if after is None else sql.SQL(" and {} > %s").format(key),
    )
    batch = conn.execute(read, (clinic, limit) if after is None else (clinic, after, limit)).fetchall()
    n = len(columns)
    # row key -> {column index: (old ciphertext, new ciphertext, new blind index)}
    changes: dict[uuid.UUID, dict[int, tuple[bytes, bytes, bytes | None]]] = {}
    # Opened and sealed as the application, whose clinic in force (app.clinic_id) these functions require; by
    # set_config, which stays on the coordinator: Citus opens its worker connections as the current user, and
    # the application's roles cannot log in.
    conn.execute("select set_config('role', 'clinicdb_app', true)")
    for i, (column, blind) in enumerate(columns):
        # As reencrypt_batch(): a value of no known version (NULL, or not clinicdb's format) is left alone.
        stale = [(r[0], bytes(r[1 + i])) for r in batch if r[1 + n + i] is not None and r[1 + n + i] != active]
        if stale:
            for (row_id, old), (new, index) in zip(stale, _reseal(conn, table, column, blind, stale), strict=True):
                changes.setdefault(row_id, {})[i] = (old, new, index)
    conn.execute("select set_config('role', 'none', true)")
    rewritten = _write_back(conn, table, clinic, key, columns, changes)
    last_id = batch[-1][0] if batch else None
    return last_id, len(batch), rewritten, len(changes) - rewritten


def citus_remaining(conn: psycopg.Connection[Any], table: str, clinic: uuid.UUID) -> int:
    """Rows of ``clinic`` that still hold a value under an older key version (one shard)."""
    _row_key, columns = _columns(conn, table)
    active = _active_version(conn, clinic)
    stale = sql.SQL(" or ").join(
        sql.SQL("({c} is not null and clinicdb.key_version({c}) is distinct from %(active)s)").format(
            c=sql.Identifier(f"{column}_ciphertext")
        )
        for column, _ in columns
    )
    query = sql.SQL("select count(*) from {table} where clinic_id = %(clinic)s and ({stale})").format(
        table=sql.SQL(table), stale=stale
    )
    row = conn.execute(query, {"clinic": clinic, "active": active}).fetchone()
    return int(row[0]) if row else 0
