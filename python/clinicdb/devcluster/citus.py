"""Throwaway Citus clusters for ``make test-citus`` and the Citus benchmark.

A coordinator and ``workers`` workers, each a :class:`LocalCluster` with no
replica on a free loopback port, started with ``shared_preload_libraries =
citus``; the coordinator registers itself and the workers, then is migrated
with the Citus profile (:mod:`clinicdb.citus`). Citus itself is never built or
shipped here: :func:`citus_installed` only looks for the extension the
machine's PostgreSQL already has.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from clinicdb import citus
from clinicdb._url import replace_url
from clinicdb.devcluster.binaries import PostgresNotFound, chown_for_server, find_bindir, installed_dirs
from clinicdb.devcluster.bootstrap import APP_LOGIN, ensure_logins
from clinicdb.devcluster.cluster import LocalCluster
from clinicdb.devcluster.testing import TEST_SETTINGS

CITUS_SETTINGS = {**TEST_SETTINGS, "shared_preload_libraries": "citus", "max_connections": "100"}


def citus_installed() -> bool:
    """True when the PostgreSQL servers would start have the citus extension installed."""
    try:
        bindir = find_bindir()
    except PostgresNotFound:
        return False
    dirs = installed_dirs(bindir)
    if dirs is None:
        return False
    sharedir, pkglibdir = dirs
    return (sharedir / "extension" / "citus.control").is_file() and (pkglibdir / "citus.so").is_file()


@dataclass
class CitusSet:
    """A migrated Citus coordinator and its workers (superuser URLs)."""

    admin_url: str
    worker_admin_urls: list[str] = field(default_factory=list)
    nodes: list[LocalCluster] = field(default_factory=list)

    def login_url(self, login: str) -> str:
        """The coordinator's database as ``login``."""
        return replace_url(self.admin_url, user=login)

    @property
    def app_url(self) -> str:
        return self.login_url(APP_LOGIN)

    def log_files(self) -> list[Path]:
        """Every node's server log."""
        return [node.log_file("primary") for node in self.nodes]


def start_nodes(root: Path, *, workers: int = 2, settings: dict[str, str] | None = None) -> list[LocalCluster]:
    """Start a coordinator and ``workers`` workers under ``root``, with citus created and the workers added."""
    conf = {**CITUS_SETTINGS, **(settings or {})}
    nodes = [
        LocalCluster(root / name, replicas=0, settings=conf)
        for name in ["coordinator"] + [f"worker{i}" for i in range(1, workers + 1)]
    ]
    for node in nodes:
        node.up()
    add_citus(nodes)
    return nodes


def add_citus(nodes: list[LocalCluster]) -> None:
    """The DBA's steps before ``clinicdb migrate``: the extension on every node, then the coordinator (the first
    node) and the workers registered."""
    for node in nodes:
        with psycopg.connect(node.url(), autocommit=True) as conn:
            conn.execute("create extension if not exists citus")
    with psycopg.connect(nodes[0].url(), autocommit=True) as conn:
        conn.execute("select citus_set_coordinator_host('127.0.0.1', %s)", (nodes[0].port("primary"),))
        for node in nodes[1:]:
            conn.execute("select citus_add_node('127.0.0.1', %s)", (node.port("primary"),))


@contextlib.contextmanager
def throwaway_citus(*, workers: int = 2, settings: dict[str, str] | None = None) -> Iterator[CitusSet]:
    """A migrated Citus cluster (reference schema included, dev logins created) that exists only in the block."""
    root = Path(tempfile.mkdtemp(prefix="clinicdb-citus-"))
    nodes: list[LocalCluster] = []
    try:
        chown_for_server(root)
        nodes = start_nodes(root, workers=workers, settings=settings)
        url = nodes[0].url()
        citus.migrate(url, reference=True)
        ensure_logins(url)
        yield CitusSet(admin_url=url, worker_admin_urls=[n.url() for n in nodes[1:]], nodes=nodes)
    finally:
        for node in reversed(nodes):
            node.down()
        shutil.rmtree(root, ignore_errors=True)


__all__ = ["CITUS_SETTINGS", "CitusSet", "add_citus", "citus_installed", "start_nodes", "throwaway_citus"]
