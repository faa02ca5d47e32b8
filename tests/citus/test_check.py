"""``clinicdb check`` on a Citus coordinator."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from citus_helpers import run_clinicdb

from clinicdb.devcluster.citus import CitusSet


def test_check_passes_on_the_coordinator(citus: CitusSet) -> None:
    """Every clinic_id table is protected and audited on the distributed database: check exits 0."""
    done = run_clinicdb("check", "--database-url", citus.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok:" in done.stdout


def test_migrate_detects_citus_and_a_second_run_changes_nothing(citus: CitusSet) -> None:
    """`clinicdb migrate` on a distributed coordinator finds Citus by itself, applies nothing new and re-runs the
    profile without error (it is idempotent)."""
    done = run_clinicdb("migrate", "--database-url", citus.admin_url, "--reference-schema")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to apply" in done.stdout
    assert "citus:" in done.stdout


@pytest.mark.parametrize(
    ("breach", "repair", "reported"),
    [
        (
            "select run_command_on_workers($$set citus.enable_ddl_propagation to off;"
            " grant execute on function citus_internal.add_tenant_schema(oid, integer) to public$$)",
            "call clinicdb.citus_harden()",
            "internal functions are executable by PUBLIC",
        ),
        (
            "select run_command_on_workers($$set citus.enable_ddl_propagation to off;"
            " alter database clinicdb reset log_min_error_statement$$)",
            "call clinicdb.citus_protect_logs()",
            "lacks log_min_error_statement=panic",
        ),
        (
            "select run_command_on_workers($$set citus.enable_ddl_propagation to off;"
            " alter database clinicdb reset log_parameter_max_length$$)",
            "call clinicdb.citus_protect_logs()",
            "lacks log_parameter_max_length=0",
        ),
        (
            "grant update on clinicdb.clinics to clinicdb_staff",
            "call clinicdb.citus_harden()",
            "clinicdb_staff may update it",
        ),
        (
            "create role clinicdb_psql_leftover login in role clinicdb_readonly",
            "drop role clinicdb_psql_leftover",
            "drop role clinicdb_psql_leftover",
        ),
    ],
    ids=[
        "internals-public-on-a-worker",
        "worker-logs-failing-statements",
        "worker-logs-parameters",
        "reference-table-writable",
        "leftover-psql-login",
    ],
)
def test_check_reports_what_undoes_the_citus_profile_on_any_node(
    citus: CitusSet, admin: psycopg.Connection[Any], breach: str, repair: str, reported: str
) -> None:
    """A right given back on a worker, a worker's database without the logging settings, a writable reference
    table, a temporary psql login that outlived its session: check names it with what to run, exits 1, and
    passes again once the named repair ran."""
    admin.execute(breach)
    try:
        found = run_clinicdb("check", "--database-url", citus.admin_url)
        assert found.returncode == 1, found.stdout + found.stderr
        assert reported in found.stdout
        assert "Traceback" not in found.stderr
    finally:
        admin.execute(repair)
    assert run_clinicdb("check", "--database-url", citus.admin_url).returncode == 0
