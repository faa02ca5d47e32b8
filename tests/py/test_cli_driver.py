"""``clinicdb health`` and ``clinicdb demo`` on the test servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from clinicdb_cli.main import cli

from clinicdb.devcluster.testing import ServerSet


def _env(servers: ServerSet) -> dict[str, str]:
    return {
        "CLINICDB_DATABASE_URL": servers.app_url,
        "CLINICDB_REPLICA_URLS": ",".join(servers.app_replica_urls),
        "CLINICDB_ADMIN_URL": servers.admin_url,
    }


def test_health_prints_every_server_and_the_overall_status(replica_servers: ServerSet) -> None:
    """clinicdb health lists primary and replica as up and says healthy, exit 0."""
    result = CliRunner().invoke(cli, ["health"], env=_env(replica_servers))
    assert result.exit_code == 0, result.output
    assert "primary" in result.output and "replica1" in result.output and "overall: healthy" in result.output


def test_health_json_and_exit_code_when_down(replica_servers: ServerSet) -> None:
    """--json gives the same report as db.health(); an unreachable primary exits 1 with status down."""
    ok = CliRunner().invoke(cli, ["health", "--json"], env=_env(replica_servers))
    assert json.loads(ok.output)["status"] == "healthy"
    down = CliRunner().invoke(
        cli, ["health", "--json", "--database-url", "postgresql://x@127.0.0.1:1/none"], env=_env(replica_servers)
    )
    assert down.exit_code == 1 and json.loads(down.output)["status"] == "down"


def test_health_without_a_url_is_one_clear_line() -> None:
    """With no URL anywhere the command says what to do, without a traceback."""
    result = CliRunner().invoke(cli, ["health"], env={"CLINICDB_DATABASE_URL": ""})
    assert result.exit_code != 0 and "clinicdb dev env" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_demo_tells_the_story_through_the_driver(
    replica_servers: ServerSet, fresh_servers: ServerSet, tmp_path: Path
) -> None:
    """The demo shows each clinic only its own patients, refusals without a clinic, read-your-writes and ciphertext."""
    env = {**_env(fresh_servers), "CLINICDB_DEV_DIR": str(tmp_path)}  # its dev master key stays out of the checkout
    result = CliRunner().invoke(cli, ["demo"], env=env)
    assert result.exit_code == 0, result.output
    assert "Ada" in result.output and "Grace" in result.output
    northside = result.output.split("db.read(Northside")[1].split("db.read(Harbor")[0]
    assert "Grace" not in northside
    assert "refused by the driver" in result.output and "rows visible: 0" in result.output
    assert "read sees address" in result.output and "findings: 0" in result.output
    assert "only ciphertext rests" in result.output
    assert "demo-frontdesk" in result.output.split("The audit trail of")[1]  # the read-your-writes update, audited
