"""A pg_auto_failover formation behind ``clinicdb dev up --ha``: a monitor and two data nodes.

Everything lives under ``<dev dir>/ha/``: the three data directories, their
logs, pg_autoctl's own configuration and state (its XDG folders point there),
and ``ha.json`` with the ports and the keepers' PIDs. Each keeper
(``pg_autoctl run``) runs in the background in a process group of its own, as
the ``postgres`` OS user when we are root; the PostgreSQL server it supervises
is in that group too, which is what lets the soak kill "the whole node".

The two data nodes replicate synchronously: pg_auto_failover keeps
``number_sync_standbys = 0`` for two nodes, which with the standby's
replication quorum on still sets ``synchronous_standby_names = 'ANY 1 (...)'``
while the standby is healthy (a commit is acknowledged once the standby has it)
and clears it when the standby is lost (the primary then runs alone: see
docs/ha.md). The tuning below is explained setting by setting in docs/ha.md.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from clinicdb._url import replace_url
from clinicdb.devcluster.binaries import (
    check_reachable,
    chown_for_server,
    installed_dirs,
    reap,
    run_as_server,
    spawn_as_server,
)
from clinicdb.devcluster.cluster import (
    CONF_FILE,
    SUPERUSER,
    ClusterError,
    ServersUnder,
    _alive,
    _port_free,
    stop_pid,
)

HA_PACKAGES = ("pg-auto-failover-cli", "postgresql-15-auto-failover")
STATE_FILE = "ha.json"
MONITOR = "monitor"
NODES = ("node1", "node2")
FORMATION = "default"
MONITOR_DATABASE = "pg_auto_failover"

Say = Callable[[str], None]

# The failover tuning; docs/ha.md explains each value and what it trades away.
# The monitor's pg_auto_failover settings, in <monitor>/clinicdb-ha.conf (reloadable).
MONITOR_SETTINGS: dict[str, str] = {
    "pgautofailover.health_check_period": "1000",  # ms between the monitor's checks of each node (5000)
    "pgautofailover.health_check_timeout": "1000",  # ms connect timeout of one check (5000)
    "pgautofailover.health_check_max_retries": "2",  # failed checks in a row before a node is bad (2)
    "pgautofailover.health_check_retry_delay": "500",  # ms between those retries (2000)
    "pgautofailover.node_considered_unhealthy_timeout": "5000",  # ms without a keeper report: unhealthy (20000)
    "pgautofailover.primary_demote_timeout": "10000",  # ms a lost primary gets to demote itself (30000)
}
MONITOR_CONF = "clinicdb-ha.conf"
# Each keeper's pg_autoctl.cfg: a primary that reaches neither the monitor nor its standby for this many seconds
# stops its server; it stays below primary_demote_timeout so that it has stopped before the other node is promoted.
KEEPER_SETTINGS: dict[str, str] = {
    "timeout.network_partition_timeout": "5",  # (20)
}
# libpq settings every URL of `dev env --ha` carries, with pg_autoctl's target_session_attrs=read-write.
CLIENT_PARAMS: dict[str, str] = {
    "connect_timeout": "2",  # give up on an unanswering host after 2 s and try the next
    "keepalives": "1",
    "keepalives_idle": "5",  # a silent peer (host gone, no RST) is probed after 5 s,
    "keepalives_interval": "1",  # every second,
    "keepalives_count": "3",  # and dropped after 3 unanswered probes
    "tcp_user_timeout": "5000",  # ms unacknowledged data may wait before the connection is dropped
}


class HAPackagesMissing(ClusterError):
    """pg_auto_failover (pg_autoctl and the monitor's extension) is not installed."""


@dataclass
class HANode:
    """One member of the formation as seen right now."""

    name: str
    port: int
    running: bool
    pid: int | None
    reported_state: str | None = None
    assigned_state: str | None = None
    sync_state: str | None = None
    lag_bytes: int | None = None
    healthy: bool | None = None
    pg_running: bool | None = None
    reported_at: float | None = None


@dataclass
class HAStatus:
    """The monitor and both data nodes; ``primary`` names the node that takes writes (None when none does)."""

    root: str
    primary: str | None = None
    nodes: list[HANode] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"root": self.root, "primary": self.primary, "nodes": [asdict(n) for n in self.nodes]}

    def node(self, name: str) -> HANode:
        return next(n for n in self.nodes if n.name == name)

    @property
    def settled(self) -> bool:
        """A primary and a synchronous standby, each in the state the monitor assigned it."""
        data = [n for n in self.nodes if n.name != MONITOR]
        states = sorted((n.reported_state or "", n.assigned_state or "") for n in data)
        synchronous = any(n.sync_state in ("sync", "quorum") for n in data)
        return states == [("primary", "primary"), ("secondary", "secondary")] and synchronous


def find_ha_bindir() -> Path:
    """The PostgreSQL bin directory whose major version has the pgautofailover extension installed, with
    pg_autoctl on PATH; else ``HAPackagesMissing`` naming the Debian packages to install."""
    missing = [] if shutil.which("pg_autoctl") else [HA_PACKAGES[0]]
    configured = os.environ.get("CLINICDB_PG_BINDIR")
    candidates = [Path(configured)] if configured else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    for bindir in candidates:
        dirs = installed_dirs(bindir)
        control = dirs[0] / "extension" / "pgautofailover.control" if dirs else None
        if (bindir / "pg_ctl").is_file() and control is not None and control.is_file():
            if missing:
                break
            return bindir
    else:
        missing.append(HA_PACKAGES[1])
    raise HAPackagesMissing(
        f"clinicdb dev up --ha needs pg_auto_failover: apt-get install {' '.join(missing)}"
        " (or run make system-deps as root)"
    )


def _children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def with_params(url: str, **params: str) -> str:
    """``url`` with these query parameters set (replacing any of the same name), the others kept."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


class HAFormation(ServersUnder):
    """A pg_auto_failover monitor and two data nodes under ``root`` (``<dev dir>/ha``).

    ``up`` is idempotent: keepers already running are left alone, stopped ones
    are started again on their recorded ports, missing nodes are created.
    """

    names = (MONITOR, *NODES)
    state_file = STATE_FILE

    def __init__(self, root: Path | str, *, database: str = "clinicdb") -> None:
        super().__init__(root)
        self.database = database
        self._uri: str | None = None

    # -- layout -----------------------------------------------------------------
    def data_dir(self, name: str) -> Path:
        return self.root / name

    def log_file(self, name: str) -> Path:
        return self.root / "log" / f"{name}.log"

    def keeper_pid(self, name: str) -> int | None:
        """The PID (and process group) of the node's ``pg_autoctl run``, when it is alive."""
        self._state["pids"] = self._load_state().get("pids", {})  # another process may have started it
        pid = self._state["pids"].get(name)
        if pid is None:
            return None
        reap(pid)
        return pid if _alive(pid) else None

    def postmaster_pid(self, name: str) -> int | None:
        """The PID of the node's PostgreSQL server, from its own ``postmaster.pid``, when it is alive."""
        try:
            pid = int((self.data_dir(name) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def created(self, name: str) -> bool:
        return (self.data_dir(name) / "PG_VERSION").exists() and self._config_file(name).exists()

    def monitor_url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port(MONITOR)}/{MONITOR_DATABASE}"

    def node_url(self, name: str, *, database: str | None = None) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port(name)}/{database or self.database}"

    # -- pg_autoctl -------------------------------------------------------------
    def _xdg(self) -> dict[str, str]:
        """pg_autoctl keeps its configuration and state in the XDG folders: these keep them under ``root``."""
        return {
            "XDG_CONFIG_HOME": str(self.root / "xdg" / "config"),
            "XDG_DATA_HOME": str(self.root / "xdg" / "data"),
            "XDG_RUNTIME_DIR": str(self.root / "xdg" / "run"),
        }

    def _env(self, bindir: Path) -> dict[str, str]:
        env = {
            "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "PG_CONFIG": str(bindir / "pg_config"),
            **self._xdg(),
        }
        return env

    def _config_file(self, name: str) -> Path:
        relative = str(self.data_dir(name)).lstrip("/")
        return self.root / "xdg" / "config" / "pg_autoctl" / relative / "pg_autoctl.cfg"

    def autoctl(self, *args: str, bindir: Path | None = None, timeout: float = 120) -> str:
        """Run ``pg_autoctl ARGS`` in the foreground (as the server's OS user); return its standard output."""
        env = self._env(bindir or find_ha_bindir())
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), "pg_autoctl", *args]
        try:
            return run_as_server(argv, timeout=timeout).stdout
        except Exception as exc:
            raise ClusterError(f"pg_autoctl {args[0]} {args[1] if len(args) > 1 else ''} failed: {exc}") from exc

    def _spawn_keeper(self, bindir: Path, name: str, argv: list[str]) -> None:
        pid = spawn_as_server(["pg_autoctl", *argv], log=self.log_file(name), env=self._env(bindir))
        self._state.setdefault("pids", {})[name] = pid
        self._save_state()

    # -- lifecycle --------------------------------------------------------------
    def up(self, say: Say = lambda _: None, *, timeout: float = 300) -> HAStatus:
        """Create and start whatever is missing, wait for a primary and a synchronous standby; return the status."""
        bindir = find_ha_bindir()
        for folder in (self.root, self.root / "log", self.root / "xdg" / "run"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.root / "xdg" / "run").chmod(0o700)
        chown_for_server(self.root)
        check_reachable(self.root)
        self._start_monitor(bindir, say)
        first, second = self._node_order()
        # The monitor must hear from the first node's keeper that its server runs before the second node comes
        # back: its reports from before a `down` are stale, and a keeper's first report (server not started
        # yet) reads as a failure, so the monitor would promote the second node on every `up` after a `down`.
        since = time.time()

        def first_runs(status: HAStatus) -> bool:
            node = status.node(first)
            fresh = node.reported_at is not None and node.reported_at > since
            return fresh and status.primary == first and node.pg_running is True

        self._start_node(bindir, first, say)
        self.wait(first_runs, f"{first} primary with its server running", timeout=timeout, say=say)
        if self._install_settings(first):
            say(f"restarted {first}'s server with clinicdb.conf")
            since = time.time()
            self.wait(first_runs, f"{first} primary with its server running", timeout=timeout, say=say)
        self._start_node(bindir, second, say)
        status = self.wait(lambda s: s.settled, "a primary and a synchronous standby", timeout=timeout, say=say)
        self.keeper_settings(second, bindir)  # a node made just now has its pg_autoctl.cfg only from here on
        return status

    def _node_order(self) -> tuple[str, str]:
        """The node to start first: one that exists (the last primary when both do), then the other."""
        last = self._state.get("last_primary")
        if last in NODES and self.created(last):
            return last, next(n for n in NODES if n != last)
        if self.created(NODES[1]) and not self.created(NODES[0]):
            return NODES[1], NODES[0]
        return NODES[0], NODES[1]

    def _free_recorded_port(self, name: str) -> int:
        port = self.port(name)
        if self.keeper_pid(name) is None and self.postmaster_pid(name) is None and not _port_free(port):
            raise ClusterError(
                f"port {port} of {name} is taken by another program: stop it, or remove {self.root} to start afresh"
            )
        return port

    def _create_args(self, kind: str, name: str, port: int, bindir: Path) -> list[str]:
        """``pg_autoctl create KIND`` for one member: loopback only, trust on loopback, no TLS (docs/ha.md)."""
        return [
            "create", kind,
            "--pgdata", str(self.data_dir(name)),
            "--pgport", str(port),
            "--pgctl", str(bindir / "pg_ctl"),
            "--hostname", "127.0.0.1",
            "--listen", "127.0.0.1",
            "--auth", "trust",
            "--no-ssl",
        ]  # fmt: skip

    def _monitor_settings(self) -> bool:
        """Write the monitor's failover settings into its data directory; True when they changed."""
        data = self.data_dir(MONITOR)
        text = "# written by clinicdb dev up --ha: the failover tuning of docs/ha.md\n"
        text += "".join(f"{key} = {value}\n" for key, value in MONITOR_SETTINGS.items())
        target = data / MONITOR_CONF
        if target.exists() and target.read_text() == text:
            return False
        target.write_text(text)
        conf = data / "postgresql.conf"
        if f"include '{MONITOR_CONF}'" not in conf.read_text():
            with conf.open("a") as out:
                out.write(f"include '{MONITOR_CONF}'\n")
        chown_for_server(data)
        return True

    def _start_monitor(self, bindir: Path, say: Say) -> None:
        if self.keeper_pid(MONITOR) is not None:
            if self._monitor_settings():  # reloadable: a running monitor takes new tuning without a restart
                with psycopg.connect(self.monitor_url(), autocommit=True, connect_timeout=5) as conn:
                    conn.execute("select pg_reload_conf()")
            return
        port = self._free_recorded_port(MONITOR)
        if not self.created(MONITOR):
            say(f"creating the pg_auto_failover monitor on port {port}")
            self.autoctl(*self._create_args("monitor", MONITOR, port, bindir), bindir=bindir, timeout=300)
        self._install_settings(MONITOR, restart=False)  # the monitor's server is stopped here
        self._monitor_settings()
        say(f"starting the monitor's keeper ({self.log_file(MONITOR)})")
        self._spawn_keeper(bindir, MONITOR, ["run", "--pgdata", str(self.data_dir(MONITOR))])
        self._wait_connectable(self.monitor_url(), MONITOR)

    def keeper_settings(self, name: str, bindir: Path) -> None:
        """Set KEEPER_SETTINGS in the node's pg_autoctl.cfg where they differ; a running keeper rereads it."""
        config = configparser.ConfigParser()
        config.read(self._config_file(name))
        changed = False
        for key, value in KEEPER_SETTINGS.items():
            section, option = key.split(".", 1)
            if config.get(section, option, fallback=None) != value:
                self.autoctl("config", "set", "--pgdata", str(self.data_dir(name)), key, value, bindir=bindir)
                changed = True
        pid = self.keeper_pid(name)
        if changed and pid is not None:
            os.kill(pid, signal.SIGHUP)

    def _start_node(self, bindir: Path, name: str, say: Say) -> None:
        if self.keeper_pid(name) is not None:
            if self.created(name):
                self.keeper_settings(name, bindir)
            return
        port = self._free_recorded_port(name)
        if self.created(name):
            self.keeper_settings(name, bindir)
            say(f"starting {name}'s keeper on port {port} ({self.log_file(name)})")
            self._spawn_keeper(bindir, name, ["run", "--pgdata", str(self.data_dir(name))])
            return
        say(f"creating {name} on port {port} ({self.log_file(name)})")
        create = [
            *self._create_args("postgres", name, port, bindir),
            "--name", name,
            "--dbname", self.database,
            "--monitor", f"postgres://autoctl_node@127.0.0.1:{self.port(MONITOR)}/{MONITOR_DATABASE}",
            "--run",
        ]  # fmt: skip
        # The first node initdb's its own data directory (up() then adds clinicdb.conf); a later one is a
        # pg_basebackup of the primary's, which carries those settings (the include and its file are copied).
        self._spawn_keeper(bindir, name, create)

    def _install_settings(self, name: str, *, restart: bool = True) -> bool:
        """clinicdb.conf copied into the node's directory and included last (it wins over pg_autoctl's own
        file), a running server restarted to read it; False when it was there already."""
        data = self.data_dir(name)
        conf = data / "postgresql.conf"
        text = conf.read_text()
        if f"include '{CONF_FILE.name}'" in text:
            return False
        shutil.copyfile(CONF_FILE, data / CONF_FILE.name)
        text += f"\n# added by clinicdb dev up --ha (settings copied in)\ninclude '{CONF_FILE.name}'\n"
        conf.write_text(text)
        chown_for_server(data)
        if restart:
            self._restart_postgres(name)
        return True

    def _restart_postgres(self, name: str) -> None:
        """Make a running node read settings that need a restart: stop its server; its keeper starts it again."""
        pid = self.postmaster_pid(name)
        if pid is not None:
            stop_pid(pid, signal.SIGINT, timeout=60)

    def _wait_connectable(self, url: str, name: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise ClusterError(f"{name} did not accept connections within {timeout:.0f}s") from None
                time.sleep(0.2)

    def nudge_checkpoint(self) -> None:
        """Finish the primary's pending checkpoint now. pg_autoctl's pg_basebackup (a new or rebuilt standby)
        asks for a spread checkpoint, minutes long on an idle server; an immediate CHECKPOINT completes it."""
        recorded = self._state.get("last_primary")  # after a failover the primary is another node: try each
        for name in dict.fromkeys([recorded, *NODES] if recorded else NODES):
            if self.postmaster_pid(name) is None:
                continue
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(self.node_url(name, database="postgres"), autocommit=True, connect_timeout=2) as conn,
            ):
                row = conn.execute("select pg_is_in_recovery()").fetchone()
                if row is not None and row[0] is False:
                    conn.execute("checkpoint")

    def wait(
        self, ready: Callable[[HAStatus], bool], what: str, *, timeout: float = 300, say: Say = lambda _: None
    ) -> HAStatus:
        """Poll the formation until ``ready(status)``; print the node states every few seconds meanwhile."""
        deadline = time.monotonic() + timeout
        shown = ""
        last_shown = 0.0
        while True:
            status = self.status()
            if ready(status):
                return status
            summary = ", ".join(
                f"{n.name} {n.reported_state or 'down'}->{n.assigned_state or '?'}"
                for n in status.nodes
                if n.name != MONITOR
            )
            if summary != shown or time.monotonic() - last_shown > 10:
                say(f"waiting for {what}: {summary}")
                shown, last_shown = summary, time.monotonic()
            if time.monotonic() > deadline:
                raise ClusterError(f"the formation did not reach {what} within {timeout:.0f}s ({summary})")
            if any(n.reported_state in ("wait_standby", "catchingup") for n in status.nodes):
                self.nudge_checkpoint()
            time.sleep(0.5)

    def down(self) -> list[str]:
        """Stop the standby's keeper, then the primary's, then the monitor's, each by its PID (SIGTERM: the keeper
        stops its server first); return what was stopped."""
        order = [n for n in NODES if n != self._state.get("last_primary")]
        order += [n for n in NODES if n not in order] + [MONITOR]
        stopped = []
        for name in order:
            if self.stop_keeper(name):
                stopped.append(name)
        return stopped

    def stop_keeper(self, name: str, *, timeout: float = 60) -> bool:
        """Stop one keeper and its server by the keeper's PID; False when it was not running."""
        pid = self.keeper_pid(name)
        if pid is None:
            return False
        if not stop_pid(pid, signal.SIGTERM, timeout=timeout, also=lambda: self.postmaster_pid(name) is None):
            raise ClusterError(f"{name}'s keeper (pid {pid}) did not stop within {timeout:.0f}s")
        return True

    # -- faults (the soak) --------------------------------------------------------
    def kill_postmaster(self, name: str) -> int:
        """SIGKILL the node's PostgreSQL server (its keeper stays); return the PID killed."""
        pid = self.postmaster_pid(name)
        if pid is None:
            raise ClusterError(f"{name} has no running server to kill")
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_node(self, name: str) -> None:
        """SIGKILL everything of the node at once, as if its machine died: the keeper's process group (keeper and
        postmaster) and the server's children (each backend leads a process group of its own)."""
        pid = self.keeper_pid(name)
        postmaster = self.postmaster_pid(name)
        victims = _children(postmaster) if postmaster is not None else []
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for victim in [p for p in (postmaster, *victims) if p is not None]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (self.keeper_pid(name) or self.postmaster_pid(name)) and time.monotonic() < deadline:
            time.sleep(0.05)

    def start_keeper(self, name: str) -> None:
        """Start a stopped (or killed) node's keeper again; it rejoins the formation by itself."""
        self._start_node(find_ha_bindir(), name, lambda _: None)

    # -- reading the formation --------------------------------------------------
    def status(self) -> HAStatus:
        """The monitor's view of each node, plus sync state and replay lag from the primary's pg_stat_replication."""
        result = HAStatus(root=str(self.root))
        monitor = HANode(MONITOR, self.port(MONITOR), self.keeper_pid(MONITOR) is not None, self.keeper_pid(MONITOR))
        result.nodes.append(monitor)
        rows: dict[str, tuple[Any, ...]] = {}
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.monitor_url(), autocommit=True, connect_timeout=2) as conn,
        ):
            for row in conn.execute(
                "select nodename, nodeid, reportedstate::text, goalstate::text, health, reportedpgisrunning,"
                " extract(epoch from reporttime)::float8 from pgautofailover.node"
                " where formationid = %s",
                (FORMATION,),
            ):
                rows[row[0]] = row
        for name in NODES:
            pid = self.keeper_pid(name)
            node = HANode(name, self.port(name), pid is not None, pid)
            if name in rows:
                node.reported_state, node.assigned_state = rows[name][2], rows[name][3]
                node.healthy = {1: True, 0: False}.get(rows[name][4])  # -1: not checked yet
                node.pg_running, node.reported_at = rows[name][5], rows[name][6]
            result.nodes.append(node)
        primaries = [n for n in result.nodes if n.reported_state in ("primary", "wait_primary", "single")]
        if len(primaries) == 1 and primaries[0].assigned_state == primaries[0].reported_state:
            result.primary = primaries[0].name
            self._note_primary(result.primary)
            self._replication(result, {name: int(row[1]) for name, row in rows.items()})
        return result

    def _note_primary(self, name: str) -> None:
        if self._state.get("last_primary") != name:
            self._state["last_primary"] = name
            self._save_state()

    def _replication(self, status: HAStatus, ids: dict[str, int]) -> None:
        assert status.primary is not None
        primary = status.node(status.primary)
        primary.lag_bytes = 0
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(
                self.node_url(status.primary, database="postgres"), autocommit=True, connect_timeout=2
            ) as conn,
        ):
            found = {
                row[0]: (row[1], row[2])
                for row in conn.execute(
                    "select application_name, sync_state,"
                    " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint from pg_stat_replication"
                )
            }
            for node in status.nodes:
                if node.name in ids and node.name != status.primary:
                    sync = found.get(f"pgautofailover_standby_{ids[node.name]}")
                    if sync is not None:
                        node.sync_state, node.lag_bytes = sync[0], None if sync[1] is None else int(sync[1])

    def exists(self) -> bool:
        """True once ``up`` has created the monitor here."""
        return self.created(MONITOR)

    def uri(self) -> str:
        """The formation's multi-host URL as pg_autoctl publishes it (``target_session_attrs=read-write``)."""
        if self._uri is not None:
            return self._uri
        out = self.autoctl("show", "uri", "--formation", FORMATION, "--pgdata", str(self.data_dir(MONITOR)))
        line = out.strip().splitlines()[-1].strip() if out.strip() else ""
        if not line.startswith("postgres"):
            raise ClusterError(f"pg_autoctl show uri printed no URL: {out.strip()[:200]!r}")
        self._uri = line
        return line

    def primary_url(self, *, user: str = SUPERUSER) -> str:
        """The multi-host URL for writes, as ``user``, with the client timeouts of docs/ha.md."""
        return with_params(replace_url(self.uri(), user=user), **CLIENT_PARAMS)

    def replica_url(self, *, user: str = SUPERUSER) -> str:
        """The same hosts for reads: whichever node is a standby (``target_session_attrs=standby``)."""
        return with_params(self.primary_url(user=user), target_session_attrs="standby")
