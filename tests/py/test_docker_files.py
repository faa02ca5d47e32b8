"""docker/: the files parse and use the settings `clinicdb dev up` uses (Docker itself is not run here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from clinicdb.devcluster.cluster import CONF_FILE

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _compose() -> dict[str, object]:
    loaded = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_has_a_primary_and_a_replica() -> None:
    """The compose file parses and defines a primary and a replica built from docker/."""
    services = _compose()["services"]
    assert isinstance(services, dict) and {"primary", "replica"} <= services.keys()
    for service in services.values():
        assert service["build"] == "."


def test_compose_mounts_the_dev_settings_file_not_a_copy() -> None:
    """Both servers mount the exact settings file `dev up` includes, so the two cannot drift."""
    services = _compose()["services"]
    assert isinstance(services, dict)
    for service in services.values():
        mounts = [v.split(":")[0] for v in service["volumes"] if v.endswith(":ro")]
        assert [(DOCKER / m).resolve() for m in mounts] == [CONF_FILE.resolve()]
    assert not list(DOCKER.rglob("*.conf")), "docker/ must not carry its own copy of the settings"


def test_the_settings_file_is_valid_and_replication_ready() -> None:
    """clinicdb.conf is plain key = value lines and turns on what a hot-standby replica needs."""
    settings = {}
    for raw in CONF_FILE.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            key, sep, value = line.partition("=")
            assert sep, f"not a setting: {raw!r}"
            settings[key.strip()] = value.strip().strip("'")
    assert settings["wal_level"] == "replica"
    assert settings["hot_standby"] == "on"
    assert int(settings["max_wal_senders"]) >= 2


def test_shell_scripts_parse() -> None:
    """The entrypoint and init scripts are valid bash."""
    for script in [
        DOCKER / "replica-entrypoint.sh",
        DOCKER / "initdb" / "10-clinicdb.sh",
        DOCKER / "install-debian-deps.sh",
    ]:
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_dockerfile_installs_pgtap_on_postgres_15() -> None:
    """The image is PostgreSQL 15 with pgTAP and pg_prove, like the CI machines."""
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM postgres:15" in text
    assert "postgresql-15-pgtap" in text and "libtap-parser-sourcehandler-pgtap-perl" in text
