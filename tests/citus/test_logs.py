"""No node logs a failing statement's text or its bound parameters: Citus writes values into worker statements.

A bind parameter on the coordinator reaches a worker as a literal in the
statement Citus sends. PostgreSQL logs a failing statement's text at
``log_min_error_statement = error`` (its default), so a unique violation on a
patient's row would leave the row's values in the worker's log.
``clinicdb.citus_protect_logs()`` (migration 0041, run by ``migrate``) sets
``log_min_error_statement = panic`` on every node's database and the bound
parameter limits on the workers'. The nodes here run with the opposite in
``postgresql.conf`` (conftest): the database's settings must win.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from clinicdb import ClinicDB
from clinicdb.devcluster.citus import CitusSet


def _setting(url: str, name: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("select current_setting(%s)", (name,)).fetchone()
    assert row is not None
    return str(row[0])


def test_every_node_database_hides_failing_statements_and_workers_hide_parameters(citus: CitusSet) -> None:
    """A new session in the database, on the coordinator and on each worker, runs with the protective settings."""
    for url in [citus.admin_url, *citus.worker_admin_urls]:
        assert _setting(url, "log_min_error_statement") == "panic", url
        assert _setting(url, "log_parameter_max_length") == "0", url
        assert _setting(url, "log_parameter_max_length_on_error") == "0", url


def test_a_failing_write_leaves_no_row_value_in_any_node_log(
    citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A unique violation on a patient's row is logged as an error on its worker without the row's values."""
    a, _ = clinic_pair
    family = f"Family{uuid.uuid4().hex[:12]}"
    offsets = {log: log.stat().st_size for log in citus.log_files()}
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1) as db:
        insert = "insert into patients (mrn, given_name, family_name) values (%s, 'Ann', %s)"
        with db.write(a) as cur:
            cur.execute(insert, ("LOG-1", family))
        with pytest.raises(psycopg.errors.UniqueViolation), db.write(a) as cur:
            cur.execute(insert, ("LOG-1", family))
    logged: dict[str, str] = {}
    for log, offset in offsets.items():
        with log.open("rb") as f:
            f.seek(offset)
            logged[str(log)] = f.read().decode("utf-8", "replace")
    assert any("duplicate key value" in text for text in logged.values()), "the error itself is logged"
    for log, text in logged.items():
        lines = text.splitlines()
        statements = [line for line in lines if "STATEMENT:" in line and family in line]
        assert not statements, f"{log}: a failing statement's text with the row's values"
        parameters = [line for line in lines if "parameters:" in line and family in line]
        assert not parameters, f"{log}: the row's values as bound parameters"
