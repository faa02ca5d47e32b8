"""``make soak``: the fault-injection suite against the pg_auto_failover formation of ``clinicdb dev up --ha``.

Writers and readers run through the driver's callable forms (``run_write`` /
``run_read``) across at least 20 clinics, every write carrying a request id,
while faults are injected in turn:

1. kill the primary's postmaster (its keeper stays);
2. kill the whole primary node (keeper and postmaster), then start it again;
3. kill the whole standby node, then start it again.

After each fault, once the formation is back to a primary and a synchronous
standby, it checks and prints: acknowledged writes lost (0), unknown-outcome
writes settled through the audit trail's request id (none left unknown),
failed writes found committed (0), every committed row has its audit row,
``clinicdb audit verify`` passes, 0 rows returned to another clinic, reads
failed outside the measured outage window (0), the rejoined node a
synchronous standby again, and the measured write and read outage against the
targets. The last line is ``soak: N passed, N failed``; the exit code is 1 on
any failure. Figures and settings: docs/ha.md.

Usage: python -m bench.soak [--steady S] [--observe S] [--faults 1 2 3] [--clinics N] [--writers N] [--readers N]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from clinicdb import ClinicDB, CommitOutcomeUnknown, Options
from clinicdb.devcluster.bootstrap import APP_LOGIN, bootstrap_url, dev_formation
from clinicdb.devcluster.cluster import ClusterError
from clinicdb.devcluster.ha import HAFormation, HAStatus

CLINICDB = str(Path(sys.executable).with_name("clinicdb"))


class SoakError(RuntimeError):
    """The formation or the workload did not recover: the remaining faults would prove nothing."""


# -- what the workload saw ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One operation: when it started and ended, and how it went ("ok", "unknown" or "failed")."""

    start: float
    end: float
    kind: str
    request_id: str = ""
    clinic: str = ""
    error: str = ""
    started_at: datetime | None = None  # an unknown outcome: when the driver says the transaction began
    where: str = ""  # a read: the port that served it, and whether that server was a standby


@dataclass
class Log:
    """Everything the writers and readers did, appended under one lock."""

    writes: list[Outcome] = field(default_factory=list)
    reads: list[Outcome] = field(default_factory=list)
    foreign_rows: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, into: list[Outcome], outcome: Outcome) -> None:
        with self.lock:
            into.append(outcome)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


class Workload:
    """Writer and reader threads on one shared driver until ``stop()``."""

    def __init__(self, db: ClinicDB, clinics: list[str], run: str, writers: int, readers: int) -> None:
        self.db, self.clinics, self.run = db, clinics, run
        self.log = Log()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._writer, args=(i,), daemon=True) for i in range(writers)]
        self._threads += [threading.Thread(target=self._reader, args=(i,), daemon=True) for i in range(readers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_for_write(self, *, after: float, timeout: float) -> float | None:
        """When the first write started after ``after`` was acknowledged (None: none within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log.lock:
                done = [w.end for w in self.log.writes if w.kind == "ok" and w.start > after]
            if done:
                return min(done)
            time.sleep(0.1)
        return None

    def _writer(self, index: int) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            clinic = self.clinics[(index + seq) % len(self.clinics)]
            rid = f"soak-{self.run}-w{index}-{seq}"

            def insert(cur: psycopg.Cursor[Any], rid: str = rid) -> None:
                cur.execute(
                    "insert into patients (mrn, given_name, family_name) values (%s, 'Soak', %s)", (rid, self.run)
                )

            start = time.monotonic()
            try:
                self.db.run_write(insert, clinic, request_id=rid, user_id="soak")
                self.log.add(self.log.writes, Outcome(start, time.monotonic(), "ok", rid, clinic))
                self._stop.wait(0.01)
            except CommitOutcomeUnknown as exc:
                ended = time.monotonic()
                self.log.add(
                    self.log.writes, Outcome(start, ended, "unknown", rid, clinic, _short(exc), exc.started_at)
                )
                self._stop.wait(0.05)
            except Exception as exc:
                self.log.add(self.log.writes, Outcome(start, time.monotonic(), "failed", rid, clinic, _short(exc)))
                self._stop.wait(0.05)

    def _reader(self, index: int) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            clinic = self.clinics[(index * 7 + seq) % len(self.clinics)]

            def latest(cur: psycopg.Cursor[Any]) -> tuple[list[tuple[Any, ...]], str]:
                cur.execute("select clinic_id::text from patients order by created_at desc limit 20")
                rows = cur.fetchall()
                server = cur.execute("select inet_server_port(), pg_is_in_recovery()").fetchone()
                assert server is not None
                return rows, f"{server[0]} {'standby' if server[1] else 'primary'}"

            start = time.monotonic()
            try:
                rows, where = self.db.run_read(latest, clinic)
                foreign = sum(1 for row in rows if row[0] != clinic)
                with self.log.lock:
                    self.log.foreign_rows += foreign
                self.log.add(self.log.reads, Outcome(start, time.monotonic(), "ok", clinic=clinic, where=where))
                self._stop.wait(0.01)
            except Exception as exc:
                self.log.add(
                    self.log.reads, Outcome(start, time.monotonic(), "failed", clinic=clinic, error=_short(exc))
                )
                self._stop.wait(0.05)


def outage(events: list[Outcome], since: float, until: float) -> float:
    """Seconds of the longest stretch in [since, until] without a successful operation finishing."""
    ends = sorted(e.end for e in events if e.kind == "ok" and since <= e.end <= until)
    marks = [since, *ends, until]
    return max(b - a for a, b in itertools.pairwise(marks))


# -- checks ---------------------------------------------------------------------------------------------------
class Report:
    """Check lines, counted for the closing ``soak: N passed, N failed``."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, text: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"  [{'pass' if ok else 'FAIL'}] {text}", flush=True)


@dataclass(frozen=True)
class Fault:
    name: str
    write_target: float
    inject: Callable[[HAFormation, HAStatus], str]  # returns the node it hit
    restart: bool  # the node must be started again to rejoin


def _kill_postmaster(formation: HAFormation, status: HAStatus) -> str:
    assert status.primary is not None
    formation.kill_postmaster(status.primary)
    return status.primary


def _kill_primary_node(formation: HAFormation, status: HAStatus) -> str:
    assert status.primary is not None
    formation.kill_node(status.primary)
    return status.primary


def _kill_standby_node(formation: HAFormation, status: HAStatus) -> str:
    standby = next(n.name for n in status.nodes if n.name not in ("monitor", status.primary))
    formation.kill_node(standby)
    return standby


FAULTS = [
    Fault("kill the primary's postmaster", 10.0, _kill_postmaster, restart=False),
    Fault("kill the whole primary node (keeper + postmaster)", 30.0, _kill_primary_node, restart=True),
    Fault("kill the whole standby node (keeper + postmaster)", 10.0, _kill_standby_node, restart=True),
]


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.formation = dev_formation()
        self.report = Report()
        self.run = uuid.uuid4().hex[:8]
        self.began = time.monotonic()
        self.phase_start = self.began
        self.heads: list[str] = []
        self.db: ClinicDB | None = None
        self.routes: dict[str, int] = {}

    def say(self, text: str) -> None:
        print(f"soak: [{time.monotonic() - self.began:6.1f}s] {text}", flush=True)

    def setup(self) -> tuple[ClinicDB, list[str]]:
        self.say(f"run {self.run}: formation under {self.formation.root}")
        status = self.formation.up(self.say)
        self.say(f"{status.primary} is the primary; migrating and creating {self.args.clinics} clinics")
        admin = self.formation.primary_url()
        bootstrap_url(admin)
        with psycopg.connect(admin, autocommit=True) as conn:
            clinics = [
                str(conn.execute("select clinicdb.create_clinic(%s)", (f"soak {self.run} {i}",)).fetchone()[0])  # type: ignore[index]
                for i in range(self.args.clinics)
            ]
        # The URLs `eval "$(clinicdb dev env --ha)"` exports; every other setting from the environment.
        options = Options.from_env(max_size=self.args.writers + self.args.readers + 2, slow_transaction=0)
        db = ClinicDB(
            self.formation.primary_url(user=APP_LOGIN), [self.formation.replica_url(user=APP_LOGIN)], options=options
        )
        return db, clinics

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.formation.primary_url(), autocommit=True, connect_timeout=5)

    def run_all(self) -> int:
        db, clinics = self.setup()
        self.db = db
        work = Workload(db, clinics, self.run, self.args.writers, self.args.readers)
        work.start()
        try:
            for number, fault in enumerate(FAULTS, 1):
                if self.args.faults and number not in self.args.faults:
                    continue
                try:
                    self.fault(number, fault, work)
                except (SoakError, ClusterError) as exc:
                    self.report.check(False, f"fault {number} ({fault.name}): {exc}; the remaining faults are skipped")
                    break
        finally:
            work.stop()
            db.close()
        print(f"soak: {self.report.passed} passed, {self.report.failed} failed", flush=True)
        return 1 if self.report.failed else 0

    def fault(self, number: int, fault: Fault, work: Workload) -> None:
        self.say(f"steady load for {self.args.steady:.0f}s before fault {number}")
        time.sleep(self.args.steady)
        before = self.formation.status()
        if not before.settled:
            self.formation.wait(lambda s: s.settled, "a primary and a synchronous standby", say=self.say)
            before = self.formation.status()
        t0, wall0 = time.monotonic(), time.time()
        hit = fault.inject(self.formation, before)
        done = time.monotonic()
        self.say(f"fault {number}: {fault.name}: {hit} (primary was {before.primary})")
        back = work.wait_for_write(after=done, timeout=180)
        if back is None:
            raise SoakError(f"no write was acknowledged within 180s of fault {number}")
        self.say(f"writes acknowledged again {back - t0:.1f}s after the fault")
        time.sleep(self.args.observe)
        if fault.restart:
            self.say(f"starting {hit}'s keeper again: it rejoins by itself")
            self.formation.start_keeper(hit)
        status = self.formation.wait(lambda s: s.settled, "a primary and a synchronous standby", say=self.say)
        time.sleep(self.args.observe)
        t_end = time.monotonic()
        self.say(f"fault {number} done: {status.primary} primary, {hit} back as a synchronous standby or primary")
        self.timeline(wall0)
        self.checks(number, fault, work, t0, t_end, status)

    def timeline(self, since: float) -> None:
        """The monitor's events since the fault, seconds after it: what the server side took."""
        with psycopg.connect(self.formation.monitor_url(), autocommit=True, connect_timeout=5) as conn:
            events = conn.execute(
                "select extract(epoch from eventtime)::float8 - %s, nodename, reportedstate::text, goalstate::text"
                " from pgautofailover.event where eventtime >= to_timestamp(%s) order by eventid",
                (since, since),
            ).fetchall()
        shown: set[tuple[str, str, str]] = set()
        for at, node, reported, goal in events:
            if (node, reported, goal) not in shown:
                shown.add((node, reported, goal))
                print(f"    monitor +{at:5.1f}s: {node} {reported} -> {goal}", flush=True)

    def checks(self, number: int, fault: Fault, work: Workload, t0: float, t_end: float, status: HAStatus) -> None:
        with work.log.lock:
            writes = list(work.log.writes)
            reads = list(work.log.reads)
            foreign = work.log.foreign_rows
        routes = self.route_counts()
        by_route = ", ".join(f"{routes[k] - self.routes.get(k, 0)} {k}" for k in sorted(routes))
        self.routes = routes
        phase = [w for w in writes if self.phase_start <= w.end <= t_end]
        phase_reads = [r for r in reads if self.phase_start <= r.end <= t_end]
        write_out = outage(writes, t0, t_end)
        read_out = outage(reads, t0, t_end)
        counts = {kind: sum(1 for w in phase if w.kind == kind) for kind in ("ok", "unknown", "failed")}
        print(
            f"fault {number}: {fault.name}: {counts['ok']} writes acknowledged, {counts['unknown']} unknown,"
            f" {counts['failed']} failed; {len(phase_reads)} reads, {sum(r.kind == 'failed' for r in phase_reads)}"
            f" failed (transactions by route: {by_route})",
            flush=True,
        )
        self.served(reads, t0, t_end)
        # Everything written since the soak began, checked again after each fault.
        acked = {w.request_id for w in writes if w.kind == "ok"}
        unknown = [w for w in writes if w.kind == "unknown"]
        with self.admin() as conn:
            present = {
                r[0] for r in conn.execute("select mrn from patients where family_name = %s", (self.run,)).fetchall()
            }
            audited = {
                r[0]
                for r in conn.execute(
                    "select distinct request_id from clinicdb.audit_log where request_id like %s",
                    (f"soak-{self.run}-%",),
                ).fetchall()
            }
        lost = acked - present
        self.report.check(not lost, f"acknowledged writes lost: {len(lost)} of {len(acked)}")
        settled = {w.request_id: self.settle(w) for w in unknown}
        found = sum(settled.values())
        consistent = all(settled[w.request_id] == (w.request_id in present) for w in unknown)
        self.report.check(
            consistent,
            f"unknown-outcome writes settled by request id: {len(unknown)}"
            f" ({found} found committed, {len(unknown) - found} not), none left unknown",
        )
        landed = [w for w in writes if w.kind == "failed" and w.request_id in present]
        self.report.check(
            not landed,
            f"failed writes found committed: {len(landed)}" + (f" (first: {landed[0].error})" if landed else ""),
        )
        unaudited = present - audited
        self.report.check(not unaudited, f"committed rows without their audit row: {len(unaudited)} of {len(present)}")
        self.report.check(
            self.audit_verify(),
            f"clinicdb audit seal --all, then audit verify against {len(self.heads)} heads printed so far",
        )
        self.report.check(foreign == 0, f"rows returned to another clinic: {foreign}")
        window_end = t0 + write_out + 1.0
        stray = [r for r in phase_reads if r.kind == "failed" and (r.end < t0 or r.start > window_end)]
        self.report.check(
            not stray,
            f"reads failed outside the outage window: {len(stray)}" + (f" (first: {stray[0].error})" if stray else ""),
        )
        self.report.check(status.settled, "the formation is a primary and a synchronous standby again")
        self.report.check(
            write_out <= fault.write_target, f"write outage {write_out:.1f}s (target <= {fault.write_target:.0f}s)"
        )
        self.report.check(read_out <= max(write_out, 1.0), f"read outage {read_out:.1f}s (target <= write outage)")
        self.phase_start = t_end

    def served(self, reads: list[Outcome], t0: float, t_end: float) -> None:
        """Which server served reads after the fault: the first read on each (node, role), seconds after it."""
        nodes = {str(self.formation.port(name)): name for name in self.formation.names}
        first: dict[str, float] = {}
        for read in sorted((r for r in reads if r.kind == "ok" and t0 <= r.end <= t_end), key=lambda r: r.end):
            port, role = read.where.split()
            first.setdefault(f"{nodes.get(port, port)} as {role}", read.end - t0)
        shown = ", ".join(f"{k} from +{v:.1f}s" for k, v in sorted(first.items(), key=lambda kv: kv[1]))
        print(f"    reads served by: {shown}", flush=True)

    def route_counts(self) -> dict[str, int]:
        assert self.db is not None
        return {k: int(v["transactions"]) for k, v in self.db.metrics()["routes"].items()}

    def settle(self, write: Outcome) -> bool:
        """Did an unknown-outcome write commit? ``db.settle`` asks the audit trail on the primary by request id."""
        assert self.db is not None
        return self.db.settle(write.request_id, write.clinic, since=write.started_at)

    def audit_verify(self) -> bool:
        """``clinicdb audit seal --all`` (every final row now), then ``audit verify`` against every head printed."""
        env = {"CLINICDB_ADMIN_URL": self.formation.primary_url(), "PATH": "/usr/bin:/bin"}
        seal = subprocess.run(
            [CLINICDB, "audit", "seal", "--all"], capture_output=True, text=True, env=env, check=False
        )
        heads = [line.split()[1] for line in seal.stdout.splitlines() if line.startswith("head:")]
        self.heads += heads
        expect = [arg for head in self.heads for arg in ("--expect", head)]
        verify = subprocess.run(
            [CLINICDB, "audit", "verify", *expect], capture_output=True, text=True, env=env, check=False
        )
        for name, done in (("seal --all", seal), ("verify", verify)):
            if done.returncode != 0:
                print(f"    clinicdb audit {name}: {(done.stderr or done.stdout).strip()[-300:]}", flush=True)
                return False
        return bool(heads)


def main(argv: list[str]) -> int:
    # The pool logs each failed reconnection during an outage; the soak reports what matters itself.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steady", type=float, default=10.0, help="seconds of load before each fault")
    parser.add_argument("--observe", type=float, default=5.0, help="seconds to watch after failover and rejoin")
    parser.add_argument("--faults", type=int, nargs="*", choices=range(1, len(FAULTS) + 1), help="only these (1-3)")
    parser.add_argument("--clinics", type=int, default=20)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--readers", type=int, default=4)
    args = parser.parse_args(argv)
    if args.clinics < 20:
        parser.error("--clinics must be at least 20")
    with contextlib.suppress(KeyboardInterrupt):
        return Soak(args).run_all()
    return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
