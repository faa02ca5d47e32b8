"""Published migrations never change: ``migrations.lock`` pins each file's hash.

Every file under the migrations folder (the SQL a migration runs, its
rollback, a Python migration and the frozen SQL it reads) is listed in
``migrations.lock`` with its SHA-256 once it is published. A later edit to a
locked file is a bug: it would make an existing database and a new one differ
for the same migration id. ``problems()`` finds such edits; ``clinicdb
migrate`` refuses to run on them and a test fails on them in the repository.
New, not yet published files are reported separately, so a developer can try
a migration before locking it (``make lock-migrations``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

LOCK_NAME = "migrations.lock"
# Files that belong to the folder but are not migrations.
_IGNORED = {LOCK_NAME, "__init__.py"}


class LockError(RuntimeError):
    """A published migration was changed or removed."""


@dataclass
class LockReport:
    """How the migration files compare with the lock."""

    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unlocked: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        """True when a published file changed or vanished (an unlocked new file is not broken)."""
        return bool(self.changed or self.missing)

    def describe(self) -> str:
        """One line naming what is wrong and what to do."""
        parts = []
        if self.changed:
            parts.append(f"published migration files changed: {', '.join(self.changed)}")
        if self.missing:
            parts.append(f"published migration files missing: {', '.join(self.missing)}")
        if self.unlocked:
            parts.append(f"not yet locked: {', '.join(self.unlocked)}")
        advice = (
            "restore the published files and put the change in a new migration"
            if self.broken
            else "run `make lock-migrations` to publish them"
        )
        return "; ".join(parts) + f" ({advice})" if parts else "every migration file matches migrations.lock"


def migration_files(root: Path) -> dict[str, Path]:
    """Every file of the migrations folder by its path relative to ``root`` (posix form)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name in _IGNORED or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        found[path.relative_to(root).as_posix()] = path
    return found


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_lock(root: Path) -> dict[str, str]:
    """The lock file as {relative path: sha256}; empty when there is none."""
    lock = root / LOCK_NAME
    if not lock.exists():
        return {}
    entries: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        checksum, name = line.split(maxsplit=1)
        entries[name] = checksum
    return entries


def check(root: Path) -> LockReport:
    """Compare the folder's files with its lock."""
    locked = read_lock(root)
    files = migration_files(root)
    report = LockReport()
    for name, checksum in locked.items():
        if name not in files:
            report.missing.append(name)
        elif digest(files[name]) != checksum:
            report.changed.append(name)
    report.unlocked = [name for name in files if name not in locked]
    return report


def lock(root: Path) -> list[str]:
    """Add every new file to the lock; raise LockError when a published one changed. Returns what was added."""
    report = check(root)
    if report.broken:
        raise LockError(report.describe())
    if not report.unlocked:
        return []
    locked = read_lock(root)
    files = migration_files(root)
    for name in report.unlocked:
        locked[name] = digest(files[name])
    header = (
        "# SHA-256 of every published migration file (python/clinicdb/migration_lock.py).\n"
        "# Append-only: a published migration never changes; add a new one instead.\n"
    )
    body = "".join(f"{locked[name]}  {name}\n" for name in sorted(locked))
    (root / LOCK_NAME).write_text(header + body)
    return report.unlocked
