"""Setting the clinic costs no round trip: a scoped read makes as many as a bare psycopg_pool transaction.

Both talk to the primary through tests/py/tcp_proxy.py, which counts the
client's request flights. A bare pool transaction with one point SELECT is
three (BEGIN, the SELECT, COMMIT); the driver's is three too (BEGIN with the
prepared set_config in one flight, the SELECT, the closing COMMIT). psycopg
prepares the repeated SELECT in a flight of its own, on both sides alike.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from clinicdb import AsyncClinicDB, ClinicDB
from clinicdb.devcluster.testing import ServerSet
from tcp_proxy import CountingProxy

POINT = "select mrn from patients where mrn = %s"
TRANSACTIONS = 12  # past psycopg's prepare_threshold (5): prepared and unprepared executions both counted


@pytest.fixture
def proxy(servers: ServerSet) -> Iterator[CountingProxy]:
    found = CountingProxy(servers.app_url)
    yield found
    found.close()


def _bare_flights(proxy: CountingProxy, url: str) -> int:
    with ConnectionPool(proxy.url_for(url), min_size=1, max_size=1, open=True) as pool:
        pool.wait()
        with pool.connection() as conn:  # warm: the pool's own start-up is not counted
            conn.execute("select 1")
        before = proxy.flights
        for i in range(TRANSACTIONS):
            with pool.connection() as conn:
                conn.execute(POINT, (f"RT-{i}",)).fetchone()
        return proxy.flights - before


def test_scoped_read_makes_as_many_round_trips_as_a_bare_pool_transaction(
    proxy: CountingProxy, servers: ServerSet, clinic_pair: Any
) -> None:
    """A db.read with one point SELECT: the same number of round trips as the SELECT in a bare pool transaction."""
    a, _b = clinic_pair
    bare = _bare_flights(proxy, servers.app_url)
    # BEGIN, SELECT, COMMIT each; plus one flight in which psycopg prepares the SELECT (at its 5th run).
    assert bare == 3 * TRANSACTIONS + 1
    with ClinicDB(proxy.url_for(servers.app_url), [], min_size=1, max_size=1) as db:
        with db.read(a) as cur:
            cur.execute("select 1")
        before = proxy.flights
        for i in range(TRANSACTIONS):
            with db.read(a, user_id="rt", request_id=f"req-{i}") as cur:
                cur.execute(POINT, (f"RT-{i}",)).fetchone()
        assert proxy.flights - before == bare


def test_async_scoped_read_makes_as_many_round_trips_as_a_bare_pool_transaction(
    proxy: CountingProxy, servers: ServerSet, clinic_pair: Any
) -> None:
    """The same count for AsyncClinicDB."""
    a, _b = clinic_pair
    bare = _bare_flights(proxy, servers.app_url)

    async def scoped() -> int:
        async with AsyncClinicDB(proxy.url_for(servers.app_url), [], min_size=1, max_size=1) as db:
            async with db.read(a) as cur:
                await cur.execute("select 1")
            before = proxy.flights
            for i in range(TRANSACTIONS):
                async with db.read(a, user_id="rt") as cur:
                    await cur.execute(POINT, (f"RT-{i}",))
                    await cur.fetchone()
            return proxy.flights - before

    assert asyncio.run(scoped()) == bare


def test_the_opening_is_prepared_once_and_the_apps_statements_stay_server_side(
    proxy: CountingProxy, servers: ServerSet, clinic_pair: Any
) -> None:
    """The set_config select runs as a prepared statement with parameters; the app's SELECT gets prepared by psycopg."""
    a, _b = clinic_pair
    with ClinicDB(proxy.url_for(servers.app_url), [], min_size=1, max_size=1) as db:
        marker = f"RT-{uuid.uuid4()}"
        for _ in range(8):
            with db.read(a) as cur:
                cur.execute(POINT, (marker,))
        with db.read(a) as cur:
            rows = cur.execute(
                "select name, parameter_types::text[] from pg_prepared_statements order by name"
            ).fetchall()
    names = dict(rows)
    assert names["clinicdb_open_0"][:3] == ["text", "text", "text"], "the clinic travels as a parameter"
    assert any(name.startswith("_pg3_") for name in names), "psycopg prepared the app's repeated SELECT"
