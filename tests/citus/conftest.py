"""Fixtures for the Citus suites (``make test-citus``): a coordinator and two workers the run starts itself.

``citus`` is one migrated cluster for the whole run (throwaway nodes on free
loopback ports, stopped by PID at the end), with ``log_statement = all`` on
every node so the encryption suite can read what each node logged, and Citus's
query statistics on (``pg_stat_statements``) for the fan-out report. The whole
folder is skipped when the machine's PostgreSQL has no Citus; ``make
test-citus`` says so in one line before pytest ever starts.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from clinicdb.devcluster.citus import CitusSet, citus_installed, throwaway_citus

if not citus_installed():
    pytest.skip("Citus is not installed in this PostgreSQL", allow_module_level=True)


SETTINGS = {
    "log_statement": "all",
    "log_min_error_statement": "error",
    # The worst case for the key-logging suite: a node whose operator logs every bound parameter, at any level
    # (the migration turns them off for the coordinator's database only).
    "log_parameter_max_length": "-1",
    "log_parameter_max_length_on_error": "-1",
    "shared_preload_libraries": "citus,pg_stat_statements",
    "citus.stat_statements_track": "all",
}


@pytest.fixture(scope="session")
def citus() -> Iterator[CitusSet]:
    """A migrated Citus coordinator with two workers, every table distributed."""
    with throwaway_citus(settings=SETTINGS) as found:
        yield found


@pytest.fixture(scope="session")
def master_key() -> str:
    """The cluster's one master key (the database remembers the first one used, and refuses any other)."""
    return secrets.token_hex(32)


@pytest.fixture
def admin(citus: CitusSet) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to the coordinator (autocommit)."""
    with psycopg.connect(citus.admin_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def clinic_pair(admin: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID]:
    """Two fresh clinics, so tests never see each other's rows."""
    a = admin.execute("select clinicdb.create_clinic(%s)", (f"A {uuid.uuid4()}",)).fetchone()
    b = admin.execute("select clinicdb.create_clinic(%s)", (f"B {uuid.uuid4()}",)).fetchone()
    assert a and b
    return a[0], b[0]
