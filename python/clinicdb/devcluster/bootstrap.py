"""Turning a bare local cluster into a clinicdb database: migrations and logins.

Shared by ``clinicdb dev up`` and the test fixtures, so tests run against
exactly what developers run.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from clinicdb import schema
from clinicdb.devcluster.cluster import LocalCluster
from clinicdb.settings import env

# Login roles for the local cluster, one per group role an app or person
# uses. Trust auth on loopback means no passwords; this is a dev setup only.
DEV_LOGINS: dict[str, str] = {
    "clinicdb_app_user": "clinicdb_app",
    "clinicdb_readonly_user": "clinicdb_readonly",
    "clinicdb_auditor_user": "clinicdb_auditor",
}
APP_LOGIN = "clinicdb_app_user"


def dev_dir() -> Path:
    """Where the embedded servers live: ``CLINICDB_DEV_DIR`` or ``.clinicdb`` in the checkout."""
    configured = env("CLINICDB_DEV_DIR")
    if configured:
        return Path(configured)
    try:
        return schema.project_root() / ".clinicdb"
    except FileNotFoundError:
        return Path.cwd() / ".clinicdb"


def dev_cluster() -> LocalCluster:
    """The developer's embedded primary + one replica."""
    return LocalCluster(dev_dir(), database="clinicdb", replicas=1)


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
    admin = cluster.url("primary")
    applied = schema.apply(admin)
    ensure_logins(admin)
    return applied
