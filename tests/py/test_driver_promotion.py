"""A promoted replica: the primary goes away, ``pg_ctl promote`` makes the replica a primary, the driver follows.

On servers of their own (the test destroys the pair): a primary and a
streaming replica from ``throwaway_servers``. The driver is given the
primary's URL and the replica's, as an app would be; after the primary stops
and the replica is promoted, writes land on the promoted server, reads still
work, and ``db.health()`` says where writes go and that the pair is degraded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from clinicdb import AsyncClinicDB, ClinicDB
from clinicdb.devcluster.binaries import find_bindir, run_as_server
from clinicdb.devcluster.testing import ServerSet, throwaway_servers
from driver_facade import AsyncFacade

pytestmark = pytest.mark.slow
SETTINGS = {
    "replica_check_interval": 0.2,
    "breaker_backoff": 0.2,
    "breaker_max_backoff": 0.5,
    "health_cache": 0.1,
    "acquire_timeout": 1.0,
    "retry_attempts": 20,
    "retry_backoff": 0.1,
}


@pytest.fixture(params=["sync", "async"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[ServerSet, Any]]:
    """A fresh primary + replica and a driver on them (each run promotes its own replica)."""
    with throwaway_servers(replicas=1) as servers:
        if servers.cluster is None or not servers.replica_admin_urls:
            pytest.skip("needs a local replica (not available with CLINICDB_TEST_DATABASE_URL)")
        if request.param == "sync":
            db: Any = ClinicDB(servers.app_url, servers.app_replica_urls, **SETTINGS)
        else:
            db = AsyncFacade(AsyncClinicDB(servers.app_url, servers.app_replica_urls, **SETTINGS))
        try:
            yield servers, db
        finally:
            db.close()


def _until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_promoted_replica_becomes_the_write_target_and_health_says_so(pair: tuple[ServerSet, Any]) -> None:
    """After the primary stops and the replica is promoted, writes land there and health() reports the failover."""
    servers, db = pair
    cluster = servers.cluster
    assert cluster is not None
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        row = conn.execute("select clinicdb.create_clinic('promotion')").fetchone()
    assert row is not None
    clinic: uuid.UUID = row[0]
    _until(lambda: db.router.snapshot()[0]["fit"], 15, "the replica to be fit")
    assert db.health()["status"] == "healthy"

    def write(cur: Any) -> Any:
        cur.execute(
            "insert into patients (mrn, given_name, family_name) values (%s, 'Pro', 'Moted')", (str(uuid.uuid4()),)
        )
        return cur.execute("select inet_server_port(), pg_is_in_recovery()").fetchone()

    assert db.run_write(write, clinic) == (cluster.port("primary"), False)
    cluster.wait_for_replay()

    cluster.stop_server("primary")
    run_as_server([str(find_bindir() / "pg_ctl"), "promote", "-w", "-D", str(cluster.data_dir("replica1"))])

    assert db.run_write(write, clinic) == (cluster.port("replica1"), False), "the write went to the promoted replica"
    report = _until(lambda: (h := db.health())["write_target"] == "replica1" and h, 10, "health to see the failover")
    assert report["status"] == "degraded"
    servers_seen = {s["name"]: s for s in report["servers"]}
    assert servers_seen["primary"]["up"] and servers_seen["primary"]["in_recovery"] is False
    assert f":{cluster.port('replica1')}/" in servers_seen["primary"]["server"], "the write target is the promoted one"
    assert servers_seen["replica1"]["role"] == "promoted"
    assert any("failed over" in p for p in report["problems"])
    assert db.router.snapshot()[0]["promoted"] is True
    count = db.run_read(
        lambda cur: cur.execute("select count(*), pg_is_in_recovery() from patients").fetchone(), clinic
    )
    assert count == (2, False), "reads find both writes, on the promoted server"
    assert db.metrics()["failovers"].get("primary_moved") == 1


def _standby_url(url: str, ports: list[int]) -> str:
    """``url`` naming every server, asking libpq for a standby: the replica URL pg_auto_failover gives."""
    parts = urlsplit(url)
    login = parts.netloc.rsplit("@", 1)[0]
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    return urlunsplit((parts.scheme, f"{login}@{hosts}", parts.path, "target_session_attrs=standby", ""))


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_replica_url_that_asks_for_a_standby_never_takes_the_writes(flavour: str) -> None:
    """When the server a standby-seeking URL reached is promoted, writes stay with the primary's URL: no move."""
    with throwaway_servers(replicas=1) as servers:
        if servers.cluster is None or not servers.replica_admin_urls:
            pytest.skip("needs a local replica (not available with CLINICDB_TEST_DATABASE_URL)")
        cluster = servers.cluster
        replica = _standby_url(servers.app_url, [cluster.port("primary"), cluster.port("replica1")])
        if flavour == "sync":
            db: Any = ClinicDB(servers.app_url, [replica], **SETTINGS)
        else:
            db = AsyncFacade(AsyncClinicDB(servers.app_url, [replica], **SETTINGS))
        try:
            _until(lambda: db.router.snapshot()[0]["fit"], 15, "the replica to be fit")
            cluster.stop_server("primary")
            run_as_server([str(find_bindir() / "pg_ctl"), "promote", "-w", "-D", str(cluster.data_dir("replica1"))])
            time.sleep(2.0)  # ten background checks: each finds the primary down and the standby URL's server promoted
            assert db.metrics()["failovers"].get("primary_moved") is None, "writes never move to a standby URL"
            assert db.health()["write_target"] == "primary"
            replica_seen = db.router.snapshot()[0]
            assert replica_seen["promoted"] is False and replica_seen["fit"] is False, "no reads go to it either"
        finally:
            db.close()
