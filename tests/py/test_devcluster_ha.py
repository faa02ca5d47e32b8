"""`clinicdb dev up --ha`: a pg_auto_failover monitor and two synchronous nodes (python/clinicdb/devcluster/ha.py).

The formation tests skip, with the reason, where pg_auto_failover is not
installed; the failover behaviour itself is proven by `make soak`.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from clinicdb_cli.main import cli

from clinicdb.devcluster.bootstrap import dev_formation
from clinicdb.devcluster.ha import HA_PACKAGES, HAFormation, HAPackagesMissing, find_ha_bindir

try:
    find_ha_bindir()
    MISSING = None
except HAPackagesMissing as exc:
    MISSING = str(exc)

needs_ha = pytest.mark.skipif(MISSING is not None, reason=f"pg_auto_failover is not installed: {MISSING}")


def test_up_ha_names_the_missing_packages_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without pg_autoctl, `dev up --ha` fails with one line naming the Debian package to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CLINICDB_DEV_DIR", str(tmp_path / "dev"))
    result = CliRunner().invoke(cli, ["dev", "up", "--ha"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert HA_PACKAGES[0] in lines[0] and "apt-get install" in lines[0]
    assert not (tmp_path / "dev" / "ha" / "monitor").exists()


@pytest.fixture(scope="module")
def formation() -> Iterator[HAFormation]:
    """`clinicdb dev up --ha` in a fresh dev folder: migrated, dev logins made; `dev down` at the end."""
    if MISSING is not None:
        pytest.skip(f"pg_auto_failover is not installed: {MISSING}")
    folder = Path(tempfile.mkdtemp(prefix="clinicdb-ha-"))
    folder.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLINICDB_DEV_DIR", str(folder))
        try:
            result = CliRunner().invoke(cli, ["dev", "up", "--ha"])
            assert result.exit_code == 0, result.output
            assert "migrations applied: 0001.roles" in result.output
            yield dev_formation()
        finally:
            CliRunner().invoke(cli, ["dev", "down"])
            shutil.rmtree(folder, ignore_errors=True)


@needs_ha
@pytest.mark.slow
def test_up_ha_makes_a_primary_and_a_synchronous_standby(formation: HAFormation) -> None:
    """After `dev up --ha` one node is primary and the other a standby the primary waits for at commit."""
    status = formation.status()
    assert status.settled, status.as_dict()
    standby = next(n for n in status.nodes if n.name not in ("monitor", status.primary))
    assert standby.sync_state in ("sync", "quorum")
    with psycopg.connect(formation.primary_url()) as conn:
        row = conn.execute("select current_setting('synchronous_standby_names'), pg_is_in_recovery()").fetchone()
    assert row is not None and row[0].startswith("ANY 1") and row[1] is False


@needs_ha
@pytest.mark.slow
def test_dev_env_points_writes_at_the_primary_and_reads_at_the_standby(formation: HAFormation) -> None:
    """`dev env` prints a multi-host URL that reaches the writable node and one that reaches the standby."""
    result = CliRunner().invoke(cli, ["dev", "env"])
    assert result.exit_code == 0, result.output
    urls = dict(line.removeprefix("export ").split("=", 1) for line in result.output.strip().splitlines())
    primary, replica = (urls[k].strip("'") for k in ("CLINICDB_DATABASE_URL", "CLINICDB_REPLICA_URLS"))
    assert primary.count(",") == 1 and "target_session_attrs=read-write" in primary
    assert "clinicdb_app_user@" in primary and "connect_timeout=2" in primary
    with psycopg.connect(primary) as conn:
        assert conn.execute("select pg_is_in_recovery(), current_user").fetchone() == (False, "clinicdb_app_user")
    with psycopg.connect(replica) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)


@needs_ha
@pytest.mark.slow
def test_dev_status_shows_the_primary_the_sync_state_and_the_lag(formation: HAFormation) -> None:
    """`dev status` (the formation being all there is) names the primary and the standby's sync state and lag."""
    result = CliRunner().invoke(cli, ["dev", "status"])
    assert result.exit_code == 0, result.output
    primary = formation.status().primary
    assert f"primary: {primary}" in result.output
    standby_line = next(line for line in result.output.splitlines() if " secondary " in line)
    assert "quorum" in standby_line or "sync" in standby_line
    assert standby_line.split()[-1].isdigit()


@needs_ha
@pytest.mark.slow
def test_up_ha_twice_starts_nothing_new(formation: HAFormation) -> None:
    """A second `dev up --ha` leaves the running keepers, ports and primary as they were."""
    before = formation.status()
    result = CliRunner().invoke(cli, ["dev", "up", "--ha", "--no-migrate"])
    assert result.exit_code == 0, result.output
    after = formation.status()
    assert [(n.name, n.pid, n.port) for n in after.nodes] == [(n.name, n.pid, n.port) for n in before.nodes]
    assert after.primary == before.primary


@needs_ha
@pytest.mark.slow
def test_down_then_up_keeps_the_primary_and_the_data(formation: HAFormation) -> None:
    """`dev down` stops every keeper and server by PID; `dev up --ha` brings the same primary back, no failover."""
    marker = str(uuid.uuid4())
    with psycopg.connect(formation.primary_url(), autocommit=True) as conn:
        conn.execute("create table if not exists ha_probe (v text)")
        conn.execute("insert into ha_probe values (%s)", (marker,))
    primary = formation.status().primary
    result = CliRunner().invoke(cli, ["dev", "down", "--ha"])
    assert result.exit_code == 0, result.output
    assert all(formation.keeper_pid(n) is None and formation.postmaster_pid(n) is None for n in formation.names)
    result = CliRunner().invoke(cli, ["dev", "up", "--ha", "--no-migrate"])
    assert result.exit_code == 0, result.output
    assert "draining" not in result.output and "prepare_promotion" not in result.output
    assert formation.status().primary == primary
    with psycopg.connect(formation.primary_url()) as conn:
        assert conn.execute("select count(*) from ha_probe where v = %s", (marker,)).fetchone() == (1,)
