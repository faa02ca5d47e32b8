"""Which queries went to more than one shard on a Citus coordinator (issue #16, docs/citus.md "Fan-out").

Citus prunes a query to one clinic's shards only when it filters
``clinic_id`` by a literal or a parameter; the tenant policy keeps a query
without that filter safe but sends it to every shard. Two sources say which
queries did:

- :func:`from_statistics` reads ``citus_stat_statements``, Citus's own record
  of the queries its executor ran. ``partition_key`` holds the clinic of a
  query routed to one shard and is NULL otherwise; a NULL row that names a
  hash-distributed table is a fan-out (a query on reference tables only is
  NULL too and is not one). It needs ``pg_stat_statements`` preloaded and
  created, and ``citus.stat_statements_track = 'all'``; :func:`require_statistics`
  says which is missing.
- :func:`explain` plans given statements (never runs them) and counts the
  shards in Citus's plan (``Task Count``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from clinicdb.citus import CitusError, is_citus

FAN_OUT = "fan-out"
ONE_SHARD = "one shard"
NOT_DISTRIBUTED = "no distributed table"

_SETUP = (
    "shared_preload_libraries = 'citus,pg_stat_statements' and citus.stat_statements_track = 'all' on the"
    " coordinator (restart), then create extension pg_stat_statements; or name the queries to EXPLAIN instead"
)

# Every query Citus's executor ran in this database, with its verdict; the tables named are the hash-distributed
# ones (a reference table's query has no partition key either, and goes to one node).
_STATISTICS = r"""
with distributed as (
    select c.relname
      from pg_dist_partition p join pg_class c on c.oid = p.logicalrelid
     where p.partmethod = 'h'
)
select s.query,
       s.userid::regrole::text,
       sum(s.calls)::bigint,
       case when bool_or(s.partition_key is null)
                 and exists (select 1 from distributed d
                              where s.query ~* ('\m' || regexp_replace(d.relname, '\W', '\\\&', 'g') || '\M'))
            then 'fan-out'
            when bool_and(s.partition_key is not null) then 'one shard'
            else 'no distributed table' end
  from citus_stat_statements s
 where s.dbid = (select oid from pg_database where datname = current_database())
 group by s.query, s.userid
 order by 3 desc, 1
"""


@dataclass(frozen=True)
class Routed:
    """One query and where Citus sent it: ``verdict`` is ``fan-out``, ``one shard`` or ``no distributed table``."""

    query: str
    verdict: str
    calls: int | None = None  # how many times it ran (statistics)
    user: str | None = None  # the login that ran it (statistics)
    tasks: int | None = None  # shards in the plan (EXPLAIN)


def require_citus(conn: psycopg.Connection[Any]) -> None:
    """CitusError unless the connected database has the citus extension."""
    if not is_citus(conn):
        raise CitusError("not a Citus database: the citus extension is not installed in this database")


def require_statistics(conn: psycopg.Connection[Any]) -> None:
    """CitusError, in one line naming the setting to change, unless ``citus_stat_statements`` records queries."""
    require_citus(conn)
    row = conn.execute(
        """select 'pg_stat_statements' = any(string_to_array(replace(current_setting('shared_preload_libraries'),
                                                                     ' ', ''), ',')),
                  exists (select 1 from pg_extension where extname = 'pg_stat_statements'),
                  current_setting('citus.stat_statements_track')"""
    ).fetchone()
    assert row is not None
    preloaded, created, track = row
    if not preloaded:
        raise CitusError(f"statistics not enabled: pg_stat_statements is not preloaded; set {_SETUP}")
    if not created:
        raise CitusError(
            "statistics not enabled: pg_stat_statements is not created in this database;"
            " run create extension pg_stat_statements"
        )
    if track != "all":
        raise CitusError(
            f"statistics not enabled: citus.stat_statements_track is '{track}'; set it to 'all' on the coordinator"
            " (alter system set citus.stat_statements_track = 'all'; select pg_reload_conf())"
        )


def from_statistics(conn: psycopg.Connection[Any]) -> list[Routed]:
    """Every query in ``citus_stat_statements`` for this database, most called first, with its verdict.

    Connect as a superuser (or a member of ``pg_read_all_stats``): others see
    only their own queries' text. Counts run since the last
    ``select citus_stat_statements_reset()``.
    """
    require_statistics(conn)
    return [
        Routed(query=str(q), verdict=str(v), calls=int(c), user=str(u))
        for q, u, c, v in conn.execute(_STATISTICS).fetchall()
    ]


def _task_counts(plan: object) -> Iterable[int]:
    if isinstance(plan, dict):
        for key, value in plan.items():
            if key == "Task Count" and isinstance(value, int):
                yield value
            else:
                yield from _task_counts(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from _task_counts(value)


def explain(conn: psycopg.Connection[Any], statement: str) -> Routed:
    """Where Citus would send ``statement`` (planned with EXPLAIN in a transaction that is rolled back, never run).

    ``tasks`` is the largest ``Task Count`` in the plan (0 when no Citus table
    is involved). Parameters cannot be planned: write the clinic as a literal
    (``where clinic_id = '...'``).
    """
    require_citus(conn)
    with conn.transaction(force_rollback=True):
        # Prepared, so the server takes exactly one statement: a '; commit; ...' after it is refused, never run.
        row = conn.execute(f"explain (format json) {statement}", prepare=True).fetchone()
    assert row is not None
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    tasks = max(_task_counts(plan), default=0)
    verdict = FAN_OUT if tasks > 1 else ONE_SHARD if tasks == 1 else NOT_DISTRIBUTED
    return Routed(query=" ".join(statement.split()), verdict=verdict, tasks=tasks)


def split_statements(text: str) -> list[str]:
    """The statements of a file: each ends with ``;`` at the end of a line (the last one may omit it)."""
    statements, current = [], []
    for line in text.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    statements.append("\n".join(current))
    return [s.strip() for s in statements if s.strip() and not _only_comments(s)]


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())


__all__ = [
    "FAN_OUT",
    "NOT_DISTRIBUTED",
    "ONE_SHARD",
    "Routed",
    "explain",
    "from_statistics",
    "require_citus",
    "require_statistics",
    "split_statements",
]
