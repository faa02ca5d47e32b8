"""Encrypt and decrypt in statements of their own: how encrypted columns work on Citus.

On a single node a ``BEFORE`` trigger encrypts the plaintext an application
writes, and the ``<table>_decrypted`` views decrypt. On Citus both run on the
worker that holds the shard, and the clinic's keys never reach a worker: the
driver sends them by ``set_config`` as bind parameters, which Citus does not
propagate (the one form it propagates, ``SET LOCAL``, would put them in SQL
text and every node's log). So the application seals values on the
coordinator, where the keys are in force, and writes the ciphertext itself;
it reads the ciphertext from the shards and opens it on the coordinator::

    row_id = uuid.uuid4()
    with db.write(clinic) as cur:
        sealed = seal_row(cur, "public.patients", row_id, {"ssn": "123-45-6789"})
        cur.execute(
            "insert into patients (id, clinic_id, mrn, ssn_ciphertext, ssn_blind_index)"
            " values (%s, %s, %s, %s, %s)",
            (row_id, clinic, "N-1", sealed["ssn_ciphertext"], sealed["ssn_blind_index"]))
    with db.read(clinic) as cur:
        rows = cur.execute("select id, ssn_ciphertext from patients where clinic_id = %s", (clinic,)).fetchall()
        ssns = open_column(cur, "public.patients", "ssn", rows)

Both statements name no table, so Citus never sends them to a worker: the
plaintext and the keys stay on the coordinator (as bind parameters, which
migration 0005 keeps out of its log), and the shards receive ciphertext
only. They work the same on a single node. The SQL behind them is
``clinicdb.seal_values()`` and ``clinicdb.decrypt_values()``
(``sql/functions/encrypt_value.sql``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row

SEAL_SQL = (
    "select column_name, ciphertext, blind_index, has_blind_index"
    "  from clinicdb.seal_values(%s::regclass, %s, %s::name[], %s::text[])"
)
OPEN_SQL = "select clinicdb.decrypt_values(%s::bytea[], %s::regclass, %s, %s::uuid[])"

Sealed = dict[str, bytes | None]
"""``{"<column>_ciphertext": ..., "<column>_blind_index": ...}``: column names to write, values to write there."""


def _seal_params(table: str, row_key: uuid.UUID, values: Mapping[str, str | None]) -> tuple[Any, ...]:
    return (table, row_key, list(values), list(values.values()))


def _sealed(rows: Sequence[tuple[Any, ...]]) -> Sealed:
    out: Sealed = {}
    for column, ciphertext, blind_index, has_blind_index in rows:
        out[f"{column}_ciphertext"] = ciphertext
        if has_blind_index:
            out[f"{column}_blind_index"] = blind_index
    return out


def _open_params(table: str, column: str, rows: Sequence[tuple[uuid.UUID, bytes | None]]) -> tuple[Any, ...]:
    return ([r[1] for r in rows], table, column, [r[0] for r in rows])


def _opened(row: tuple[Any, ...] | None, expected: int) -> list[str | None]:
    values: list[str | None] = list(row[0]) if row and row[0] is not None else []
    if len(values) != expected:
        raise psycopg.DataError(f"decrypt_values returned {len(values)} values for {expected} rows")
    return values


def seal_row(cur: psycopg.Cursor[Any], table: str, row_key: uuid.UUID, values: Mapping[str, str | None]) -> Sealed:
    """Encrypt ``values`` (encrypted column name -> plaintext) for the row whose key is ``row_key``.

    Runs in ``cur``'s transaction, under the clinic and the keys in force
    there (a driver transaction given ``keyring=``, or ``app.master_key``).
    Returns the ``<column>_ciphertext`` values, and ``<column>_blind_index``
    for the columns declared with one: write all of them. A NULL plaintext
    gives NULL (write it to clear a value). The row key is bound into each
    value: a value written to another row fails its integrity check on
    read. Without a key in force this raises, and nothing is sealed.
    """
    with cur.connection.cursor(row_factory=tuple_row) as own:
        return _sealed(own.execute(SEAL_SQL, _seal_params(table, row_key, values)).fetchall())


def open_column(
    cur: psycopg.Cursor[Any], table: str, column: str, rows: Sequence[tuple[uuid.UUID, bytes | None]]
) -> list[str | None]:
    """Decrypt one encrypted column of many rows, given as ``(row key, <column>_ciphertext)`` pairs, in order.

    One statement, one keyring load, on the coordinator. A value that was
    tampered with, moved to another row, or belongs to another clinic raises
    (SQLSTATE XX001); it never decrypts to something else.
    """
    with cur.connection.cursor(row_factory=tuple_row) as own:
        return _opened(own.execute(OPEN_SQL, _open_params(table, column, rows)).fetchone(), len(rows))


async def seal_row_async(
    cur: psycopg.AsyncCursor[Any], table: str, row_key: uuid.UUID, values: Mapping[str, str | None]
) -> Sealed:
    """``seal_row`` for an ``AsyncClinicDB`` transaction."""
    async with cur.connection.cursor(row_factory=tuple_row) as own:
        await own.execute(SEAL_SQL, _seal_params(table, row_key, values))
        return _sealed(await own.fetchall())


async def open_column_async(
    cur: psycopg.AsyncCursor[Any], table: str, column: str, rows: Sequence[tuple[uuid.UUID, bytes | None]]
) -> list[str | None]:
    """``open_column`` for an ``AsyncClinicDB`` transaction."""
    async with cur.connection.cursor(row_factory=tuple_row) as own:
        await own.execute(OPEN_SQL, _open_params(table, column, rows))
        return _opened(await own.fetchone(), len(rows))
