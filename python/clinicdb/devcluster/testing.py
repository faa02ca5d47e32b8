"""Throwaway servers for tests and benchmarks, built with the ``dev up`` code.

``throwaway_servers()`` starts a fresh primary (and replicas) in a temporary
folder on free ports, migrates it and creates the dev logins; on exit it stops
every server by PID and removes the folder. With ``CLINICDB_TEST_DATABASE_URL``
it instead creates a fresh database on that existing server (no replicas).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from clinicdb import schema
from clinicdb._url import replace_url
from clinicdb.devcluster.binaries import chown_for_server
from clinicdb.devcluster.bootstrap import APP_LOGIN, DEV_LOGINS, ensure_logins
from clinicdb.devcluster.cluster import LocalCluster
from clinicdb.settings import env

# Durability is not what tests measure; these make servers start and write fast.
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass
class ServerSet:
    """URLs of a migrated test database: one superuser URL and per-login URLs."""

    admin_url: str
    cluster: LocalCluster | None = None
    replica_admin_urls: list[str] = field(default_factory=list)

    def login_url(self, login: str, *, replica: int | None = None) -> str:
        """The same database as ``login`` (a dev login such as clinicdb_app_user)."""
        base = self.admin_url if replica is None else self.replica_admin_urls[replica]
        return replace_url(base, user=login)

    @property
    def app_url(self) -> str:
        return self.login_url(APP_LOGIN)

    @property
    def app_replica_urls(self) -> list[str]:
        return [self.login_url(APP_LOGIN, replica=i) for i in range(len(self.replica_admin_urls))]


def _fresh_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return replace_url(server_url, database=name)


def docker_engine_answers() -> bool:
    """True when a Docker engine (not just the client) responds within a few seconds."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=10, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def _docker_server() -> Iterator[str]:
    """A PostgreSQL 15 container (testcontainers); yields its superuser URL."""
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:15-bookworm", driver=None) as container:
        yield replace_url(str(container.get_connection_url()).replace("postgresql+psycopg2", "postgresql"))


@contextlib.contextmanager
def scratch_database(
    server_url: str, prefix: str, *, migrate: bool = False, reference: bool = False, logins: bool = False
) -> Iterator[str]:
    """A new database on the server of ``server_url`` (a superuser URL), dropped on exit: empty, or migrated
    (core, plus the reference schema with ``reference``), with the dev logins when ``logins``."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = _fresh_database(server_url, name)
    try:
        if migrate or reference:
            schema.apply(url, reference=reference)
        if logins:
            ensure_logins(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@contextlib.contextmanager
def throwaway_servers(*, replicas: int = 1, database: str = "clinicdb") -> Iterator[ServerSet]:
    """A migrated database on servers that exist only inside the ``with`` block."""
    existing = env("CLINICDB_TEST_DATABASE_URL")
    if env("CLINICDB_TEST_DOCKER") == "1" and not existing:
        # Opt-in, and only where an engine answers: the servers below are the default.
        if not docker_engine_answers():
            raise RuntimeError("CLINICDB_TEST_DOCKER=1 but no Docker engine answers: unset it to use local servers")
        with _docker_server() as url:
            name = f"clinicdb_test_{uuid.uuid4().hex[:10]}"
            db_url = _fresh_database(url, name)
            schema.apply(db_url, reference=True)
            ensure_logins(db_url)
            yield ServerSet(admin_url=db_url)
        return
    if existing:
        name = f"clinicdb_test_{uuid.uuid4().hex[:10]}"
        url = _fresh_database(existing, name)
        schema.apply(url, reference=True)
        ensure_logins(url)
        try:
            yield ServerSet(admin_url=url)
        finally:
            with psycopg.connect(existing, autocommit=True) as conn:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        return

    root = tempfile.mkdtemp(prefix="clinicdb-test-")
    cluster = LocalCluster(root, database=database, replicas=replicas, settings=TEST_SETTINGS)
    try:
        chown_for_server(cluster.root)
        cluster.up()
        schema.apply(cluster.url("primary"), reference=True)
        ensure_logins(cluster.url("primary"))
        cluster.wait_for_replay()
        yield ServerSet(
            admin_url=cluster.url("primary"),
            cluster=cluster,
            replica_admin_urls=cluster.replica_urls(),
        )
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


__all__ = ["DEV_LOGINS", "TEST_SETTINGS", "ServerSet", "scratch_database", "throwaway_servers"]
