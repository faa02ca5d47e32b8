"""The driver's promises, against the real embedded primary + replica.

Every test here runs twice through the ``make_db`` fixture: once with
``ClinicDB`` and once with ``AsyncClinicDB`` (behind tests/py/driver_facade.py),
so the async twin faces the same suite.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.rows import class_row, dict_row

from clinicdb import (
    AsyncClinicDB,
    CausalToken,
    ClinicDB,
    CommitOutcomeUnknown,
    NoClinicScope,
    PoolExhausted,
    TransactionAborted,
    UnsafeLogin,
    clinic_scope,
    current_clinic_id,
)
from clinicdb.devcluster.testing import ServerSet
from driver_facade import AsyncFacade

Make = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def make_db(request: pytest.FixtureRequest, replica_servers: ServerSet) -> Iterator[Make]:
    """Build a ClinicDB or an AsyncClinicDB (blocking facade) on the test servers; closed at the end."""
    created: list[Any] = []

    def make(primary: str | None = None, replicas: list[str] | None = None, **settings: Any) -> Any:
        primary = primary or replica_servers.app_url
        replicas = replica_servers.app_replica_urls if replicas is None else replicas
        if request.param == "sync":
            db: Any = ClinicDB(primary, replicas, **settings)
        else:
            db = AsyncFacade(AsyncClinicDB(primary, replicas, **settings))
        created.append(db)
        return db

    yield make
    for db in created:
        db.close()


@pytest.fixture
def db(make_db: Make) -> Any:
    return make_db()


def _raw_setting(db: Any, name: str) -> Any:
    if isinstance(db, AsyncFacade):
        return db.raw_setting(name)
    with db.primary.pool.connection() as conn:
        row = conn.execute("select current_setting(%s, true)", (name,)).fetchone()
        return row[0] if row else None


def _add_patient(db: Any, clinic: uuid.UUID, mrn: str) -> None:
    with db.write(clinic) as cur:
        cur.execute("insert into patients (mrn, given_name, family_name) values (%s, 'Test', 'Patient')", (mrn,))


def _wait_replica_fit(db: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not all(r["fit"] for r in db.router.snapshot()):
        if time.monotonic() > deadline:
            raise AssertionError(f"replica never became fit: {db.router.snapshot()}")
        time.sleep(0.05)


# -- scoped transactions ----------------------------------------------------------


def test_settings_are_set_inside_the_transaction_and_gone_after(make_db: Make, clinic_pair: Any) -> None:
    """app.clinic_id, app.user_id and app.request_id hold inside the block and nothing of them remains after."""
    a, _b = clinic_pair
    db = make_db(replicas=[], min_size=1, max_size=1)
    with db.write(a, user_id="dr-lee", request_id="req-1") as cur:
        row = cur.execute(
            "select current_setting('app.clinic_id'), current_setting('app.user_id'), current_setting('app.request_id')"
        ).fetchone()
    assert row == (str(a), "dr-lee", "req-1")
    for name in ("app.clinic_id", "app.user_id", "app.request_id"):
        assert _raw_setting(db, name) in (None, ""), f"{name} outlived its transaction"


def test_pool_of_one_alternating_clinics_never_leaks(make_db: Make, clinic_pair: Any) -> None:
    """One pooled connection serving two clinics in turn shows each only its own rows and clinic."""
    a, b = clinic_pair
    db = make_db(replicas=[], min_size=1, max_size=1)
    _add_patient(db, a, "LEAK-A")
    _add_patient(db, b, "LEAK-B")
    for i in range(20):
        clinic, mine = (a, "LEAK-A") if i % 2 == 0 else (b, "LEAK-B")
        user = "u-a" if i % 2 == 0 else None
        use = db.read if i % 3 else db.write
        with use(clinic, user_id=user) as cur:
            rows = cur.execute("select mrn from patients").fetchall()
            setting = cur.execute("select current_setting('app.clinic_id'), current_setting('app.user_id')").fetchone()
        assert [r[0] for r in rows] == [mine]
        assert setting == (str(clinic), user or "")
    assert db.metrics()["pools"]["primary"]["connections_num"] == 1


@pytest.mark.parametrize("ending", ["commit", "block-commits-itself", "error"])
@pytest.mark.parametrize("kind", ["write", "read"])
def test_pool_of_one_carries_no_held_cursor_or_temp_table_into_the_next_clinic(
    make_db: Make, clinic_pair: Any, kind: str, ending: str
) -> None:
    """A WITH HOLD cursor or temporary table (no RLS) made for clinic A is gone when clinic B gets the connection.

    However A's block ends: normal commit, a COMMIT the block ran itself, or an exception after a commit.
    """
    a, b = clinic_pair
    db = make_db(replicas=[], min_size=1, max_size=1)
    _add_patient(db, a, "HELD-A")
    use = db.write if kind == "write" else db.read
    with contextlib.suppress(RuntimeError), use(a) as cur:
        if kind == "write":  # a read-only transaction cannot create tables, temporary ones included
            cur.execute("create temporary table stash as select mrn from patients")
        cur.execute("declare held cursor with hold for select mrn from patients")
        if ending != "commit":
            cur.execute("commit")
        if ending == "error":
            raise RuntimeError("the app fails after its own commit")
    with db.read(b) as cur:
        left = cur.execute(
            "select (select count(*) from pg_cursors where name = 'held'), to_regclass('pg_temp.stash') is null"
        ).fetchone()
        assert left == (0, True), "clinic A's held cursor or temp table reached clinic B's transaction"
        with pytest.raises(psycopg.errors.InvalidCursorName):
            cur.execute("fetch all from held")
    assert db.metrics()["pools"]["primary"]["connections_num"] == 1


def test_reads_land_on_the_replica_and_writes_on_the_primary(db: Any, clinic_pair: Any) -> None:
    """Inside db.read pg_is_in_recovery() is true (a replica); inside db.write it is false (the primary)."""
    a, _b = clinic_pair
    _wait_replica_fit(db)
    with db.read(a) as cur:
        assert cur.execute("select pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            cur.execute("insert into patients (mrn, given_name, family_name) values ('RO', 'a', 'b')")
    with db.write(a) as cur:
        assert cur.execute("select pg_is_in_recovery()").fetchone() == (False,)
    routes = db.metrics()["routes"]
    assert routes["replica"]["transactions"] >= 1 and routes["primary"]["transactions"] >= 1


def test_replicas_take_reads_round_robin(make_db: Make, replica_servers: ServerSet, clinic_pair: Any) -> None:
    """With two replica pools (the same server twice) reads alternate between them."""
    a, _b = clinic_pair
    url = replica_servers.app_replica_urls[0]
    db = make_db(replicas=[url, url])
    _wait_replica_fit(db)
    for _ in range(4):
        with db.read(a) as cur:
            cur.execute("select 1")
    used = {name: stats.get("requests_num", 0) for name, stats in db.metrics()["pools"].items() if name != "primary"}
    assert used == {"replica1": 2, "replica2": 2}


def test_read_with_a_fresh_writes_token_sees_that_write(make_db: Make, clinic_pair: Any) -> None:
    """A read given the token of a write just committed sees the write, explicitly and by default."""
    a, _b = clinic_pair
    writer = make_db()
    _wait_replica_fit(writer)
    mrn = f"RYW-{uuid.uuid4().hex[:8]}"
    _add_patient(writer, a, mrn)
    token = writer.last_write_token()
    assert isinstance(token, CausalToken)
    with writer.read(a) as cur:  # remembered for this caller
        assert cur.execute("select count(*) from patients where mrn = %s", (mrn,)).fetchone() == (1,)
    other = make_db(read_your_writes=False)  # a different object: only the explicit token helps
    with other.read(a, after=CausalToken.parse(str(token))) as cur:
        assert cur.execute("select count(*) from patients where mrn = %s", (mrn,)).fetchone() == (1,)


def test_token_reads_go_to_a_replica_once_it_has_replayed(
    make_db: Make, replica_servers: ServerSet, clinic_pair: Any
) -> None:
    """After the replica replays past the token, token reads are served by the replica again."""
    a, _b = clinic_pair
    db = make_db(causal_wait=2.0)
    _wait_replica_fit(db)
    _add_patient(db, a, f"TOK-{uuid.uuid4().hex[:8]}")
    assert replica_servers.cluster is not None
    replica_servers.cluster.wait_for_replay()
    with db.read(a) as cur:  # causal_wait lets the router check the replica instead of giving up on it
        assert cur.execute("select pg_is_in_recovery()").fetchone() == (True,)


def test_malformed_clinic_id_sends_no_sql(db: Any) -> None:
    """A malformed clinic id is a ValueError naming the argument, raised before any connection is asked for."""
    before = {n: s.get("requests_num", 0) for n, s in db.metrics()["pools"].items()}
    for bad in ("not-a-uuid", "", "1234", 42, "0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b1"):
        with pytest.raises(ValueError, match="clinic_id"), db.read(bad) as cur:
            cur.execute("select 1")
        with pytest.raises(ValueError, match="clinic_id"):
            db.run_write(lambda cur: None, bad)
    after = {n: s.get("requests_num", 0) for n, s in db.metrics()["pools"].items()}
    assert after == before


def test_malformed_clinic_id_fails_before_any_connection(servers: ServerSet) -> None:
    """Validation comes first: against a server that does not exist, the error is still the ValueError."""
    db = ClinicDB("postgresql://nobody@127.0.0.1:1/none", open=False)
    with pytest.raises(ValueError, match="clinic_id"), db.write("0b9a5f4e"):
        pass


def test_no_clinic_and_no_scope_refuses_without_sql(db: Any) -> None:
    """Without a clinic argument or an active clinic_scope the driver raises NoClinicScope and sends nothing."""
    before = db.metrics()["pools"]["primary"].get("requests_num", 0)
    with pytest.raises(NoClinicScope), db.read() as cur:
        cur.execute("select 1")
    assert db.metrics()["pools"]["primary"].get("requests_num", 0) == before


def test_clinic_scope_sets_the_clinic_for_a_block(db: Any, clinic_pair: Any) -> None:
    """Inside clinic_scope, reads and writes without a clinic argument use the scope's clinic and user."""
    a, b = clinic_pair
    with clinic_scope(a, user_id="scoped"):
        with db.write() as cur:
            assert cur.execute(
                "select current_setting('app.clinic_id'), current_setting('app.user_id')"
            ).fetchone() == (
                str(a),
                "scoped",
            )
        with clinic_scope(b), db.read() as cur:
            assert cur.execute("select current_setting('app.clinic_id')").fetchone() == (str(b),)
        with db.read(b, user_id="explicit") as cur:  # explicit arguments win
            assert cur.execute("select current_setting('app.user_id')").fetchone() == ("explicit",)
    with pytest.raises(NoClinicScope), db.read():
        pass


def test_current_clinic_id_is_the_scopes_validated_clinic_for_the_apps_filter(db: Any, clinic_pair: Any) -> None:
    """current_clinic_id() gives the active scope's clinic as a uuid.UUID (a text id is validated), usable as the
    query's own clinic_id parameter; outside a scope it raises NoClinicScope."""
    a, _ = clinic_pair
    with db.write(a) as cur:
        cur.execute("insert into patients (mrn, given_name, family_name) values ('CC-1', 'Ann', 'Lee')")
    with clinic_scope(str(a)), db.read() as cur:
        assert current_clinic_id() == a and isinstance(current_clinic_id(), uuid.UUID)
        rows = cur.execute("select mrn from patients where clinic_id = %s and mrn = 'CC-1'", (current_clinic_id(),))
        assert rows.fetchall() == [("CC-1",)]
    with pytest.raises(NoClinicScope):
        current_clinic_id()


def test_clinic_scope_follows_contexts_not_threads(clinic_pair: Any, replica_servers: ServerSet) -> None:
    """A thread started in a copy of the context inherits the scope; a bare thread has none and is refused."""
    a, _b = clinic_pair
    results: dict[str, Any] = {}
    with ClinicDB(replica_servers.app_url, []) as db:

        def work(key: str) -> None:
            try:
                with db.read() as cur:
                    results[key] = cur.execute("select current_setting('app.clinic_id')").fetchone()
            except NoClinicScope as exc:
                results[key] = exc

        with clinic_scope(a):
            ctx = contextvars.copy_context()
            t1 = threading.Thread(target=ctx.run, args=(work, "copied"))
            t2 = threading.Thread(target=work, args=("bare",))
            t1.start(), t2.start()
            t1.join(), t2.join()
    assert results["copied"] == (str(a),)
    assert isinstance(results["bare"], NoClinicScope)


def test_clinic_scope_is_per_asyncio_task(clinic_pair: Any, replica_servers: ServerSet) -> None:
    """Concurrent tasks in different scopes each see their own clinic."""
    import asyncio

    a, b = clinic_pair

    async def main() -> list[Any]:
        async with AsyncClinicDB(replica_servers.app_url, []) as db:

            async def one(clinic: uuid.UUID) -> Any:
                with clinic_scope(clinic):
                    await asyncio.sleep(0.01)
                    async with db.read() as cur:
                        await cur.execute("select current_setting('app.clinic_id')")
                        return await cur.fetchone()

            return list(await asyncio.gather(*(one(c) for c in (a, b, a, b))))

    assert asyncio.run(main()) == [(str(a),), (str(b),), (str(a),), (str(b),)]


def test_extra_settings_are_transaction_local_and_never_echoed(make_db: Make, clinic_pair: Any) -> None:
    """Extra settings hold inside the transaction only; bad ones are refused without showing the value."""
    a, _b = clinic_pair
    db = make_db(replicas=[], min_size=1, max_size=1)
    with db.write(a, settings={"clinicdb.master_key": "s3cret-key"}) as cur:
        assert cur.execute("select current_setting('clinicdb.master_key')").fetchone() == ("s3cret-key",)
    assert _raw_setting(db, "clinicdb.master_key") in (None, "")
    with pytest.raises(ValueError, match="custom setting") as info, db.write(a, settings={"role": "postgres"}):
        pass
    assert "postgres" not in str(info.value).split("'role'")[-1]
    with pytest.raises(ValueError) as info2, db.write(a, settings={"clinicdb.master_key": "bad\x00value"}):
        pass
    assert "bad" not in str(info2.value)
    with pytest.raises(ValueError, match="set by the driver"), db.write(a, settings={"app.clinic_id": str(a)}):
        pass


def test_row_factories_pass_through(db: Any, clinic_pair: Any) -> None:
    """dict_row and class_row given to read/write shape the rows the cursor returns."""
    a, _b = clinic_pair
    _add_patient(db, a, "ROWF")

    @dataclass
    class Patient:
        mrn: str
        family_name: str

    with db.write(a, row_factory=dict_row) as cur:
        assert cur.execute("select mrn, family_name from patients").fetchall() == [
            {"mrn": "ROWF", "family_name": "Patient"}
        ]
    with db.write(a, row_factory=class_row(Patient)) as cur:
        assert cur.execute("select mrn, family_name from patients").fetchall() == [Patient("ROWF", "Patient")]


def test_caught_error_inside_block_rolls_back_and_says_so(db: Any, clinic_pair: Any) -> None:
    """A statement error swallowed inside db.write ends in TransactionAborted, and nothing of the block is kept."""
    a, _b = clinic_pair
    with pytest.raises(TransactionAborted), db.write(a) as cur:
        cur.execute("insert into patients (mrn, given_name, family_name) values ('ABORT', 'a', 'b')")
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            cur.execute("select 1/0")
    with db.write(a) as cur:
        assert cur.execute("select count(*) from patients where mrn = 'ABORT'").fetchone() == (0,)


def test_statement_timeout_applies_per_transaction(make_db: Make, clinic_pair: Any) -> None:
    """CLINICDB_STATEMENT_TIMEOUT_MS cancels a statement that runs longer."""
    a, _b = clinic_pair
    db = make_db(replicas=[], statement_timeout_ms=100)
    with pytest.raises(psycopg.errors.QueryCanceled), db.write(a) as cur:
        cur.execute("select pg_sleep(1)")


# -- retries ----------------------------------------------------------------------


def _conflicting_update(servers: ServerSet, patient: Any) -> None:
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute("update patients set address = 'concurrent' where id = %s", (patient,))


def _patient_id(db: Any, clinic: uuid.UUID, mrn: str) -> Any:
    _add_patient(db, clinic, mrn)
    with db.write(clinic) as cur:
        row = cur.execute("select id from patients where mrn = %s", (mrn,)).fetchone()
    return row[0]


def test_serialization_failure_is_retried_and_succeeds(db: Any, servers: ServerSet, clinic_pair: Any) -> None:
    """A real 40001 (a concurrent update under repeatable read) makes run_write run the transaction again."""
    a, _b = clinic_pair
    patient = _patient_id(db, a, "SER-1")
    attempts: list[int] = []

    def change(cur: Any) -> str:
        attempts.append(1)
        cur.execute("select address from patients where id = %s", (patient,)).fetchone()  # takes the snapshot
        if len(attempts) == 1:
            _conflicting_update(servers, patient)
        cur.execute("update patients set address = 'mine' where id = %s", (patient,))
        return "done"

    assert db.run_write(change, a, isolation="repeatable read") == "done"
    assert len(attempts) == 2
    assert db.metrics()["retries"]["write"] == 1
    with db.write(a) as cur:
        assert cur.execute("select address from patients where id = %s", (patient,)).fetchone() == ("mine",)


def test_context_managers_do_not_retry(db: Any, servers: ServerSet, clinic_pair: Any) -> None:
    """The same conflict inside db.write raises SerializationFailure to the caller."""
    a, _b = clinic_pair
    patient = _patient_id(db, a, "SER-2")
    with pytest.raises(psycopg.errors.SerializationFailure), db.write(a, isolation="repeatable read") as cur:
        cur.execute("select address from patients where id = %s", (patient,)).fetchone()
        _conflicting_update(servers, patient)
        cur.execute("update patients set address = 'mine' where id = %s", (patient,))
    assert db.metrics()["retries"]["write"] == 0


def test_write_with_unknown_commit_outcome_is_never_retried(db: Any, servers: ServerSet, clinic_pair: Any) -> None:
    """When the connection dies before COMMIT's answer, run_write raises CommitOutcomeUnknown after one attempt."""
    a, _b = clinic_pair
    calls: list[int] = []

    def doomed(cur: Any) -> None:
        calls.append(1)
        pid = cur.execute("select pg_backend_pid()").fetchone()[0]
        with psycopg.connect(servers.admin_url, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (pid,))
        time.sleep(0.1)

    with pytest.raises(CommitOutcomeUnknown):
        db.run_write(doomed, a)
    assert len(calls) == 1
    assert db.metrics()["commit_outcome_unknown"] == 1


def test_read_retried_after_connection_loss(make_db: Make, servers: ServerSet, clinic_pair: Any) -> None:
    """A read whose connection is killed mid-transaction is run again by run_read and returns its answer."""
    a, _b = clinic_pair
    db = make_db(replicas=[])
    calls: list[int] = []

    def read(cur: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            pid = cur.execute("select pg_backend_pid()").fetchone()[0]
            with psycopg.connect(servers.admin_url, autocommit=True) as admin:
                admin.execute("select pg_terminate_backend(%s)", (pid,))
            time.sleep(0.1)
        return cur.execute("select current_setting('app.clinic_id')").fetchone()

    assert db.run_read(read, a) == (str(a),)
    assert len(calls) == 2 and db.metrics()["retries"]["read"] == 1


@pytest.mark.parametrize("kind", ["write", "read"])
def test_idle_pooled_connection_the_server_ended_is_replaced_at_checkout(
    make_db: Make, servers: ServerSet, clinic_pair: Any, kind: str
) -> None:
    """A pooled connection whose backend was terminated while idle is discarded at checkout, before any SQL.

    The next transaction runs on a fresh connection without an error and without a retry.
    """
    a, _b = clinic_pair
    db = make_db(replicas=[], min_size=1, max_size=1)
    with db.write(a) as cur:
        pid = cur.execute("select pg_backend_pid()").fetchone()[0]
    with psycopg.connect(servers.admin_url, autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)  # the server's goodbye and end-of-file reach the idle socket
    use = db.write if kind == "write" else db.read
    with use(a) as cur:
        row = cur.execute("select pg_backend_pid(), current_setting('app.clinic_id')").fetchone()
    assert row[0] != pid and row[1] == str(a)
    assert db.metrics()["retries"] == {"read": 0, "write": 0}


# -- limits and logins ------------------------------------------------------------


def test_pool_exhaustion_raises_with_the_pools_numbers(make_db: Make, clinic_pair: Any) -> None:
    """When every connection is busy past the acquire timeout, PoolExhausted says how big the pool is."""
    a, _b = clinic_pair
    db = make_db(replicas=[], min_size=1, max_size=1, acquire_timeout=0.3)
    errors: list[BaseException] = []
    with db.write(a):

        def second() -> None:
            try:
                with db.write(a):
                    pass
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=second)
        t.start()
        t.join()
    assert len(errors) == 1 and isinstance(errors[0], PoolExhausted)
    assert "1 open of max 1" in str(errors[0]) and "CLINICDB_POOL_MAX_SIZE" in str(errors[0])


@pytest.mark.parametrize("attribute", ["superuser", "bypassrls", "member of bypassrls"])
def test_logins_that_bypass_rls_are_refused(admin: psycopg.Connection, servers: ServerSet, attribute: str) -> None:
    """A superuser or BYPASSRLS login (directly or through a role it can SET ROLE to) is refused on connect."""
    login = f"unsafe_{uuid.uuid4().hex[:8]}"
    if attribute == "superuser":
        admin.execute(f"create role {login} login superuser")
    elif attribute == "bypassrls":
        admin.execute(f"create role {login} login bypassrls")
        admin.execute(f"grant clinicdb_app to {login}")
    else:
        admin.execute(f"create role {login}_grp bypassrls")
        admin.execute(f"create role {login} login in role clinicdb_app, {login}_grp")
    url = servers.login_url(login)
    try:
        with pytest.raises(UnsafeLogin, match=r"row level security|superuser"):
            ClinicDB(url)
        with pytest.raises(UnsafeLogin):
            import asyncio

            asyncio.run(AsyncClinicDB(url).open())
    finally:  # leave no unsafe role behind: clinicdb check would rightly report it
        admin.execute(f"drop role {login}")
        admin.execute(f"drop role if exists {login}_grp")


def test_unsafe_login_opt_out_is_explicit_and_loud(servers: ServerSet, caplog: pytest.LogCaptureFixture) -> None:
    """Only unsafe_allow_rls_bypass_login=True lets such a login in, and it logs a warning saying so."""
    with caplog.at_level(logging.WARNING, logger="clinicdb.driver"):
        db = ClinicDB(servers.admin_url, unsafe_allow_rls_bypass_login=True)
        db.close()
    assert any("unsafe_allow_rls_bypass_login" in r.getMessage() for r in caplog.records)


# -- bulk load --------------------------------------------------------------------


def test_copy_rows_loads_through_the_policies(db: Any, clinic_pair: Any) -> None:
    """copy_rows fills clinic_id from the scope, and a row naming another clinic is refused with nothing loaded."""
    a, b = clinic_pair
    n = db.copy_rows(
        a, "patients", ["mrn", "given_name", "family_name"], [(f"CP-{i}", "Copy", "Row") for i in range(500)]
    )
    assert n == 500
    with db.write(a) as cur:
        assert cur.execute("select count(*) from patients where mrn like 'CP-%'").fetchone() == (500,)
    with db.write(b) as cur:
        assert cur.execute("select count(*) from patients where mrn like 'CP-%'").fetchone() == (0,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.copy_rows(a, "patients", ["clinic_id", "mrn", "given_name", "family_name"], [(b, "CP-X", "x", "y")])
    with db.write(b) as cur:
        assert cur.execute("select count(*) from patients where mrn = 'CP-X'").fetchone() == (0,)
    with pytest.raises(ValueError, match="columns"):
        db.copy_rows(a, "patients", [], [])


# -- health and metrics -----------------------------------------------------------


def test_health_reports_each_server_and_is_cached(db: Any) -> None:
    """health() lists primary and replica as up with latency and lag, overall healthy, cached between calls."""
    first = db.health()
    assert first["status"] == "healthy"
    roles = {s["name"]: s for s in first["servers"]}
    assert roles["primary"]["up"] and roles["replica1"]["up"]
    assert roles["replica1"]["lag_bytes"] is not None and roles["primary"]["latency_ms"] > 0
    assert db.health()["checked_at"] == first["checked_at"]


def test_health_says_down_without_a_primary(make_db: Make) -> None:
    """A primary that cannot be reached makes the overall status down, with the error, not an exception."""
    from clinicdb.health import check_server, summarize

    report = summarize([check_server("primary", "primary", "postgresql://x@127.0.0.1:1/none", 1.0)], max_lag=1)
    assert report["status"] == "down" and report["servers"][0]["error"]


def test_slow_transactions_are_logged_with_clinic_and_duration_only(
    make_db: Make, clinic_pair: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow transaction logs one structured warning with clinic and duration, never the query or parameters."""
    a, _b = clinic_pair
    db = make_db(replicas=[], slow_transaction=0.05)
    with caplog.at_level(logging.WARNING, logger="clinicdb.driver"), db.write(a) as cur:
        cur.execute("select pg_sleep(0.08), %s::text", ("secret-param",))
    slow = [r for r in caplog.records if "slow transaction" in r.getMessage()]
    assert len(slow) == 1
    record = slow[0]
    assert record.clinic_id == str(a) and record.duration_ms >= 50  # type: ignore[attr-defined]
    assert "secret-param" not in record.getMessage() and "pg_sleep" not in record.getMessage()
    metrics = db.metrics()
    assert metrics["slow_transactions"] == 1
    assert metrics["routes"]["primary"]["p99_ms"] >= 50


def test_prometheus_exposition(db: Any, clinic_pair: Any) -> None:
    """metrics() renders as Prometheus text with per-route transaction counters."""
    pytest.importorskip("prometheus_client")
    from clinicdb.metrics import prometheus_text

    a, _b = clinic_pair
    with db.write(a) as cur:
        cur.execute("select 1")
    text = prometheus_text(db.metrics())
    assert 'clinicdb_transactions_total{route="primary"}' in text
    assert "clinicdb_pool" in text
