"""The opening: whatever the app runs first in a block, it runs with the clinic set.

The driver opens the transaction (``BEGIN`` and the settings) before it hands
the cursor over (python/clinicdb/_wire.py). These tests start a block with
each way psycopg offers to run SQL and check that the first statement already
saw the clinic, for the sync and the async driver, on a pool of one connection
that alternates clinics (so a stale or missing opening would show).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest

from clinicdb import AsyncClinicDB, ClinicDB
from clinicdb.devcluster.testing import ServerSet

SHOW = "select current_setting('app.clinic_id')"


def _first_statements() -> dict[str, Callable[[psycopg.Cursor[Any]], str]]:
    def execute(cur: psycopg.Cursor[Any]) -> str:
        return str(cur.execute(SHOW).fetchone()[0])  # type: ignore[index]

    def connection_execute(cur: psycopg.Cursor[Any]) -> str:
        return str(cur.connection.execute(SHOW).fetchone()[0])  # type: ignore[index]

    def executemany(cur: psycopg.Cursor[Any]) -> str:
        cur.executemany(
            "insert into patients (mrn, given_name, family_name) values (%s, 'Many', 'Rows')",
            [(f"M-{uuid.uuid4()}",), (f"M-{uuid.uuid4()}",)],
        )
        return str(cur.execute(SHOW).fetchone()[0])  # type: ignore[index]

    def copy_out(cur: psycopg.Cursor[Any]) -> str:
        with cur.copy(f"copy ({SHOW}) to stdout") as copy:
            rows = list(copy.rows())
        return str(rows[0][0])

    def stream(cur: psycopg.Cursor[Any]) -> str:
        return str(next(iter(cur.stream(SHOW)))[0])

    def named_cursor(cur: psycopg.Cursor[Any]) -> str:
        with cur.connection.cursor(name="first") as named:
            return str(named.execute(SHOW).fetchone()[0])  # type: ignore[index]

    def client_cursor(cur: psycopg.Cursor[Any]) -> str:
        with psycopg.ClientCursor(cur.connection) as client:
            return str(client.execute(SHOW).fetchone()[0])  # type: ignore[index]

    def transaction(cur: psycopg.Cursor[Any]) -> str:
        with cur.connection.transaction():
            return str(cur.execute(SHOW).fetchone()[0])  # type: ignore[index]

    def pipeline(cur: psycopg.Cursor[Any]) -> str:
        with cur.connection.pipeline():
            cur.execute(SHOW)
        return str(cur.fetchone()[0])  # type: ignore[index]

    def prepared_statement(cur: psycopg.Cursor[Any]) -> str:
        return str(cur.execute(SHOW, prepare=True).fetchone()[0])  # type: ignore[index]

    return {
        f.__name__: f
        for f in (
            execute,
            connection_execute,
            executemany,
            copy_out,
            stream,
            named_cursor,
            client_cursor,
            transaction,
            pipeline,
            prepared_statement,
        )
    }


FIRST = _first_statements()


@pytest.fixture(params=["prepared", "unprepared"])
def db_of_one(request: pytest.FixtureRequest, servers: ServerSet) -> Iterator[ClinicDB]:
    """A pool of one; "unprepared" is CLINICDB_PREPARE_THRESHOLD=none (pgbouncer before 1.21)."""
    extra: dict[str, Any] = {"prepare_threshold": None} if request.param == "unprepared" else {}
    db = ClinicDB(servers.app_url, [], min_size=1, max_size=1, **extra)
    yield db
    db.close()


@pytest.mark.parametrize("first", sorted(FIRST))
def test_every_way_to_start_a_transaction_runs_with_the_clinic_set(
    db_of_one: ClinicDB, clinic_pair: Any, first: str
) -> None:
    """The block's first statement, however it is sent, sees the block's clinic (never none, never the last one)."""
    for clinic in (*clinic_pair, *clinic_pair):
        with db_of_one.write(clinic) as cur:
            assert FIRST[first](cur) == str(clinic)
        with db_of_one.read(clinic) as cur:
            if first != "executemany":  # a read-only transaction cannot insert
                assert FIRST[first](cur) == str(clinic)


def test_a_block_that_runs_nothing_leaves_the_connection_idle(db_of_one: ClinicDB, clinic_pair: Any) -> None:
    """An empty block leaves the connection idle; the next block on the same connection gets its own clinic."""
    a, b = clinic_pair
    with db_of_one.write(a):
        pass
    with db_of_one.primary.pool.connection() as conn:
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with db_of_one.read(b) as cur:
        assert cur.execute(SHOW).fetchone() == (str(b),)


def test_the_prepared_opening_survives_a_discard_all(db_of_one: ClinicDB, clinic_pair: Any) -> None:
    """A pooler's DISCARD ALL drops the prepared opening: the driver prepares it again and the block goes on."""
    a, b = clinic_pair
    with db_of_one.write(a) as cur:
        cur.execute(SHOW)
    with db_of_one.primary.pool.connection() as conn:
        conn.rollback()
        conn.autocommit = True
        conn.execute("discard all")
        conn.autocommit = False
    with db_of_one.read(b) as cur:
        assert cur.execute(SHOW).fetchone() == (str(b),)


async def _async_first(cur: psycopg.AsyncCursor[Any], first: str) -> str:
    ways: dict[str, Callable[[], Awaitable[Any]]] = {}

    async def execute() -> Any:
        return (await (await cur.execute(SHOW)).fetchone())[0]  # type: ignore[index]

    async def executemany() -> Any:
        await cur.executemany(
            "insert into patients (mrn, given_name, family_name) values (%s, 'Many', 'Rows')",
            [(f"M-{uuid.uuid4()}",), (f"M-{uuid.uuid4()}",)],
        )
        return await execute()

    async def copy_out() -> Any:
        async with cur.copy(f"copy ({SHOW}) to stdout") as copy:
            rows = [row async for row in copy.rows()]
        return rows[0][0]

    async def transaction() -> Any:
        async with cur.connection.transaction():
            return await execute()

    async def pipeline() -> Any:
        async with cur.connection.pipeline():
            await cur.execute(SHOW)
        return (await cur.fetchone())[0]  # type: ignore[index]

    ways.update(execute=execute, executemany=executemany, copy_out=copy_out, transaction=transaction, pipeline=pipeline)
    return str(await ways[first]())


@pytest.mark.parametrize("first", ["execute", "executemany", "copy_out", "transaction", "pipeline"])
def test_async_driver_starts_every_transaction_with_the_clinic_set(
    servers: ServerSet, clinic_pair: Any, first: str
) -> None:
    """The same guarantee for AsyncClinicDB, with the async ways to run a first statement."""

    async def main() -> list[tuple[str, str]]:
        seen = []
        async with AsyncClinicDB(servers.app_url, [], min_size=1, max_size=1) as db:
            for clinic in (*clinic_pair, *clinic_pair):
                async with db.write(clinic) as cur:
                    seen.append((await _async_first(cur, first), str(clinic)))
        return seen

    for got, wanted in asyncio.run(main()):
        assert got == wanted
