"""``clinicdb check`` on a Citus coordinator."""

from __future__ import annotations

import subprocess
import sys

from clinicdb.devcluster.citus import CitusSet


def test_check_passes_on_the_coordinator(citus: CitusSet) -> None:
    """Every clinic_id table is protected and audited on the distributed database: check exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "clinicdb_cli", "check", "--database-url", citus.admin_url],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok:" in done.stdout


def test_migrate_detects_citus_and_a_second_run_changes_nothing(citus: CitusSet) -> None:
    """`clinicdb migrate` on a distributed coordinator finds Citus by itself, applies nothing new and re-runs the
    profile without error (it is idempotent)."""
    done = subprocess.run(
        [sys.executable, "-m", "clinicdb_cli", "migrate", "--database-url", citus.admin_url, "--reference-schema"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to apply" in done.stdout
    assert "citus:" in done.stdout
