"""Driver overhead and bulk load, as ratios against bare psycopg measured in the same run.

1. A transaction with one point SELECT through ``db.read`` (clinic, user and
   request id set, routed to the replica) divided by the same SELECT in a
   transaction on a bare ``psycopg_pool`` connection to the same replica, same
   login, nothing set: at 1 and 4 threads (target >= 0.9 at 4), as the median
   of paired rounds (``ROUNDS``). p50/p99 printed.
2. How the opening flight compares with the other ways of setting the clinic
   (the measurements behind docs/driver.md's choice), at 4 threads, each
   divided by the bare transaction: a separate ``execute(set_config)``,
   psycopg's pipeline mode, one simple-query message with literals, and the
   driver's BEGIN + parameterised set_config deferred into the first
   statement's libpq pipeline flight (docs/driver.md).
3. ``copy_rows`` of 100,000 patients versus row-by-row ``executemany`` in one
   write transaction (same rows per second; executemany loads 10,000 rows to
   keep the run short): target >= 10x.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from bench.harness import PairedRatio, Ratio, interleaved, paired, percentile, threaded_throughput
from clinicdb import ClinicDB
from clinicdb.devcluster.testing import ServerSet

POINT = "select id, mrn, family_name from patients where id = %s"
SECONDS = 1.0
# Rounds of the point select at 1 and 4 threads. Each round measures bare and driver back to back (who goes first
# alternates) and the ratio printed is the median of the rounds' ratios: on this shared 2-core machine two identical
# 1-second runs differ by up to 15%, so one long run of each would mostly measure the drift between them.
ROUNDS = {1: 5, 4: 15}


def _seed(servers: ServerSet, db: ClinicDB) -> tuple[uuid.UUID, list[uuid.UUID]]:
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        row = conn.execute("select clinicdb.create_clinic(%s)", (f"bench {uuid.uuid4()}",)).fetchone()
        assert row is not None
        clinic: uuid.UUID = row[0]
    db.copy_rows(
        clinic, "patients", ["mrn", "given_name", "family_name"], ((f"B-{i}", "Bench", f"P{i}") for i in range(2000))
    )
    with db.write(clinic) as cur:
        cur.execute("select id from patients")
        ids = [r[0] for r in cur.fetchall()]
    assert servers.cluster is not None
    servers.cluster.wait_for_replay()
    return clinic, ids


def _latency_note(name: str, samples: list[float]) -> str:
    return f"{name}: p50 {percentile(samples, 50) * 1000:.2f} ms, p99 {percentile(samples, 99) * 1000:.2f} ms"


def _point_select(db: ClinicDB, bare: ConnectionPool[Any], clinic: uuid.UUID, ids: list[uuid.UUID]) -> list[Ratio]:
    ratios: list[Ratio] = []
    for threads in (1, 4):
        lat: dict[str, list[float]] = {}

        def driver_op() -> Callable[[], object]:
            state = {"i": 0}

            def op() -> object:
                state["i"] += 1
                with db.read(clinic, user_id="bench", request_id="r") as cur:
                    cur.execute(POINT, (ids[state["i"] % len(ids)],))
                    return cur.fetchone()

            return op

        def bare_op() -> Callable[[], object]:
            state = {"i": 0}

            def op() -> object:
                state["i"] += 1
                with bare.connection() as conn:
                    return conn.execute(POINT, (ids[state["i"] % len(ids)],)).fetchone()

            return op

        def run_bare(t: int = threads, lat: dict[str, list[float]] = lat) -> float:
            ops, samples = threaded_throughput(bare_op, threads=t, seconds=SECONDS)
            lat.setdefault("bare", []).extend(samples)
            return ops

        def run_driver(t: int = threads, lat: dict[str, list[float]] = lat) -> float:
            ops, samples = threaded_throughput(driver_op, threads=t, seconds=SECONDS)
            lat.setdefault("driver", []).extend(samples)
            return ops

        base, cand, per_round = paired(run_bare, run_driver, rounds=ROUNDS[threads], alternate=True)
        ratio = PairedRatio(
            f"db.read point select / bare pool, {threads} thread{'s' if threads > 1 else ''}",
            cand,
            base,
            target=0.9 if threads == 4 else None,
            unit="tx/s",
            per_round=per_round,
        )
        ratio.notes += [ratio.spread, _latency_note("db.read", lat["driver"]), _latency_note("bare pool", lat["bare"])]
        ratios.append(ratio)
    return ratios


def _opening_forms(url: str, clinic: uuid.UUID, ids: list[uuid.UUID], db: ClinicDB) -> list[Ratio]:
    """Each way of setting the clinic on a bare pool to the replica, divided by the bare transaction (4 threads)."""
    pool: ConnectionPool[Any] = ConnectionPool(url, min_size=4, max_size=4, open=True)
    auto: ConnectionPool[Any] = ConnectionPool(url, min_size=4, max_size=4, kwargs={"autocommit": True}, open=True)
    pool.wait()
    auto.wait()
    setq = "select set_config('app.clinic_id', %s, true), set_config('app.user_id', %s, true)"
    literal = sql.SQL("begin; select set_config('app.clinic_id', {}, true), set_config('app.user_id', {}, true)")

    def form(kind: str) -> Callable[[], Callable[[], object]]:
        def make() -> Callable[[], object]:
            state = {"i": 0}

            def op() -> object:
                state["i"] += 1
                key = (ids[state["i"] % len(ids)],)
                if kind == "literal":  # one simple-query message; the SELECT after it keeps its parameters
                    with auto.connection() as conn:
                        conn.execute(literal.format(sql.Literal(str(clinic)), sql.Literal("bench")))
                        row = conn.execute(POINT, key).fetchone()
                        conn.execute("commit")
                        return row
                if kind == "driver":
                    with db.read(clinic, user_id="bench") as cur:
                        return cur.execute(POINT, key).fetchone()
                with pool.connection() as conn:
                    if kind == "separate":
                        conn.execute(setq, (str(clinic), "bench"))
                    elif kind == "pipeline":
                        with conn.pipeline():
                            conn.execute(setq, (str(clinic), "bench"))
                            cur = conn.execute(POINT, key)
                        return cur.fetchone()
                    return conn.execute(POINT, key).fetchone()

            return op

        return make

    labels = {
        "separate": "separate execute(set_config)",
        "pipeline": "psycopg pipeline(set_config + select)",
        "literal": "one simple query 'begin; set_config(literals)'",
        "driver": "driver: BEGIN + prepared set_config($n) + the SELECT, one flight",
    }
    ratios = []
    for kind, label in labels.items():

        def bare_run() -> float:
            return threaded_throughput(form("none"), threads=4, seconds=SECONDS)[0]

        def cand_run(kind: str = kind) -> float:
            return threaded_throughput(form(kind), threads=4, seconds=SECONDS)[0]

        base, cand = interleaved(bare_run, cand_run, rounds=3)
        ratios.append(Ratio(f"opening form: {label} / bare, 4 threads", cand, base, unit="tx/s"))
    pool.close()
    auto.close()
    return ratios


def _bulk(servers: ServerSet, db: ClinicDB) -> Ratio:
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        row = conn.execute("select clinicdb.create_clinic(%s)", (f"bulk {uuid.uuid4()}",)).fetchone()
        assert row is not None
        clinic = row[0]
    copy_n, many_n = 100_000, 10_000
    started = time.perf_counter()
    loaded = db.copy_rows(
        clinic, "patients", ["mrn", "given_name", "family_name"], ((f"C-{i}", "Copy", f"P{i}") for i in range(copy_n))
    )
    copy_rate = loaded / (time.perf_counter() - started)
    started = time.perf_counter()
    with db.write(clinic) as cur:
        cur.executemany(
            "insert into patients (mrn, given_name, family_name) values (%s, %s, %s)",
            [(f"E-{i}", "Many", f"P{i}") for i in range(many_n)],
        )
    many_rate = many_n / (time.perf_counter() - started)
    return Ratio(
        f"copy_rows {copy_n:,} rows / executemany ({many_n:,} rows), rows per second",
        copy_rate,
        many_rate,
        target=10.0,
        unit="rows/s",
        notes=[_bulk_breakdown(servers, clinic)],
    )


def _bulk_breakdown(servers: ServerSet, clinic: uuid.UUID, rows: int = 20_000) -> str:
    """Where copy_rows' INSERT ... SELECT spends its time per row (EXPLAIN ANALYZE, rolled back)."""
    with psycopg.connect(servers.app_url) as conn:
        conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
        conn.execute(
            "create temporary table bulk_probe on commit drop as"
            " select 'X-' || g as mrn, 'Probe' as given_name, 'P' || g as family_name from generate_series(1, %s) g",
            (rows,),
        )
        plan = conn.execute(
            "explain (analyze, costs off) insert into patients (clinic_id, mrn, given_name, family_name)"
            " select %s::uuid, mrn, given_name, family_name from bulk_probe",
            (clinic,),
        ).fetchall()
        conn.rollback()
    lines = [str(r[0]) for r in plan]
    total = next(float(m.group(1)) for line in lines if (m := re.search(r"Execution Time: ([\d.]+)", line)))
    parts = {}
    for line in lines:
        m = re.match(r"Trigger (?:for constraint )?(\S+): time=([\d.]+)", line)
        if m:
            parts[m.group(1)] = float(m.group(2))
    shown = [f"rows, indexes and policies {(total - sum(parts.values())) * 1000 / rows:.1f}"]
    shown += [f"{name} {ms * 1000 / rows:.1f}" for name, ms in parts.items()]
    return f"per-row server time of the INSERT ... SELECT ({rows:,} rows, EXPLAIN ANALYZE), us: " + ", ".join(shown)


def run(servers: ServerSet) -> list[Ratio]:
    replica_url = servers.app_replica_urls[0]
    db = ClinicDB(servers.app_url, servers.app_replica_urls, min_size=4, max_size=4)
    try:
        clinic, ids = _seed(servers, db)
        bare: ConnectionPool[Any] = ConnectionPool(replica_url, min_size=4, max_size=4, open=True)
        bare.wait()
        try:
            ratios = _point_select(db, bare, clinic, ids)
        finally:
            bare.close()
        replica_share = db.metrics()["routes"]["replica"]["transactions"]
        ratios[-1].notes.append(f"db.read transactions served by the replica in this run: {replica_share:,}")
        ratios += _opening_forms(replica_url, clinic, ids, db)
        ratios.append(_bulk(servers, db))
        return ratios
    finally:
        db.close()
