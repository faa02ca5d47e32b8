"""Turning a bare local cluster into a clinicdb database: migrations and logins.

Shared by ``clinicdb dev up`` and the test fixtures, so tests run against
exactly what developers run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from clinicdb import schema
from clinicdb.devcluster.binaries import SERVER_OS_USER, server_can_reach
from clinicdb.devcluster.cluster import LocalCluster
from clinicdb.devcluster.ha import HAFormation
from clinicdb.settings import env

# Login roles for the local cluster, one per group role an app or person
# uses. Trust auth on loopback means no passwords; this is a dev setup only.
DEV_LOGINS: dict[str, str] = {
    "clinicdb_app_user": "clinicdb_app",
    "clinicdb_readonly_user": "clinicdb_readonly",
    "clinicdb_auditor_user": "clinicdb_auditor",
}
APP_LOGIN = "clinicdb_app_user"


# Where root's dev servers go when the checkout is somewhere the server's OS
# user cannot enter (a clone under /root or in a 0700 mktemp -d folder).
SHARED_DEV_ROOT = Path("/var/lib/clinicdb")


def _checkout() -> Path | None:
    """The source checkout this package runs from (an editable install), if any."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "migrations" / "core").is_dir() else None


@dataclass(frozen=True)
class DevDir:
    """Where the embedded servers live, and why there when it is not the obvious place."""

    path: Path
    note: str | None = None


def dev_dir_choice() -> DevDir:
    """``CLINICDB_DEV_DIR``; else ``.clinicdb`` in the checkout (or the current folder for an installed wheel);
    else, when the server's OS user cannot reach that (root's 0700 home), a folder under /var/lib/clinicdb."""
    configured = env("CLINICDB_DEV_DIR")
    if configured:
        return DevDir(Path(configured))
    base = _checkout() or Path.cwd()
    preferred = base / ".clinicdb"
    if server_can_reach(preferred):
        return DevDir(preferred)
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:10]
    fallback = SHARED_DEV_ROOT / f"{base.name or 'root'}-{digest}"
    note = (
        f"{base} is not reachable by the '{SERVER_OS_USER}' OS user that runs PostgreSQL, so the servers live in "
        f"{fallback} (set CLINICDB_DEV_DIR to choose another folder)"
    )
    return DevDir(fallback, note)


def dev_dir() -> Path:
    """Where the embedded servers live (see ``dev_dir_choice``)."""
    return dev_dir_choice().path


def dev_cluster() -> LocalCluster:
    """The developer's embedded primary + one replica."""
    return LocalCluster(dev_dir(), database="clinicdb", replicas=1)


def dev_formation() -> HAFormation:
    """The developer's pg_auto_failover formation (``clinicdb dev up --ha``), in the ``ha`` folder of the dev dir."""
    return HAFormation(dev_dir() / "ha", database="clinicdb")


def ensure_logins(admin_url: str) -> None:
    """Create the dev login roles and their group memberships (idempotent)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for login, group in DEV_LOGINS.items():
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (login,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("create role {} login").format(sql.Identifier(login)))
            conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(group), sql.Identifier(login)))


def bootstrap(cluster: LocalCluster) -> list[str]:
    """Migrate the cluster's database and create the dev logins; return migrations applied."""
    return bootstrap_url(cluster.url("primary"))


def bootstrap_url(admin_url: str) -> list[str]:
    """Migrate the database at ``admin_url`` (a multi-host URL is fine) with the reference schema and create
    the dev logins; return migrations applied."""
    applied = schema.apply(admin_url, reference=True)
    ensure_logins(admin_url)
    return applied
