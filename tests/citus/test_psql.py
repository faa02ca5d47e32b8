"""`clinicdb psql` through a Citus coordinator: the session sees only its clinic on every shard, on every worker."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from clinicdb.devcluster.citus import CitusSet

pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="psql not installed")

LIST = "select string_agg(distinct clinic_id::text, ',') || ' ' || count(*) from patients"


def _psql(url: str, clinic: uuid.UUID, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clinicdb_cli", "psql", "--clinic", str(clinic), "--database-url", url, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _worker_of(admin: psycopg.Connection[Any], clinic: uuid.UUID) -> int:
    row = admin.execute(
        """select nodeport from pg_dist_shard_placement
            where shardid = get_shard_id_for_distribution_column('patients', %s::uuid)""",
        (clinic,),
    ).fetchone()
    assert row
    return int(row[0])


@pytest.fixture
def spread(admin: psycopg.Connection[Any], citus: CitusSet) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Clinic A with 3 patients, and other clinics with 2 each whose shards cover every worker (so a session that
    sees only A's rows was answered by every worker without showing theirs)."""
    clinics: list[uuid.UUID] = []
    while len(clinics) < 2 or len({_worker_of(admin, c) for c in clinics[1:]}) < len(citus.worker_admin_urls):
        row = admin.execute("select clinicdb.create_clinic(%s)", (f"P {uuid.uuid4()}",)).fetchone()
        assert row
        clinics.append(row[0])
        assert len(clinics) < 40
    for clinic in clinics:
        admin.execute(
            "insert into patients (clinic_id, mrn, given_name, family_name)"
            " select %s, 'PS-' || g, 'x', 'y' from generate_series(1, %s) g",
            (clinic, 3 if clinic == clinics[0] else 2),
        )
    return clinics[0], clinics[1:]


def _temporary_logins(citus: CitusSet) -> int:
    total = 0
    for url in [citus.admin_url, *citus.worker_admin_urls]:
        with psycopg.connect(url) as conn:
            row = conn.execute("select count(*) from pg_roles where rolname like 'clinicdb\\_psql\\_%'").fetchone()
            total += int(row[0]) if row else 0
    return total


def test_readonly_psql_session_sees_only_its_clinic_on_every_shard(
    citus: CitusSet, spread: tuple[uuid.UUID, list[uuid.UUID]]
) -> None:
    """An operator's `clinicdb psql --clinic A` (readonly) on Citus reads A's rows and no other clinic's, asking
    every shard; a write is refused; the temporary login it used is gone from every node afterwards."""
    a, _ = spread
    done = _psql(citus.admin_url, a, "--", "-At", "-c", LIST, "-c", "select count(*) from clinicdb.clinics")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-2:] == [f"{a} 3", "1"]
    refused = _psql(citus.admin_url, a, "--", "-At", "-c", "delete from patients")
    assert refused.returncode != 0 and "permission denied" in refused.stderr
    assert _temporary_logins(citus) == 0


def test_app_psql_session_writes_and_reads_only_its_clinic_on_every_shard(
    citus: CitusSet, admin: psycopg.Connection[Any], spread: tuple[uuid.UUID, list[uuid.UUID]]
) -> None:
    """With --role clinicdb_app, each statement of the session (its own transaction) has the clinic on the
    workers: an insert lands in A's shard with its audit row, and the reads show A's rows only."""
    a, others = spread
    done = _psql(
        citus.admin_url, a, "--role", "clinicdb_app", "--", "-At",
        "-c", "insert into patients (mrn, given_name, family_name) values ('PS-NEW', 'x', 'y')",
        "-c", LIST,
        "-c", "update patients set given_name = 'z'",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{a} 4" in done.stdout.splitlines()
    counts = admin.execute(
        "select clinic_id, count(*) filter (where given_name = 'z') from patients where clinic_id = any(%s)"
        " group by clinic_id",
        ([a, *others],),
    ).fetchall()
    assert dict(counts) == {a: 4, **{o: 0 for o in others}}
    audited = admin.execute(
        "select count(*) from clinicdb.audit_log where clinic_id = %s and table_name = 'public.patients'"
        " and action = 'insert' and new_values->>'mrn' = 'PS-NEW'",
        (a,),
    ).fetchone()
    assert audited == (1,)
    assert _temporary_logins(citus) == 0


def test_staff_psql_session_sees_only_its_mapped_clinic_on_every_shard(
    citus: CitusSet, admin: psycopg.Connection[Any], spread: tuple[uuid.UUID, list[uuid.UUID]]
) -> None:
    """Given a staff login's URL, `clinicdb psql` runs as that login: its mapping gives A's rows only on every
    shard; asking for a clinic it is not mapped to is refused in one line before psql starts."""
    a, others = spread
    login = f"dr_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("create role {} login in role clinicdb_staff").format(sql.Identifier(login)))
    admin.execute("select clinicdb.grant_staff(%s, %s)", (login, a))
    done = _psql(citus.login_url(login), a, "--", "-At", "-c", LIST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"{a} 3"
    refused = _psql(citus.login_url(login), others[0], "--", "-At", "-c", LIST)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"Error: staff login {login} is not mapped to clinic {others[0]}: see clinicdb staff list"
    )


def test_staff_login_mapped_to_several_clinics_is_refused_on_citus(
    citus: CitusSet, admin: psycopg.Connection[Any], spread: tuple[uuid.UUID, list[uuid.UUID]]
) -> None:
    """A staff login mapped to two clinics cannot pick one for a whole psql session on Citus (a session setting
    does not reach the workers): one line saying what to do instead, and psql never starts."""
    a, others = spread
    login = f"dr_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("create role {} login in role clinicdb_staff").format(sql.Identifier(login)))
    admin.execute("select clinicdb.grant_staff(%s, %s)", (login, a))
    admin.execute("select clinicdb.grant_staff(%s, %s)", (login, others[0]))
    done = _psql(citus.login_url(login), a, "--", "-At", "-c", LIST)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "mapped to 2 clinics" in lines[0] and "set local app.clinic_id" in lines[0]
