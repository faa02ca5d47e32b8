"""A real PostgreSQL primary with streaming replicas under one project folder.

Used by ``clinicdb dev``, the test fixtures and the benchmarks, so all three
run against the same kind of servers. Nothing here is mocked: ``up`` runs
initdb, pg_ctl and pg_basebackup from the machine's binaries.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from clinicdb.devcluster.binaries import (
    check_reachable,
    chown_for_server,
    find_bindir,
    reap,
    run_as_server,
)

CONF_FILE = Path(__file__).with_name("clinicdb.conf")
SUPERUSER = "postgres"
STATE_FILE = "cluster.json"


class ClusterError(RuntimeError):
    """A local server could not be started, stopped or reached."""


@dataclass
class ServerStatus:
    """One server of the local cluster as seen right now."""

    name: str
    role: str
    port: int
    running: bool
    pid: int | None
    in_recovery: bool | None = None
    lag_bytes: int | None = None


@dataclass
class ClusterStatus:
    """Every server of the local cluster."""

    root: str
    servers: list[ServerStatus] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"root": self.root, "servers": [asdict(s) for s in self.servers]}


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    """True when PostgreSQL could listen on port: probed with SO_REUSEADDR as the server binds, so a port
    left in TIME_WAIT by a just-stopped server counts as free (a restart keeps its URL); a live listener does not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def stop_pid(pid: int, sig: signal.Signals, *, timeout: float, also: Callable[[], bool] = lambda: True) -> bool:
    """Send ``sig`` to ``pid`` and wait until it has exited and ``also()`` holds; False when ``timeout`` passed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pid)
        if not _alive(pid) and also():
            return True
        time.sleep(0.05)
    return False


class ServersUnder:
    """Servers kept under ``root``, with their ports (and whatever else) in a JSON state file there."""

    state_file = STATE_FILE

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self._state: dict[str, Any] = self._load_state()

    def port(self, name: str) -> int:
        """The server's port: the one recorded, or a free one recorded now."""
        ports: dict[str, int] = self._state.setdefault("ports", {})
        if name not in ports:
            ports[name] = free_port()
            self._save_state()
        return ports[name]

    def _load_state(self) -> dict[str, Any]:
        path = self.root / self.state_file
        if path.exists():
            loaded: dict[str, Any] = json.loads(path.read_text())
            return loaded
        return {}

    def _save_state(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / self.state_file).write_text(json.dumps(self._state, indent=2) + "\n")


class LocalCluster(ServersUnder):
    """A primary and ``replicas`` hot standbys kept under ``root``.

    ``up`` is idempotent: servers already running are left alone, stopped ones
    are started on their recorded ports, missing ones are created. ``down``
    stops each server by the PID in its own ``postmaster.pid``.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        database: str = "clinicdb",
        replicas: int = 1,
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(root)
        self.database = database
        self.replica_count = replicas
        self.settings = dict(settings or {})

    # -- layout -----------------------------------------------------------------
    @property
    def server_names(self) -> list[str]:
        return ["primary"] + [f"replica{i}" for i in range(1, self.replica_count + 1)]

    def data_dir(self, name: str) -> Path:
        return self.root / name

    def log_file(self, name: str) -> Path:
        return self.root / "log" / f"{name}.log"

    def url(self, name: str = "primary", *, user: str = SUPERUSER, database: str | None = None) -> str:
        """A libpq URL for one server; trust auth on loopback means no password."""
        db = database or self.database
        return f"postgresql://{user}@127.0.0.1:{self.port(name)}/{db}"

    def replica_urls(self, *, user: str = SUPERUSER, database: str | None = None) -> list[str]:
        return [self.url(n, user=user, database=database) for n in self.server_names[1:]]

    # -- lifecycle --------------------------------------------------------------
    def up(self) -> ClusterStatus:
        """Create and start whatever is missing; return the status of every server."""
        bindir = find_bindir()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log").mkdir(exist_ok=True)
        (self.root / "run").mkdir(exist_ok=True)
        chown_for_server(self.root)
        check_reachable(self.root)
        if not (self.data_dir("primary") / "PG_VERSION").exists():
            self._initdb(bindir)
        self._start(bindir, "primary")
        self._ensure_database()
        for name in self.server_names[1:]:
            if not (self.data_dir(name) / "PG_VERSION").exists():
                self._basebackup(bindir, name)
            self._start(bindir, name)
        return self.status()

    def down(self) -> list[str]:
        """Stop every running server by its own PID (replicas first); return what was stopped."""
        stopped = []
        for name in reversed(self.server_names):
            if self.stop_server(name):
                stopped.append(name)
        return stopped

    def stop_server(self, name: str, *, timeout: float = 60) -> bool:
        """Fast-shutdown one server; False when it was not running."""
        pid = self.pid(name)
        if pid is None:
            return False
        if not stop_pid(pid, signal.SIGINT, timeout=timeout):
            raise ClusterError(f"{name} (pid {pid}) did not stop within {timeout:.0f}s")
        return True

    def start_server(self, name: str) -> None:
        """Start one existing server (used by failover tests)."""
        self._start(find_bindir(), name)

    def pid(self, name: str) -> int | None:
        """The postmaster PID from the data directory, if that process is alive."""
        pidfile = self.data_dir(name) / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        return pid if _alive(pid) else None

    def status(self) -> ClusterStatus:
        """Each server's port, PID, recovery state and replay lag behind the primary."""
        result = ClusterStatus(root=str(self.root))
        primary_lsn: str | None = None
        for name in self.server_names:
            running = self.pid(name) is not None
            status = ServerStatus(
                name=name,
                role="primary" if name == "primary" else "replica",
                port=self.port(name),
                running=running,
                pid=self.pid(name),
            )
            if running:
                with (
                    contextlib.suppress(psycopg.Error),
                    psycopg.connect(self.url(name, database="postgres"), connect_timeout=3) as conn,
                ):
                    row = conn.execute(
                        "select pg_is_in_recovery(), case when pg_is_in_recovery()"
                        " then pg_last_wal_replay_lsn()::text else pg_current_wal_lsn()::text end"
                    ).fetchone()
                    assert row is not None
                    status.in_recovery = bool(row[0])
                    if name == "primary":
                        primary_lsn = row[1]
                        status.lag_bytes = 0
                    elif primary_lsn is not None and row[1] is not None:
                        lag = conn.execute(
                            "select greatest(pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn), 0)::bigint",
                            (primary_lsn, row[1]),
                        ).fetchone()
                        status.lag_bytes = int(lag[0]) if lag else None
            result.servers.append(status)
        return result

    # -- steps ------------------------------------------------------------------
    def _initdb(self, bindir: Path) -> None:
        data = self.data_dir("primary")
        run_as_server(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )
        extra = "".join(f"{key} = '{value}'\n" for key, value in self.settings.items())
        # A copy inside the data directory: the server never reads the checkout
        # or site-packages, which its OS user may not be able to enter.
        shutil.copyfile(CONF_FILE, data / CONF_FILE.name)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# added by clinicdb dev (settings copied in)\ninclude '{CONF_FILE.name}'\n{extra}")
        chown_for_server(data)

    def _localize_settings(self, name: str) -> None:
        """Servers made by earlier versions include the settings file by its absolute path in the checkout:
        copy it into the data directory and include the copy instead."""
        conf = self.data_dir(name) / "postgresql.conf"
        text = conf.read_text()
        absolute = [line for line in text.splitlines() if line.startswith("include '/") and CONF_FILE.name in line]
        if not absolute:
            return
        shutil.copyfile(CONF_FILE, self.data_dir(name) / CONF_FILE.name)
        for line in absolute:
            text = text.replace(line, f"include '{CONF_FILE.name}'")
        conf.write_text(text)
        chown_for_server(self.data_dir(name))

    def _basebackup(self, bindir: Path, name: str) -> None:
        slot = f"clinicdb_{name}"
        with psycopg.connect(self.url("primary", database="postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_replication_slots where slot_name = %s", (slot,)).fetchone()
        argv = [
            str(bindir / "pg_basebackup"),
            "-h", "127.0.0.1",
            "-p", str(self.port("primary")),
            "-U", SUPERUSER,
            "-D", str(self.data_dir(name)),
            "-R",
            "-X", "stream",
            "-c", "fast",
            "-S", slot,
        ]  # fmt: skip
        if not exists:
            argv.append("-C")
        run_as_server(argv, timeout=600)
        with (self.data_dir(name) / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_slot_name = '{slot}'\n")

    def _start(self, bindir: Path, name: str) -> None:
        if self.pid(name) is not None:
            return
        self._localize_settings(name)
        port = self.port(name)
        if not _port_free(port):
            self._state["ports"][name] = port = free_port()
            self._save_state()
        options = f"-p {port} -k {self.root / 'run'} -c listen_addresses=127.0.0.1"
        if name != "primary":
            options += f" -c cluster_name=clinicdb_{name}"
        try:
            run_as_server(
                [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "120",
                    "-D",
                    str(self.data_dir(name)),
                    "-l",
                    str(self.log_file(name)),
                    "-o",
                    options,
                ],
                timeout=180,
            )
        except subprocess.CalledProcessError as exc:
            raise ClusterError(f"{name} did not start ({exc.stderr}); see {self.log_file(name)}") from exc

    def _ensure_database(self) -> None:
        with psycopg.connect(self.url("primary", database="postgres"), autocommit=True) as conn:
            found = conn.execute("select 1 from pg_database where datname = %s", (self.database,)).fetchone()
            if not found:
                conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(self.database)))

    def wait_for_replay(self, timeout: float = 30) -> None:
        """Block until every replica has replayed the primary's current WAL position."""
        with psycopg.connect(self.url("primary", database="postgres"), autocommit=True) as conn:
            # The insert position, not the write position: with synchronous_commit=off (the test servers)
            # a commit can sit in WAL buffers, behind pg_current_wal_lsn(), for a while.
            row = conn.execute("select pg_current_wal_insert_lsn()::text").fetchone()
            assert row is not None
            target = row[0]
        for name in self.server_names[1:]:
            deadline = time.monotonic() + timeout
            with psycopg.connect(self.url(name, database="postgres"), autocommit=True) as conn:
                while True:
                    done = conn.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
                    if done and done[0]:
                        break
                    if time.monotonic() > deadline:
                        raise ClusterError(f"{name} did not replay to {target} within {timeout:.0f}s")
                    time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
