"""Fixtures: real PostgreSQL servers the tests start themselves.

``servers`` is one migrated primary + streaming replica for the whole run,
started with the same code as ``clinicdb dev up`` in a temporary folder on
free ports and stopped by PID at the end. ``CLINICDB_TEST_DATABASE_URL`` runs
against an existing server instead (tests that need a replica then skip).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from clinicdb import schema
from clinicdb._url import replace_url
from clinicdb.devcluster import PostgresNotFound, find_bindir
from clinicdb.devcluster.testing import ServerSet, throwaway_servers
from clinicdb.settings import env


def pytest_report_header() -> str:
    """Which PostgreSQL the servers of this run come from (``make test PG_BINDIR=...`` changes it)."""
    if env("CLINICDB_TEST_DATABASE_URL"):
        return "PostgreSQL: the existing server of CLINICDB_TEST_DATABASE_URL"
    try:
        bindir = find_bindir()
    except PostgresNotFound as exc:
        return f"PostgreSQL: {exc}"
    version = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False)
    return f"PostgreSQL: {version.stdout.strip()} from {bindir}"


@pytest.fixture(scope="session")
def servers() -> Iterator[ServerSet]:
    """A migrated primary and one replica for the whole test session."""
    with throwaway_servers(replicas=1) as found:
        yield found


@pytest.fixture
def replica_servers(servers: ServerSet) -> ServerSet:
    """``servers``, skipping the test when no replica is available."""
    if not servers.replica_admin_urls:
        pytest.skip("needs a replica (not available with CLINICDB_TEST_DATABASE_URL)")
    return servers


@pytest.fixture
def admin(servers: ServerSet) -> Iterator[psycopg.Connection]:
    """A superuser connection to the test database (autocommit)."""
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def clinic_pair(admin: psycopg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    """Two fresh clinics, so tests never see each other's rows."""
    a = admin.execute("select clinicdb.create_clinic(%s)", (f"A {uuid.uuid4()}",)).fetchone()
    b = admin.execute("select clinicdb.create_clinic(%s)", (f"B {uuid.uuid4()}",)).fetchone()
    assert a and b
    return a[0], b[0]


@pytest.fixture
def fresh_servers(servers: ServerSet) -> Iterator[ServerSet]:
    """A newly migrated database on the session's servers, for tests that set database-wide state
    (the demo registers its own master key; a database accepts only one)."""
    name = f"fresh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    fresh = ServerSet(
        admin_url=replace_url(servers.admin_url, database=name),
        cluster=servers.cluster,
        replica_admin_urls=[replace_url(u, database=name) for u in servers.replica_admin_urls],
    )
    schema.apply(fresh.admin_url, reference=True)
    if servers.cluster is not None:
        servers.cluster.wait_for_replay()
    yield fresh
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
