"""The embedded primary + replica behind `clinicdb dev` (python/clinicdb/devcluster)."""

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

from clinicdb.devcluster import LocalCluster, PostgresNotFound, find_bindir
from clinicdb.devcluster.testing import TEST_SETTINGS, ServerSet


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A folder the server's OS user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="clinicdb-devtest-"))
    path.chmod(0o755)
    yield path / "cluster"
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_up_twice_is_idempotent(server_dir: Path) -> None:
    """A second `up` starts nothing new: same PIDs, same ports, same URLs."""
    cluster = LocalCluster(server_dir, replicas=1, settings=TEST_SETTINGS)
    try:
        first = cluster.up()
        second = LocalCluster(server_dir, replicas=1).up()
        assert [(s.name, s.pid, s.port) for s in first.servers] == [(s.name, s.pid, s.port) for s in second.servers]
        assert all(s.running for s in second.servers)
        assert [s.in_recovery for s in second.servers] == [False, True]
    finally:
        stopped = cluster.down()
    assert stopped == ["replica1", "primary"]
    assert all(not s.running for s in cluster.status().servers)


def test_replica_replays_a_write_made_on_the_primary(replica_servers: ServerSet) -> None:
    """A row committed on the primary becomes readable on the hot-standby replica."""
    marker = str(uuid.uuid4())
    with psycopg.connect(replica_servers.admin_url, autocommit=True) as primary:
        primary.execute("create table if not exists replay_probe (v text)")
        primary.execute("insert into replay_probe values (%s)", (marker,))
    assert replica_servers.cluster is not None
    replica_servers.cluster.wait_for_replay()
    with psycopg.connect(replica_servers.replica_admin_urls[0]) as replica:
        row = replica.execute(
            "select pg_is_in_recovery(), count(*) from replay_probe where v = %s", (marker,)
        ).fetchone()
    assert row == (True, 1)


def test_status_reports_replica_lag(replica_servers: ServerSet) -> None:
    """`status` shows the primary and a running replica with a measured lag."""
    assert replica_servers.cluster is not None
    status = replica_servers.cluster.status()
    replica = status.servers[1]
    assert replica.running and replica.in_recovery is True
    assert replica.lag_bytes is not None and replica.lag_bytes >= 0


def test_missing_binaries_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no PostgreSQL binaries anywhere, `dev up` prints one line saying how to install them."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CLINICDB_PG_BINDIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr("clinicdb.devcluster.binaries._candidates", lambda: [tmp_path / "nowhere"])
    with pytest.raises(PostgresNotFound):
        find_bindir()
    monkeypatch.setenv("CLINICDB_DEV_DIR", str(tmp_path / "dev"))
    result = CliRunner().invoke(cli, ["dev", "up"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert lines == [
        "Error: no PostgreSQL server binaries (initdb, pg_ctl) found: install them with "
        "'apt-get install postgresql-15 postgresql-contrib', or put the directory holding "
        "initdb and pg_ctl on PATH"
    ]
    assert "Traceback" not in result.output


def test_a_bindir_asked_for_by_name_is_never_replaced_by_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make test PG_BINDIR=DIR` with no server in DIR fails naming DIR, instead of quietly running everything on
    whichever PostgreSQL PATH or /usr/lib/postgresql offers."""
    monkeypatch.setenv("CLINICDB_PG_BINDIR", str(tmp_path / "pg99" / "bin"))
    with pytest.raises(PostgresNotFound, match=r"CLINICDB_PG_BINDIR=.*/pg99/bin holds no initdb, pg_ctl and postgres"):
        find_bindir()


def test_a_port_someone_listens_on_is_not_free_but_a_closed_one_is() -> None:
    """The port probe refuses a port with a live listener and accepts it once the listener is gone."""
    import socket

    from clinicdb.devcluster.cluster import _port_free

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        assert not _port_free(port)
    finally:
        listener.close()
    assert _port_free(port)


def test_servers_read_no_settings_from_outside_their_data_directory(replica_servers: ServerSet) -> None:
    """Every setting a server reads from a file comes from its own data directory, so a checkout or
    site-packages its OS user cannot enter never stops it."""
    cluster = replica_servers.cluster
    assert cluster is not None
    for name, url in (("primary", replica_servers.admin_url), ("replica1", replica_servers.replica_admin_urls[0])):
        data = cluster.data_dir(name)
        with psycopg.connect(url) as conn:
            files = {
                r[0] for r in conn.execute("select distinct sourcefile from pg_settings where sourcefile is not null")
            }
            wal_level = conn.execute("select sourcefile from pg_settings where name = 'wal_level'").fetchone()
        assert files and all(Path(f).resolve().is_relative_to(data.resolve()) for f in files), files
        assert wal_level is not None and Path(wal_level[0]).name == "clinicdb.conf"


@pytest.mark.slow
def test_a_server_made_by_an_earlier_version_gets_its_settings_copied_in(server_dir: Path) -> None:
    """A data directory whose postgresql.conf includes the settings by their path in the checkout is switched
    to a copy of its own when it starts."""
    from clinicdb.devcluster.cluster import CONF_FILE

    cluster = LocalCluster(server_dir, replicas=0, settings=TEST_SETTINGS)
    try:
        cluster.up()
        cluster.down()
        conf = cluster.data_dir("primary") / "postgresql.conf"
        conf.write_text(conf.read_text().replace(f"include '{CONF_FILE.name}'", f"include '{CONF_FILE}'"))
        (cluster.data_dir("primary") / CONF_FILE.name).unlink()
        cluster.up()
        assert f"include '{CONF_FILE}'" not in conf.read_text()
        assert (cluster.data_dir("primary") / CONF_FILE.name).read_text() == CONF_FILE.read_text()
    finally:
        cluster.down()


@pytest.mark.slow
def test_dev_up_from_a_checkout_the_server_cannot_enter_runs_elsewhere_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As root, with the checkout in a 0700 folder (a clone under /root or in mktemp -d), `dev up` puts the
    servers in a folder the postgres OS user can reach and prints where and why."""
    import os

    from clinicdb.devcluster import bootstrap

    if os.geteuid() != 0:
        pytest.skip("only root runs servers as another OS user; a normal user's checkout is always reachable")
    private = Path(tempfile.mkdtemp(prefix="clinicdb-private-"))  # mode 0700, owned by root
    shared = Path(tempfile.mkdtemp(prefix="clinicdb-shared-"))
    shared.chmod(0o755)
    monkeypatch.delenv("CLINICDB_DEV_DIR", raising=False)
    monkeypatch.setattr(bootstrap, "_checkout", lambda: private / "clone")
    monkeypatch.setattr(bootstrap, "SHARED_DEV_ROOT", shared)
    try:
        result = CliRunner().invoke(cli, ["dev", "up", "--no-migrate"])
        assert result.exit_code == 0, result.output
        chosen = bootstrap.dev_dir()
        assert chosen.parent == shared and chosen.name.startswith("clone-")
        assert f"servers under {chosen}" in result.output
        assert "is not reachable by the 'postgres' OS user" in result.output and "CLINICDB_DEV_DIR" in result.output
        status = CliRunner().invoke(cli, ["dev", "status", "--json"])
        assert status.exit_code == 0 and '"running": true' in status.output
    finally:
        CliRunner().invoke(cli, ["dev", "down"])
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)
