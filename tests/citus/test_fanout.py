"""The fan-out report: `clinicdb citus fanout` names the queries Citus sent to every shard, and only those."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import clinicdb
from clinicdb import ClinicDB
from clinicdb._url import replace_url
from clinicdb.devcluster.citus import CitusSet

PROBE = "fanout_probe"


def _fanout(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clinicdb_cli", "citus", "fanout", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def statistics(admin: psycopg.Connection[Any]) -> None:
    """Citus's statistics on and empty: pg_stat_statements created, every counter reset."""
    admin.execute("create extension if not exists pg_stat_statements")
    admin.execute("select citus_stat_statements_reset()")
    admin.execute("select pg_stat_statements_reset()")


def _verdicts(stdout: str) -> dict[str, str]:
    """query text -> verdict, for the probe queries in the report's table."""
    found = {}
    for line in stdout.splitlines():
        if PROBE in line:
            for verdict in ("fan-out", "one shard", "no distributed table"):
                if f"  {verdict}  " in line:
                    found[line.split(f"  {verdict}  ", 1)[1].strip()] = verdict
    return found


def test_statistics_report_a_filtered_query_as_one_shard_and_a_policy_only_query_as_fan_out(
    citus: CitusSet, statistics: None, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """Through the driver, a read filtered by `clinic_id = %s` (the scope's validated clinic) is reported as one
    shard, the same read with only the policy to filter as a fan-out (exit 1), and a reference-table read as
    neither."""
    a, _ = clinic_pair
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1) as db, clinicdb.clinic_scope(a), db.read() as cur:
        cur.execute(
            f"select mrn as {PROBE}_filtered from patients where clinic_id = %s", (clinicdb.current_clinic_id(),)
        )
        cur.execute(f"select mrn as {PROBE}_policy from patients where mrn = %s", ("F-1",))
        cur.execute(f"select name as {PROBE}_reference from clinicdb.clinics")
    listed = _fanout("--database-url", citus.admin_url, "--all")
    assert listed.returncode == 1, listed.stdout + listed.stderr
    assert _verdicts(listed.stdout) == {
        f"select mrn as {PROBE}_filtered from patients where clinic_id = $1": "one shard",
        f"select mrn as {PROBE}_policy from patients where mrn = $1": "fan-out",
        f"select name as {PROBE}_reference from clinicdb.clinics": "no distributed table",
    }
    assert "fan-out: 1 of" in listed.stdout
    fanned = _fanout("--database-url", citus.admin_url)
    assert list(_verdicts(fanned.stdout).values()) == ["fan-out"]


def test_statistics_with_no_fan_out_exit_0(
    citus: CitusSet, statistics: None, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """When every tracked query carried the clinic filter, the report says ok and exits 0."""
    a, _ = clinic_pair
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1) as db, db.read(a) as cur:
        cur.execute(f"select mrn as {PROBE}_ok from patients where clinic_id = %s", (a,))
    done = _fanout("--database-url", citus.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("ok: none of")


def test_explain_counts_one_shard_with_the_filter_and_every_shard_without(
    citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """--sql plans each statement: with `clinic_id = '<uuid>'` one shard, with the policy alone every shard
    (32), a reference table its one shard; exit 1 for the fan-out."""
    a, _ = clinic_pair
    done = _fanout(
        "--database-url",
        citus.admin_url,
        "--all",
        "--json",
        "--sql",
        f"select * from patients where clinic_id = '{a}' and mrn = 'x'",
        "--sql",
        "select * from patients where mrn = 'x'",
        "--sql",
        "select * from clinicdb.clinics",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    rows = json.loads(done.stdout)
    assert [(r["shards"], r["verdict"]) for r in rows] == [(1, "one shard"), (32, "fan-out"), (1, "one shard")]


def test_explain_never_runs_the_statement(citus: CitusSet, admin: psycopg.Connection[Any]) -> None:
    """A DELETE given to --sql is planned only: every row is still there."""
    before = admin.execute("select count(*) from clinicdb.clinics").fetchone()
    done = _fanout("--database-url", citus.admin_url, "--sql", "delete from clinicdb.clinics")
    assert done.returncode == 0, done.stdout + done.stderr
    assert admin.execute("select count(*) from clinicdb.clinics").fetchone() == before


def test_explain_never_runs_a_second_statement_smuggled_after_the_first(
    citus: CitusSet, admin: psycopg.Connection[Any]
) -> None:
    """A ';' and a COMMIT after the planned statement cannot end the rolled-back transaction and run what follows."""
    table = f"fanout_smuggled_{uuid.uuid4().hex[:8]}"
    done = _fanout("--database-url", citus.admin_url, "--sql", f"select 1; commit; create table public.{table} (i int)")
    assert done.returncode != 0
    assert admin.execute("select to_regclass(%s)", (f"public.{table}",)).fetchone() == (None,)


def test_not_a_citus_database_is_one_line(citus: CitusSet, admin: psycopg.Connection[Any]) -> None:
    """On a database without the citus extension the report refuses in one line saying so."""
    name = f"plain_{uuid.uuid4().hex[:8]}"
    admin.execute(f"create database {name}")
    try:
        done = _fanout("--database-url", replace_url(citus.admin_url, database=name))
    finally:
        admin.execute(f"drop database {name}")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: not a Citus database: the citus extension is not installed in this database"


def test_statistics_not_tracked_names_the_setting(citus: CitusSet, statistics: None) -> None:
    """With citus.stat_statements_track = 'none' the report refuses in one line naming the setting to set."""
    url = make_conninfo(citus.admin_url, options="-c citus.stat_statements_track=none")
    done = _fanout("--database-url", url)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "citus.stat_statements_track is 'none'; set it to 'all'" in lines[0]
