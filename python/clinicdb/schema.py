"""Applying and rolling back clinicdb's migrations (yoyo) from Python.

The migrations in ``migrations/`` apply the SQL files in ``sql/``, so each
database object is defined in one file a DBA can read. Objects are created as
``clinicdb_owner`` (``set local role``), so the connecting role only needs to
be able to create roles and grant them -- a superuser on a fresh database.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoyo import get_backend, read_migrations, step  # type: ignore[import-untyped]


def project_root() -> Path:
    """The clinicdb checkout holding ``sql/`` and ``migrations/``.

    ``CLINICDB_HOME`` wins; otherwise the checkout this package was installed
    from (clinicdb is installed editable from its repository).
    """
    env = os.environ.get("CLINICDB_HOME")
    root = Path(env) if env else Path(__file__).resolve().parents[2]
    if not (root / "migrations").is_dir() or not (root / "sql").is_dir():
        raise FileNotFoundError(f"no clinicdb migrations under {root}: set CLINICDB_HOME to the clinicdb checkout")
    return root


def read_sql(*relative: str) -> str:
    """The text of files under ``sql/``, joined in the order given."""
    root = project_root() / "sql"
    return "\n".join((root / name).read_text() for name in relative)


def sql_step(apply: Sequence[str], rollback: Sequence[str], *, as_owner: bool = True) -> Any:
    """A yoyo step applying sql/ files, and rolling back with others.

    With ``as_owner`` the SQL runs as ``clinicdb_owner`` so every object it
    creates is owned by the owner role, whoever connects.
    """

    def wrap(files: Sequence[str]) -> str:
        body = read_sql(*files)
        if not as_owner:
            return body
        return f"set local role clinicdb_owner;\n{body}\nreset role;\n"

    return step(wrap(apply), wrap(rollback))


def yoyo_url(url: str) -> str:
    """yoyo names its psycopg 3 backend ``postgresql+psycopg``."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class MigrationState:
    """One migration and whether it is applied to the database."""

    id: str
    applied: bool


def _migrations() -> Any:
    return read_migrations(str(project_root() / "migrations"))


@contextlib.contextmanager
def _backend(url: str) -> Iterator[Any]:
    """A yoyo backend whose connection is closed afterwards (yoyo leaves it open)."""
    backend = get_backend(yoyo_url(url))
    try:
        yield backend
    finally:
        backend.connection.close()


def apply(url: str) -> list[str]:
    """Apply every pending migration; return the ids applied, in order."""
    migrations = _migrations()
    with _backend(url) as backend, backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def rollback(url: str, *, count: int | None = 1, to_zero: bool = False) -> list[str]:
    """Roll back the newest ``count`` migrations (or all of them); return their ids."""
    migrations = _migrations()
    with _backend(url) as backend, backend.lock():
        applied = list(backend.to_rollback(migrations))
        chosen = applied if to_zero or count is None else applied[:count]
        backend.rollback_migrations(migrations.__class__(chosen))
    return [m.id for m in chosen]


def status(url: str) -> list[MigrationState]:
    """Every migration in ``migrations/`` with its applied state."""
    with _backend(url) as backend:
        return [MigrationState(m.id, bool(backend.is_applied(m))) for m in _migrations()]
