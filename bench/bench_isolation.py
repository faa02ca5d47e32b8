"""RLS cost: tenant queries under the policies vs the same query with an explicit filter.

Data: PATIENTS patients over CLINICS clinics. Each operation is one
transaction as the driver runs it (BEGIN; set_config('app.clinic_id', $1,
true); query; COMMIT) on a random clinic/patient:

- candidate: the app login, forced RLS, the query with no clinic filter;
- baseline: a login with exactly the app's grants but BYPASSRLS (so the only
  difference is row level security; a superuser would also skip permission
  checks), the same transaction shape, and the query with an explicit
  ``WHERE clinic_id = $1``. The role exists only for the benchmark's servers.

ratio = candidate throughput / baseline throughput (target >= 0.95). When a
ratio falls short, both plans are printed.

Then the planner cost of keeping no statistics on PHI columns (#13): the same
queries under RLS, with PHI statistics (as PostgreSQL would keep them) as the
baseline and without (as protect_table leaves them) as the candidate, in
interleaved rounds. No target: it is the price of not leaking value
frequencies through EXPLAIN, printed so it can be weighed.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import psycopg.sql

from bench.harness import Ratio, interleaved, throughput
from clinicdb._url import replace_url
from clinicdb.devcluster.testing import ServerSet

CLINICS = int(os.environ.get("CLINICDB_BENCH_CLINICS", "1000"))
PATIENTS = int(os.environ.get("CLINICDB_BENCH_PATIENTS", "1000000"))
SECONDS = float(os.environ.get("CLINICDB_BENCH_SECONDS", "2"))
ROUNDS = int(os.environ.get("CLINICDB_BENCH_ROUNDS", "5"))
TARGET = 0.95


@dataclass(frozen=True)
class Query:
    name: str
    under_rls: str
    explicit: str
    param: Callable[[tuple[str, str, str]], tuple[object, ...]]


QUERIES = [
    Query(
        "point read by id",
        "select * from patients where id = %s",
        "select * from patients where id = %s and clinic_id = %s",
        lambda s: (s[1],),
    ),
    Query(
        "50 newest of a clinic",
        "select * from patients order by created_at desc limit 50",
        "select * from patients where clinic_id = %s order by created_at desc limit 50",
        lambda s: (),
    ),
    Query(
        "count of a clinic",
        "select count(*) from patients",
        "select count(*) from patients where clinic_id = %s",
        lambda s: (),
    ),
    Query(
        "name search in a clinic",
        "select * from patients where family_name = %s",
        "select * from patients where family_name = %s and clinic_id = %s",
        lambda s: (s[2],),
    ),
]


def load(admin_url: str) -> list[tuple[str, str, str]]:
    """Create the clinics and patients once (triggers off for the load), return a sample."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        have = conn.execute("select count(*) from patients where mrn like 'BENCH-%'").fetchone()
        if not have or have[0] < PATIENTS:
            started = time.perf_counter()
            conn.execute("set session_replication_role = replica")  # no audit/touch triggers, no FK checks
            conn.execute(
                "insert into clinicdb.clinics (id, name) select gen_random_uuid(), 'Bench clinic ' || g"
                " from generate_series(1, %s) g",
                (CLINICS,),
            )
            conn.execute(
                """
                with c as (select id, row_number() over (order by id) - 1 as n from clinicdb.clinics
                            where name like 'Bench clinic %%')
                insert into patients (clinic_id, mrn, given_name, family_name, birth_date, created_at)
                select c.id, 'BENCH-' || g, 'Given' || (g %% 97), 'Family' || (g %% 211),
                       date '1950-01-01' + (g %% 20000), now() - (g %% 100000) * interval '1 minute'
                  from generate_series(0, %s - 1) g
                  join c on c.n = g %% %s
                """,
                (PATIENTS, CLINICS),
            )
            conn.execute("reset session_replication_role")
            conn.execute("vacuum analyze patients")
            print(f"  loaded {PATIENTS:,} patients over {CLINICS:,} clinics in {time.perf_counter() - started:.0f}s")
        rows = conn.execute(
            "select clinic_id::text, id::text, family_name from patients tablesample system (1)"
            " where mrn like 'BENCH-%' limit 2000"
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def _op(
    conn: psycopg.Connection, sql: str, sample: list[tuple[str, str, str]], query: Query, explicit: bool
) -> Callable[[], object]:
    rng = random.Random(7)  # noqa: S311 - sampling, not security

    def op() -> object:
        s = sample[rng.randrange(len(sample))]
        params = (*query.param(s), s[0]) if explicit else query.param(s)
        with conn.transaction():
            conn.execute("select set_config('app.clinic_id', %s, true)", (s[0],), prepare=True)
            return conn.execute(sql, params, prepare=True).fetchall()  # type: ignore[arg-type]

    return op


def _plan(conn: psycopg.Connection, sql: str, params: tuple[object, ...], clinic: str) -> str:
    with conn.transaction():
        conn.execute("select set_config('app.clinic_id', %s, true)", (clinic,))
        rows = conn.execute(f"explain analyze {sql}", params).fetchall()  # type: ignore[arg-type]
    return "\n".join(f"        {r[0]}" for r in rows)


BASELINE_LOGIN = "clinicdb_bench_no_rls"


def _baseline_login(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_roles where rolname = %s", (BASELINE_LOGIN,)).fetchone():
            conn.execute(f"create role {BASELINE_LOGIN} login bypassrls in role clinicdb_app")
    return replace_url(admin_url, user=BASELINE_LOGIN)


def run(servers: ServerSet) -> list[Ratio]:
    sample = load(servers.admin_url)
    ratios: list[Ratio] = []
    baseline_url = _baseline_login(servers.admin_url)
    with psycopg.connect(servers.app_url) as app, psycopg.connect(baseline_url) as admin:
        for query in QUERIES:
            candidate_op = _op(app, query.under_rls, sample, query, explicit=False)
            baseline_op = _op(admin, query.explicit, sample, query, explicit=True)
            base, cand = interleaved(
                lambda op=baseline_op: throughput(op, seconds=SECONDS),  # type: ignore[misc]
                lambda op=candidate_op: throughput(op, seconds=SECONDS),  # type: ignore[misc]
                rounds=ROUNDS,
            )
            ratio = Ratio(query.name, cand, base, TARGET, unit="txn/s")
            if not ratio.meets_target:
                s = sample[0]
                ratio.notes.append("plan under RLS (app):")
                ratio.notes.append(_plan(app, query.under_rls, query.param(s), s[0]))
                ratio.notes.append("plan with explicit filter (no RLS):")
                ratio.notes.append(_plan(admin, query.explicit, (*query.param(s), s[0]), s[0]))
            ratios.append(ratio)
        ratios += _statistics_cost(servers.admin_url, app, sample)
    return ratios


def _set_phi_statistics(admin_url: str, *, collect: bool) -> None:
    """PHI columns of patients back to PostgreSQL's default statistics (and analyzed), or as protect_table
    leaves them (none, stored ones deleted)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if collect:
            columns = [
                r[0]
                for r in conn.execute(
                    "select column_name from clinicdb.phi_columns where table_name = 'public.patients'::regclass"
                )
            ]
            for column in columns:
                conn.execute(
                    psycopg.sql.SQL("alter table public.patients alter column {} set statistics -1").format(
                        psycopg.sql.Identifier(column)
                    )
                )
            conn.execute("analyze public.patients")
        else:
            conn.execute("select clinicdb.protect_table('public.patients')")


def _discard_plans(conn: psycopg.Connection) -> None:
    """Plans prepared under the other statistics go; outside any transaction, so no lock is held afterwards."""
    conn.execute("discard plans")
    conn.commit()


def _statistics_cost(admin_url: str, app: psycopg.Connection, sample: list[tuple[str, str, str]]) -> list[Ratio]:
    ratios: list[Ratio] = []
    for query in QUERIES:
        op = _op(app, query.under_rls, sample, query, explicit=False)

        def with_statistics(op: Callable[[], object] = op) -> float:
            _set_phi_statistics(admin_url, collect=True)
            _discard_plans(app)
            return throughput(op, seconds=SECONDS)

        def without_statistics(op: Callable[[], object] = op) -> float:
            _set_phi_statistics(admin_url, collect=False)
            _discard_plans(app)
            return throughput(op, seconds=SECONDS)

        base, cand = interleaved(with_statistics, without_statistics, rounds=ROUNDS)
        ratios.append(Ratio(f"{query.name}: no PHI statistics / with", cand, base, None, unit="txn/s"))
    _set_phi_statistics(admin_url, collect=False)
    return ratios
