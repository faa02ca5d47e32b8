"""Driver overhead and bulk load, as ratios against bare psycopg measured in the same run (issue #14's targets).

1. A read transaction with one point SELECT through ``db.read`` (clinic, user
   and request set, on the replica) divided by the same SELECT in a
   transaction on a bare ``psycopg_pool`` pool to the same replica, same
   login, nothing set: at 1 thread (target >= 0.90) and 4 threads (printed,
   no target), the median of ``ROUNDS`` paired rounds with their spread.
2. Client CPU per transaction, the same two forms: process CPU time over
   ``CPU_TX`` transactions each, in ``ROUNDS`` paired rounds (target <= 1.2).
   Beside both, the floor of setting the clinic: the driver's own opening
   and closing flights written out by hand on a bare pool connection (no
   routing, scope objects, metrics or cursor bookkeeping), so a missed
   target shows how much is the price of the opening and how much the driver's code.
3. ``copy_rows`` of 100,000 patients (an RLS-protected, audited table)
   divided by the floor measured by hand on the same pooled connection in
   the same run: COPY into a temporary table, then one INSERT ... SELECT,
   under the same policies and triggers (target >= 0.8); ``executemany`` of
   10,000 rows divided by the same floor is printed beside it.

Rounds alternate which form runs first. The machine has 2 cores shared by
this client, both servers and whatever else runs: the run prints its core
count and load so the figures can be read against it.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from bench.harness import PairedRatio, Ratio, paired, percentile, threaded_throughput
from clinicdb import ClinicDB, _wire
from clinicdb import sync as driver_io
from clinicdb._scope import make_scope
from clinicdb.devcluster.testing import ServerSet

POINT = "select id, mrn, family_name from patients where id = %s"
SECONDS = 1.0
ROUNDS = 7
CPU_TX = 5_000
COPY_ROWS, MANY_ROWS = 100_000, 10_000
COLUMNS = ["mrn", "given_name", "family_name"]


def _clinic(servers: ServerSet, label: str) -> uuid.UUID:
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        row = conn.execute("select clinicdb.create_clinic(%s)", (f"{label} {uuid.uuid4()}",)).fetchone()
    assert row is not None
    clinic: uuid.UUID = row[0]
    return clinic


def _seed(servers: ServerSet, db: ClinicDB) -> tuple[uuid.UUID, list[uuid.UUID]]:
    clinic = _clinic(servers, "bench")
    db.copy_rows(clinic, "patients", COLUMNS, ((f"B-{i}", "Bench", f"P{i}") for i in range(2000)))
    with db.write(clinic) as cur:
        ids = [r[0] for r in cur.execute("select id from patients").fetchall()]
    assert servers.cluster is not None
    servers.cluster.wait_for_replay()
    return clinic, ids


Make = Callable[[], Callable[[], object]]


def _floor_form(floor: ConnectionPool[Any], clinic: uuid.UUID, ids: list[uuid.UUID]) -> Make:
    """The opening and closing flights by hand, nothing else of the driver: the floor of setting the clinic."""
    opening = _wire.Opening.build(
        make_scope(clinic, user_id="bench", request_id="r"),
        read=True,
        isolation=None,
        timeouts=(30000, 60000),
        prepared=True,
    )

    def make() -> Callable[[], object]:
        state = {"i": 0}

        def op() -> object:
            state["i"] += 1
            with floor.connection() as conn:
                driver_io._open(conn, opening)
                row = conn.execute(POINT, (ids[state["i"] % len(ids)],)).fetchone()
                driver_io._send(conn, _wire.COMMIT_STANDBY_READ)
                return row

        return op

    return make


def _forms(db: ClinicDB, bare: ConnectionPool[Any], clinic: uuid.UUID, ids: list[uuid.UUID]) -> tuple[Make, Make]:
    """Factories of one transaction each: (bare pool, db.read), each thread cycling through the ids."""

    def bare_op() -> Callable[[], object]:
        state = {"i": 0}

        def op() -> object:
            state["i"] += 1
            with bare.connection() as conn:
                return conn.execute(POINT, (ids[state["i"] % len(ids)],)).fetchone()

        return op

    def driver_op() -> Callable[[], object]:
        state = {"i": 0}

        def op() -> object:
            state["i"] += 1
            with db.read(clinic, user_id="bench", request_id="r") as cur:
                return cur.execute(POINT, (ids[state["i"] % len(ids)],)).fetchone()

        return op

    return bare_op, driver_op


def _point_select(
    db: ClinicDB, bare: ConnectionPool[Any], floor: Make, clinic: uuid.UUID, ids: list[uuid.UUID]
) -> list[Ratio]:
    bare_op, driver_op = _forms(db, bare, clinic, ids)
    ratios: list[Ratio] = []
    base, cand, per_round = paired(
        lambda: threaded_throughput(bare_op, threads=1, seconds=SECONDS)[0],
        lambda: threaded_throughput(floor, threads=1, seconds=SECONDS)[0],
        rounds=ROUNDS,
        alternate=True,
    )
    floor_ratio = PairedRatio(
        "floor: opening and closing flights by hand / bare pool transaction, 1 thread",
        cand,
        base,
        unit="tx/s",
        per_round=per_round,
    )
    floor_ratio.notes.append(floor_ratio.spread)
    for threads in (1, 4):
        lat: dict[str, list[float]] = {"bare": [], "driver": []}

        def run(
            make: Callable[[], Callable[[], object]], key: str, t: int = threads, lat: dict[str, list[float]] = lat
        ) -> float:
            ops, samples = threaded_throughput(make, threads=t, seconds=SECONDS)
            lat[key].extend(samples)
            return ops

        base, cand, per_round = paired(
            lambda: run(bare_op, "bare"), lambda: run(driver_op, "driver"), rounds=ROUNDS, alternate=True
        )
        ratio = PairedRatio(
            f"db.read point select / bare pool transaction, {threads} thread{'s' if threads > 1 else ''}",
            cand,
            base,
            target=0.90 if threads == 1 else None,
            unit="tx/s",
            per_round=per_round,
        )
        ratio.notes += [ratio.spread, f"db.read: {_latency(lat['driver'])}; bare: {_latency(lat['bare'])}"]
        ratios.append(ratio)
        if threads == 1:
            ratios.append(floor_ratio)
    return ratios


def _latency(samples: list[float]) -> str:
    return f"p50 {percentile(samples, 50) * 1000:.2f} ms, p99 {percentile(samples, 99) * 1000:.2f} ms"


def _cpu(db: ClinicDB, bare: ConnectionPool[Any], floor: Make, clinic: uuid.UUID, ids: list[uuid.UUID]) -> list[Ratio]:
    """Process CPU per transaction of db.read and of the floor over bare: ROUNDS rounds of CPU_TX transactions each."""
    bare_op, driver_op = _forms(db, bare, clinic, ids)

    def per_tx(make: Make) -> float:
        op = make()
        for _ in range(200):  # warm: prepared statements, caches
            op()
        started = time.process_time()
        for _ in range(CPU_TX):
            op()
        return (time.process_time() - started) / CPU_TX

    cpu: dict[str, list[float]] = {"bare": [], "driver": [], "floor": []}
    forms = [("bare", bare_op), ("driver", driver_op), ("floor", floor)]
    for i in range(ROUNDS):
        for name, make in forms[i % 3 :] + forms[: i % 3]:  # who goes first rotates
            cpu[name].append(per_tx(make))
    ratios = []
    for name, label, target in (
        ("driver", "db.read / bare pool", 1.2),
        ("floor", "floor (opening and closing by hand) / bare pool", None),
    ):
        ratio = PairedRatio(
            f"client CPU per transaction, {label} ({CPU_TX:,} transactions per round)",
            statistics.median(cpu[name]) * 1e6,
            statistics.median(cpu["bare"]) * 1e6,
            target=target,
            unit="us CPU/tx",
            per_round=[c / b for b, c in zip(cpu["bare"], cpu[name], strict=True)],
            lower_is_better=True,
        )
        ratio.notes.append(ratio.spread)
        ratios.append(ratio)
    return ratios


def _prepare(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_wire.prepare_statements())
    conn.commit()


def _rows(prefix: str, n: int) -> list[tuple[str, str, str]]:
    return [(f"{prefix}-{i}", "Copy", f"P{i}") for i in range(n)]


def _floor(db: ClinicDB, clinic: uuid.UUID, rows: Sequence[tuple[str, str, str]]) -> float:
    """Rows per second of the hand-written floor on the driver's own connection: COPY to a temp table, one INSERT."""
    started = time.perf_counter()
    with db.write(clinic) as cur:
        cur.execute("create temporary table floor_stage (mrn text, given_name text, family_name text) on commit drop")
        with cur.copy("copy floor_stage (mrn, given_name, family_name) from stdin") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            "insert into patients (clinic_id, mrn, given_name, family_name)"
            " select %s, mrn, given_name, family_name from floor_stage",
            (clinic,),
        )
    return len(rows) / (time.perf_counter() - started)


def _bulk(servers: ServerSet) -> list[Ratio]:
    """copy_rows and executemany against the floor, on one pooled connection to the primary, paired rounds."""
    floor_rates: list[float] = []
    copy_rates: list[float] = []
    many_rates: list[float] = []
    with ClinicDB(servers.app_url, [], min_size=1, max_size=1, slow_transaction=0, statement_timeout_ms=0) as db:
        for i in range(ROUNDS):
            rows = _rows(f"R{i}", COPY_ROWS)

            def copy_rate(rows: list[tuple[str, str, str]] = rows) -> float:
                started = time.perf_counter()
                loaded = db.copy_rows(_clinic(servers, "copy"), "patients", COLUMNS, rows)
                return loaded / (time.perf_counter() - started)

            def floor_rate(rows: list[tuple[str, str, str]] = rows) -> float:
                return _floor(db, _clinic(servers, "floor"), rows)

            order = (floor_rate, copy_rate) if i % 2 == 0 else (copy_rate, floor_rate)
            for measure in order:
                (floor_rates if measure is floor_rate else copy_rates).append(measure())
            many = _rows(f"M{i}", MANY_ROWS)
            started = time.perf_counter()
            with db.write(_clinic(servers, "many")) as cur:
                cur.executemany("insert into patients (mrn, given_name, family_name) values (%s, %s, %s)", many)
            many_rates.append(MANY_ROWS / (time.perf_counter() - started))
    copy_ratio = PairedRatio(
        f"copy_rows {COPY_ROWS:,} rows / floor (COPY to a temp table + one INSERT ... SELECT by hand)",
        statistics.median(copy_rates),
        statistics.median(floor_rates),
        target=0.8,
        unit="rows/s",
        per_round=[c / f for c, f in zip(copy_rates, floor_rates, strict=True)],
    )
    copy_ratio.notes.append(copy_ratio.spread)
    many_ratio = PairedRatio(
        f"executemany {MANY_ROWS:,} rows / the same floor",
        statistics.median(many_rates),
        statistics.median(floor_rates),
        unit="rows/s",
        per_round=[m / f for m, f in zip(many_rates, floor_rates, strict=True)],
    )
    many_ratio.notes.append(many_ratio.spread)
    return [copy_ratio, many_ratio]


def run(servers: ServerSet) -> list[Ratio]:
    replica_url = servers.app_replica_urls[0]
    load_before = os.getloadavg()
    with ClinicDB(servers.app_url, servers.app_replica_urls, min_size=4, max_size=4) as db:
        clinic, ids = _seed(servers, db)
        with (
            ConnectionPool(replica_url, min_size=4, max_size=4, open=True) as bare,
            ConnectionPool(replica_url, min_size=4, max_size=4, configure=_prepare, open=True) as floor_pool,
        ):
            bare.wait()
            floor_pool.wait()
            floor = _floor_form(floor_pool, clinic, ids)
            ratios = _point_select(db, bare, floor, clinic, ids)
            ratios += _cpu(db, bare, floor, clinic, ids)
        served = db.metrics()["routes"]["replica"]["transactions"]
        ratios[0].notes.append(f"db.read transactions served by the replica in this run: {served:,}")
    ratios += _bulk(servers)
    load_after = os.getloadavg()
    ratios[0].notes.append(
        f"machine: {os.cpu_count()} cores shared by this client, the primary and the replica;"
        f" load average (1 min) {load_before[0]:.2f} before the driver benchmark, {load_after[0]:.2f} after"
    )
    return ratios
