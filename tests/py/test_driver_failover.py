"""Failures around a transaction: a replica that stops, connections that die before or during a transaction.

The replica tests stop and start a replica, so they use a throwaway primary +
replica (``throwaway_servers``) instead of the shared ``servers`` fixture.
The others put tests/py/tcp_proxy.py between the driver and the primary to
cut connections at exact moments. All run over both drivers like test_driver.py.
(A promoted replica: test_driver_promotion.py.)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from clinicdb import AsyncClinicDB, ClinicDB, CommitOutcomeUnknown
from clinicdb.devcluster.testing import ServerSet, throwaway_servers
from driver_facade import AsyncFacade
from tcp_proxy import CountingProxy

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


@pytest.fixture(params=["sync", "async"])
def proxied(request: pytest.FixtureRequest, servers: ServerSet) -> Iterator[tuple[CountingProxy, Any]]:
    """A proxy in front of the primary and a driver (pool of one) connected through it."""
    proxy = CountingProxy(servers.app_url)
    settings = {"min_size": 1, "max_size": 1, "acquire_timeout": 0.7, "retry_backoff": 0.01}
    url = proxy.url_for(servers.app_url)
    db: Any = (
        ClinicDB(url, [], **settings) if request.param == "sync" else AsyncFacade(AsyncClinicDB(url, [], **settings))
    )
    try:
        yield proxy, db
    finally:
        db.close()
        proxy.close()


def _warmed(proxied: tuple[CountingProxy, Any], clinic_pair: Any) -> tuple[CountingProxy, Any, uuid.UUID, uuid.UUID]:
    """The proxy, the driver with its one pooled connection opened through the proxy, and the two clinics."""
    proxy, db = proxied
    a, b = clinic_pair
    with db.write(a) as cur:
        cur.execute("select 1")
    return proxy, db, a, b


def _insert(cur: Any, mrn: str) -> None:
    cur.execute("insert into patients (mrn, given_name, family_name) values (%s, 'Fail', 'Over')", (mrn,))


def _count(db: Any, clinic: uuid.UUID, mrn: str) -> int:
    with db.read(clinic) as cur:
        return int(cur.execute("select count(*) from patients where mrn = %s", (mrn,)).fetchone()[0])


def test_a_pooled_connection_that_died_silently_is_swapped_before_the_block_runs(
    proxied: tuple[CountingProxy, Any], clinic_pair: Any
) -> None:
    """The opening finds the dead connection, and the block runs on another one: no error, no retry of the block."""
    proxy, db, a, _b = _warmed(proxied, clinic_pair)
    proxy.sever_idle()
    mrn = f"SWAP-{uuid.uuid4().hex[:8]}"
    with db.write(a) as cur:
        _insert(cur, mrn)
    metrics = db.metrics()
    assert metrics["reopened"] == 1 and metrics["retries"]["write"] == 0
    assert _count(db, a, mrn) == 1


def test_a_write_refused_before_any_byte_was_sent_is_retried_once_by_run_write(
    proxied: tuple[CountingProxy, Any], clinic_pair: Any
) -> None:
    """With the server refusing connections, run_write's first attempt gets none; the retry lands the write once."""
    proxy, db, a, _b = _warmed(proxied, clinic_pair)
    proxy.refuse(1)  # the pool's reconnect is refused; its next try (about 1 s later) is let through
    proxy.sever_idle()
    calls: list[int] = []
    mrn = f"UNSENT-{uuid.uuid4().hex[:8]}"

    def write(cur: Any) -> str:
        calls.append(1)
        _insert(cur, mrn)
        return "written"

    assert db.run_write(write, a) == "written"
    assert proxy.refused == 1
    assert calls == [1], "the first attempt never reached the block: nothing of it was sent"
    assert db.metrics()["retries"]["write"] == 1
    assert _count(db, a, mrn) == 1


def test_settle_says_whether_a_write_with_an_unknown_commit_outcome_landed(
    proxied: tuple[CountingProxy, Any], clinic_pair: Any
) -> None:
    """After CommitOutcomeUnknown settle() says yes when the COMMIT landed, no when it never reached the server."""
    proxy, db, a, b = _warmed(proxied, clinic_pair)
    landed, lost = f"settle-{uuid.uuid4()}", f"settle-{uuid.uuid4()}"
    with pytest.raises(CommitOutcomeUnknown) as yes, db.write(a, request_id=landed) as cur:
        _insert(cur, landed[:40])
        proxy.lose_next_reply()  # the COMMIT reaches the server; its answer does not come back
    assert (yes.value.request_id, yes.value.clinic_id) == (landed, a)
    assert db.settle(yes.value.request_id, yes.value.clinic_id, since=yes.value.started_at) is True
    with pytest.raises(CommitOutcomeUnknown) as no, db.write(a, request_id=lost) as cur:
        _insert(cur, lost[:40])
        proxy.sever_idle()  # the COMMIT never reaches the server
    assert db.settle(no.value.request_id, no.value.clinic_id, since=no.value.started_at) is False
    assert db.settle(landed, a) is True, "without since= the whole trail is searched"
    assert db.settle(landed, b) is False, "another clinic's settle never sees the write"
    assert (_count(db, a, landed[:40]), _count(db, a, lost[:40])) == (1, 0)
    assert db.metrics()["commit_outcome_unknown"] == 2


def test_a_write_whose_commit_completed_is_never_reported_as_failed(failover_db: Any, own_servers: ServerSet) -> None:
    """COMMIT completed and then the causal token's select failed: the block reports success, the row is there.

    (A statement timeout firing just after a COMMIT that waited on a synchronous standby does the same: the
    HA soak once saw a write reported failed that had committed.) Here the token's function is made to fail.
    """
    db, clinic = failover_db, _clinic(own_servers)
    mrn = f"DONE-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(own_servers.admin_url, autocommit=True) as admin:
        admin.execute("revoke execute on function pg_current_wal_insert_lsn() from public")
        try:
            with db.write(clinic) as cur:
                _insert(cur, mrn)
        finally:
            admin.execute("grant execute on function pg_current_wal_insert_lsn() to public")
        row = admin.execute("select count(*) from patients where mrn = %s", (mrn,)).fetchone()
    assert row == (1,)
    assert db.metrics()["commit_outcome_unknown"] == 0
