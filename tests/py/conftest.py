"""Fixtures: real PostgreSQL servers the tests start themselves.

``servers`` is one migrated primary + streaming replica for the whole run,
started with the same code as ``clinicdb dev up`` in a temporary folder on
free ports and stopped by PID at the end. ``CLINICDB_TEST_DATABASE_URL`` runs
against an existing server instead (tests that need a replica then skip).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from clinicdb.devcluster.testing import ServerSet, throwaway_servers


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
