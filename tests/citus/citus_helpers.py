"""Helpers for the Citus suites."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from clinicdb.citus import clinic_context_statements
from clinicdb.devcluster.citus import CitusSet


@contextmanager
def scoped(url: str, clinic_id: uuid.UUID | None, **context: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection inside one transaction with ``clinic_id`` in force the way Citus propagates it (no clinic
    when None); committed on a clean exit."""
    with psycopg.connect(url) as conn:
        if clinic_id is not None:
            for statement in clinic_context_statements(clinic_id, **context):
                conn.execute(statement)
        yield conn


def run_clinicdb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``clinicdb ARGS...`` in a subprocess (output captured, never raising on a non-zero exit); ``env`` adds to
    the environment (``PGOPTIONS``, say)."""
    return subprocess.run(
        [sys.executable, "-m", "clinicdb_cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=None if env is None else {**os.environ, **env},
    )


def align_txid_counters(citus: CitusSet) -> None:
    """Run empty transactions on every node until each one's txid counter passes the highest: audit rows carry the
    txid of the node that wrote them, and a row is sealed only once below every node's oldest running txid."""
    urls = [citus.admin_url, *citus.worker_admin_urls]
    conns = [psycopg.connect(url, autocommit=True) for url in urls]
    try:
        target = max(int(c.execute("select txid_current()").fetchone()[0]) for c in conns) + 1  # type: ignore[index]
        for conn in conns:
            while int(conn.execute("select txid_current()").fetchone()[0]) < target:  # type: ignore[index]
                pass
    finally:
        for conn in conns:
            conn.close()


def log_offsets(citus: CitusSet) -> dict[Path, int]:
    """Where each node's log ends now: what :func:`logged_since` reads from."""
    return {log: log.stat().st_size for log in citus.log_files()}


def logged_since(offsets: dict[Path, int]) -> dict[Path, str]:
    """What each node logged after :func:`log_offsets` was taken."""
    found = {}
    for log, offset in offsets.items():
        with log.open("rb") as f:
            f.seek(offset)
            found[log] = f.read().decode("utf-8", "replace")
    return found


def key_material(master: str, keyring: str) -> list[str]:
    """The master key, the keyring text and every data key in it (hex), in both cases."""
    parts = keyring.split("/")
    keys = [k for part in parts[3:] for k in part.split(",") if len(k) >= 32]
    assert keys, "the keyring carries no data key"
    return [v for s in [master, keyring, *keys] for v in (s, s.upper())]
