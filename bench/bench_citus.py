"""The driver on Citus (issue #16): reads through the coordinator against a role without RLS, same cluster, same run.

On a throwaway Citus cluster (a coordinator and two workers, started here;
skipped with one line when this PostgreSQL has no Citus), two reads of one
clinic: a point read by id and the clinic's 50 newest patients.

1. ``db.read`` with the app's explicit ``clinic_id = %s`` filter (Citus
   prunes to the clinic's shard) divided by the same query in a bare
   ``psycopg_pool`` transaction by the superuser (no RLS, nothing set) on the
   same coordinator: target >= 0.90.
2. The floor, measured beside it: psycopg alone doing the same work as the
   driver with the least client code (the app login, so RLS on the shard;
   ``BEGIN`` and the clinic in the form that reaches the workers as one
   simple-query string, then the same query, then ``COMMIT``: three round
   trips, as the bare transaction and the driver make), against the same
   baseline, and ``db.read``
   against that floor. The first says what the design costs the server
   (RLS plus Citus propagating the clinic to the worker), the second what
   the driver's own code adds. If the floor misses 0.90 too, the target is
   out of reach for any driver that keeps the clinic in the database.
3. Printed beside them, no target: the policy-only form (``db.read`` without
   the filter: RLS keeps it to the clinic, but Citus cannot prune and asks
   every shard) against the same baseline, and both reads on the single
   node of the other benchmarks (``db.read`` / bare superuser transaction).

Each ratio is the median of ``ROUNDS`` paired rounds (the two forms back to
back, alternating which runs first), printed with its spread. Not part of
``make test``: ``python -m bench citus``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from bench.harness import PairedRatio, Ratio, paired, throughput
from clinicdb import ClinicDB
from clinicdb.citus import clinic_context_statements
from clinicdb.devcluster.citus import citus_installed, throwaway_citus
from clinicdb.devcluster.testing import ServerSet

SECONDS = 0.6
ROUNDS = 7
CLINICS, PATIENTS = 8, 300
POINT = "select id, mrn, family_name from patients where clinic_id = %s and id = %s"
NEWEST = "select id, mrn, family_name from patients where clinic_id = %s order by created_at desc limit 50"
POINT_POLICY = "select id, mrn, family_name from patients where id = %s"
NEWEST_POLICY = "select id, mrn, family_name from patients order by created_at desc limit 50"

Op = Callable[[], object]


def _seed(admin_url: str) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """CLINICS clinics of PATIENTS patients each; the first clinic and its patients' ids."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        clinics = []
        for i in range(CLINICS):
            row = conn.execute("select clinicdb.create_clinic(%s)", (f"bench {i} {uuid.uuid4()}",)).fetchone()
            assert row
            clinics.append(row[0])
            conn.execute(
                "insert into patients (clinic_id, mrn, given_name, family_name)"
                " select %s, 'B-' || g, 'Ann', 'Lee' || g from generate_series(1, %s) g",
                (row[0], PATIENTS),
            )
        conn.execute("analyze patients")
        ids = [r[0] for r in conn.execute("select id from patients where clinic_id = %s", (clinics[0],))]
    return clinics[0], ids


def _forms(
    db: ClinicDB, bare: ConnectionPool[Any], floor: ConnectionPool[Any], clinic: uuid.UUID, ids: list[uuid.UUID]
) -> dict[str, Op]:
    state = {"i": 0}
    with floor.connection() as conn:  # BEGIN and the clinic as one simple query: one round trip, no parameters
        opening = (
            sql.SQL("; ")
            .join(
                [
                    sql.SQL("begin"),
                    *(
                        clinic_context_statements(clinic, user_id="bench")
                        if _is_citus(conn)
                        else [sql.SQL("select set_config('app.clinic_id', {}, true)").format(str(clinic))]
                    ),
                ]
            )
            .as_string(conn)
        )

    def floor_read(query: str, params: tuple[Any, ...], many: bool) -> object:
        with floor.connection() as conn:  # an autocommit pool: the transaction is the statements' own
            conn.execute(opening)
            cur = conn.execute(query, params)
            rows = cur.fetchall() if many else cur.fetchone()
            conn.execute("commit")
            return rows

    def next_id() -> uuid.UUID:
        state["i"] += 1
        return ids[state["i"] % len(ids)]

    def bare_point() -> object:
        with bare.connection() as conn:
            return conn.execute(POINT, (clinic, next_id())).fetchone()

    def bare_newest() -> object:
        with bare.connection() as conn:
            return conn.execute(NEWEST, (clinic,)).fetchall()

    def driver_point() -> object:
        with db.read(clinic, user_id="bench") as cur:
            return cur.execute(POINT, (clinic, next_id())).fetchone()

    def driver_newest() -> object:
        with db.read(clinic, user_id="bench") as cur:
            return cur.execute(NEWEST, (clinic,)).fetchall()

    def floor_point() -> object:
        return floor_read(POINT, (clinic, next_id()), False)

    def floor_newest() -> object:
        return floor_read(NEWEST, (clinic,), True)

    def policy_point() -> object:
        with db.read(clinic, user_id="bench") as cur:
            return cur.execute(POINT_POLICY, (next_id(),)).fetchone()

    def policy_newest() -> object:
        with db.read(clinic, user_id="bench") as cur:
            return cur.execute(NEWEST_POLICY).fetchall()

    return {
        "bare point": bare_point,
        "bare newest": bare_newest,
        "driver point": driver_point,
        "driver newest": driver_newest,
        "floor point": floor_point,
        "floor newest": floor_newest,
        "policy point": policy_point,
        "policy newest": policy_newest,
    }


def _ratio(name: str, baseline: Op, candidate: Op, target: float | None) -> PairedRatio:
    base, cand, per_round = paired(
        lambda: throughput(baseline, seconds=SECONDS, warmup=0.1),
        lambda: throughput(candidate, seconds=SECONDS, warmup=0.1),
        rounds=ROUNDS,
        alternate=True,
    )
    ratio = PairedRatio(name, cand, base, target=target, unit="tx/s", per_round=per_round)
    ratio.notes.append(f"{ratio.spread}; {1000 / cand:.2f} ms vs {1000 / base:.2f} ms per transaction (median rounds)")
    return ratio


def _measure(app_url: str, admin_url: str, where: str, *, policy: bool, target: float | None) -> list[Ratio]:
    clinic, ids = _seed(admin_url)
    with (
        ClinicDB(app_url, [], min_size=1, max_size=1) as db,
        ConnectionPool(admin_url, min_size=1, max_size=1, open=True) as bare,
        ConnectionPool(app_url, min_size=1, max_size=1, open=True, kwargs={"autocommit": True}) as floor,
    ):
        bare.wait()
        floor.wait()
        forms = _forms(db, bare, floor, clinic, ids)
        for name, op in forms.items():  # warm: psycopg prepares each statement after 5 runs
            for _ in range(6):
                found = op()
            if not found:  # every form must read the clinic's rows, or the ratio compares nothing
                raise AssertionError(f"{where}: {name} read no row")
        ratios: list[Ratio] = []
        for read in ("point", "newest"):
            label = "point read" if read == "point" else "50 newest"
            ratios.append(
                _ratio(
                    f"{where}: db.read {label}, clinic_id filter / superuser (no RLS)",
                    forms[f"bare {read}"],
                    forms[f"driver {read}"],
                    target,
                )
            )
            ratios.append(
                _ratio(
                    f"{where}: floor {label}: psycopg alone, same work (app login, begin + clinic in one"
                    " simple query) / superuser (no RLS)",
                    forms[f"bare {read}"],
                    forms[f"floor {read}"],
                    None,
                )
            )
            ratios.append(
                _ratio(
                    f"{where}: db.read {label} / the floor (what the driver's own code costs)",
                    forms[f"floor {read}"],
                    forms[f"driver {read}"],
                    None,
                )
            )
            if policy:
                ratios.append(
                    _ratio(
                        f"{where}: db.read {label}, policy only (no filter: every shard) / superuser with filter",
                        forms[f"bare {read}"],
                        forms[f"policy {read}"],
                        None,
                    )
                )
    return ratios


def _is_citus(conn: psycopg.Connection[Any]) -> bool:
    found = conn.execute("select exists (select 1 from pg_extension where extname = 'citus')").fetchone()
    return bool(found and found[0])


def run(servers: ServerSet) -> list[Ratio]:
    if not citus_installed():
        print("citus: skipped, Citus is not installed in this PostgreSQL (docs/citus.md)")
        return []
    load_before = os.getloadavg()
    with throwaway_citus() as cluster:
        ratios = _measure(cluster.app_url, cluster.admin_url, "Citus", policy=True, target=0.90)
    ratios += _measure(servers.app_url, servers.admin_url, "single node", policy=False, target=None)
    load_after = os.getloadavg()
    ratios[0].notes.append(
        f"machine: {os.cpu_count()} cores shared by this client, a coordinator, two workers and a single node;"
        f" load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    return ratios
