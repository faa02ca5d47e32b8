"""Finding PostgreSQL's server binaries and running them as a non-root user."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

INSTALL_HINT = (
    "install them with 'apt-get install postgresql-15 postgresql-contrib', "
    "or put the directory holding initdb and pg_ctl on PATH"
)

# The account that owns data directories when we are started as root:
# PostgreSQL refuses to run as root.
SERVER_OS_USER = "postgres"


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found."""


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def _candidates() -> list[Path]:
    found: list[Path] = []
    env = os.environ.get("CLINICDB_PG_BINDIR")
    if env:
        # Asked for by name (make test PG_BINDIR=...): falling back to another
        # installation would run everything on a version nobody chose.
        if not _has_server(Path(env)):
            raise PostgresNotFound(
                f"CLINICDB_PG_BINDIR={env} holds no initdb, pg_ctl and postgres: point it at a PostgreSQL bin "
                "directory (pg_config --bindir prints one) or unset it"
            )
        found.append(Path(env))
    initdb = shutil.which("initdb")
    if initdb:
        found.append(Path(initdb).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            found.append(Path(out.stdout.strip()))
    # Debian/Ubuntu keep server binaries off PATH; prefer the newest major.
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    found.extend(versions)
    return found


def find_bindir() -> Path:
    """Return the directory with initdb, pg_ctl and postgres, or raise PostgresNotFound.

    Looks at ``CLINICDB_PG_BINDIR``, PATH, ``pg_config --bindir`` and
    ``/usr/lib/postgresql/*/bin``, in that order; a ``CLINICDB_PG_BINDIR``
    without the server binaries is an error, never skipped.
    """
    for bindir in _candidates():
        if _has_server(bindir):
            return bindir
    raise PostgresNotFound(f"no PostgreSQL server binaries (initdb, pg_ctl) found: {INSTALL_HINT}")


def installed_dirs(bindir: Path) -> tuple[Path, Path] | None:
    """(sharedir, pkglibdir) of the PostgreSQL in ``bindir``, from its ``pg_config``: where an extension's
    control file and library are installed; None when there is no pg_config to ask."""
    pg_config = bindir / "pg_config"
    if not pg_config.is_file():
        return None
    out = subprocess.run([str(pg_config), "--sharedir", "--pkglibdir"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return None
    sharedir, pkglibdir = (Path(line) for line in out.stdout.split())
    return sharedir, pkglibdir


def server_user() -> str | None:
    """The OS user to run servers as: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/false", SERVER_OS_USER],
            check=True,
        )
    return SERVER_OS_USER


def chown_for_server(path: Path) -> None:
    """Give the server's OS user ownership of path (no-op when not root)."""
    user = server_user()
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def run_as_server(
    argv: Sequence[str], *, check: bool = True, timeout: float | None = 120
) -> subprocess.CompletedProcess[str]:
    """Run a server binary, dropping from root to the server's OS user when needed."""
    user = server_user()
    full = list(argv) if user is None else ["runuser", "-u", user, "--", *argv]
    result = subprocess.run(full, capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {result.returncode}"
        raise subprocess.CalledProcessError(result.returncode, full, result.stdout, last)
    return result


# Processes started in the background by this process, kept so they are reaped (and not reported as
# still running when the interpreter collects them).
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


def spawn_as_server(argv: Sequence[str], *, log: Path, env: Mapping[str, str]) -> int:
    """Start a long-running server process in the background, as the server's OS user when we are root, in a
    session (and process group) of its own whose id is the returned PID; its output goes to ``log``."""
    user = server_user()
    uid = gid = None
    if user is not None:
        entry = pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
            user=uid,
            group=gid,
            extra_groups=None if uid is None else [],
        )
    if user is not None:
        chown_for_server(log)
    _SPAWNED[proc.pid] = proc
    return proc.pid


def reap(pid: int) -> None:
    """Collect the exit status of a process ``spawn_as_server`` started in this process, once it has exited."""
    proc = _SPAWNED.get(pid)
    if proc is not None and proc.poll() is not None:
        del _SPAWNED[pid]


def server_can_reach(path: Path) -> bool:
    """True when the server's OS user can enter ``path`` (or, if it does not exist yet, its nearest existing
    parent): every folder above must be searchable by that user. Always true when we are not root."""
    user = server_user()
    if user is None:
        return True
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    probe = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(existing)], check=False)
    return probe.returncode == 0


def check_reachable(path: Path) -> None:
    """Fail clearly when the server's OS user cannot enter ``path`` (a 0700 parent)."""
    user = server_user()
    if user is None:
        return
    probe = subprocess.run(["runuser", "-u", user, "--", "test", "-w", str(path)], check=False)
    if probe.returncode != 0:
        raise PermissionError(
            f"the '{user}' OS user that runs PostgreSQL cannot write {path}: "
            "choose a folder every user can traverse (set CLINICDB_DEV_DIR)"
        )
