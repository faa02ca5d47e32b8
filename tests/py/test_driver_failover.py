"""Replica failover on servers of its own: stopping the replica never fails a read.

These tests stop and start a replica, so they use a throwaway primary +
replica (``throwaway_servers``) instead of the shared ``servers`` fixture, and
run over both drivers like test_driver.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from clinicdb import AsyncClinicDB, ClinicDB
from clinicdb.devcluster.testing import ServerSet, throwaway_servers
from driver_facade import AsyncFacade

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_servers() -> Iterator[ServerSet]:
    """A primary and one replica only these tests disturb."""
    with throwaway_servers(replicas=1) as found:
        if not found.replica_admin_urls or found.cluster is None:
            pytest.skip("needs a local replica (not available with CLINICDB_TEST_DATABASE_URL)")
        yield found


@pytest.fixture(params=["sync", "async"])
def failover_db(request: pytest.FixtureRequest, own_servers: ServerSet) -> Iterator[Any]:
    settings = {"replica_check_interval": 0.2, "breaker_backoff": 0.3, "breaker_max_backoff": 1.0, "health_cache": 0.1}
    if request.param == "sync":
        db: Any = ClinicDB(own_servers.app_url, own_servers.app_replica_urls, **settings)
    else:
        db = AsyncFacade(AsyncClinicDB(own_servers.app_url, own_servers.app_replica_urls, **settings))
    yield db
    db.close()


def _clinic(servers: ServerSet) -> uuid.UUID:
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        row = conn.execute("select clinicdb.create_clinic(%s)", (f"F {uuid.uuid4()}",)).fetchone()
    assert row is not None
    return row[0]


def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _restart_on_same_port(servers: ServerSet) -> None:
    # The driver keeps its URLs, so the replica must come back where it was (the port probe uses SO_REUSEADDR,
    # so the port the server just left, in TIME_WAIT, still counts as free).
    assert servers.cluster is not None
    before = servers.cluster.port("replica1")
    servers.cluster.start_server("replica1")
    assert servers.cluster.port("replica1") == before, "the restarted replica moved to another port"


def test_stopping_the_replica_mid_run_fails_no_read_and_starting_it_brings_reads_back(
    failover_db: Any, own_servers: ServerSet
) -> None:
    """Reads running while the replica stops move to the primary with zero failures, and return when it restarts."""
    db = failover_db
    clinic = _clinic(own_servers)
    cluster = own_servers.cluster
    assert cluster is not None
    _until(lambda: db.router.snapshot()[0]["fit"], 15, "the replica to be fit")

    seen: list[bool] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(db.run_read(lambda cur: cur.execute("select pg_is_in_recovery()").fetchone()[0], clinic))
            except BaseException as exc:
                failures.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        _until(lambda: any(seen), 10, "a read on the replica")
        cluster.stop_server("replica1")
        mark = len(seen)
        _until(lambda: len(seen) > mark + 50, 20, "reads after the stop")
        assert not any(seen[-20:]), "reads should be on the primary while the replica is down"
        assert db.health()["status"] == "degraded"
        metrics = db.metrics()
        assert metrics["failovers"].get("replicas_unavailable", 0) > 0
        assert metrics["breaker_trips"] >= 1
    finally:
        if cluster.pid("replica1") is None:
            _restart_on_same_port(own_servers)
    mark = len(seen)
    _until(lambda: any(seen[mark:]), 30, "reads back on the replica after restart")
    stop.set()
    thread.join(timeout=30)
    assert failures == [], f"{len(failures)} reads failed: {failures[:3]}"


def test_a_write_follows_a_returning_primary_within_a_second_of_the_pools_reconnect_timeout() -> None:
    """After an 8 s outage, a pool with a 1 s reconnect timeout takes writes again within 3 s of the server's return
    (psycopg_pool's doubling waits alone would retry only about 15 s after the outage began)."""
    with throwaway_servers(replicas=0) as servers:
        if servers.cluster is None:
            pytest.skip("needs a local server to stop (not available with CLINICDB_TEST_DATABASE_URL)")
        clinic = _clinic(servers)
        db = ClinicDB(servers.app_url, reconnect_timeout=1.0, acquire_timeout=1.0)
        try:
            db.run_write(lambda cur: cur.execute("select 1"), clinic)
            servers.cluster.stop_server("primary")
            down_until = time.monotonic() + 8
            while time.monotonic() < down_until:
                with pytest.raises(psycopg.Error):
                    db.run_write(lambda cur: cur.execute("select 1"), clinic)
                time.sleep(0.2)
            servers.cluster.start_server("primary")
            back = time.monotonic()
            while True:
                try:
                    db.run_write(lambda cur: cur.execute("select 1"), clinic)
                    break
                except psycopg.Error:
                    assert time.monotonic() - back < 3, "no write within 3 s of the primary's return"
                    time.sleep(0.05)
        finally:
            db.close()
