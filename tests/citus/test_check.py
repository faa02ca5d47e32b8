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
