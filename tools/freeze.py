"""Write and lock frozen migrations: a migration carries the SQL it runs.

The files under ``sql/`` are the current definitions (one object per file,
what a reviewer reads). A migration never reads them at run time: when it is
written, ``compose`` copies the named ``sql/`` files into the migration, so a
later edit to ``sql/`` cannot change what an already published migration
does. The edit reaches databases through a new migration, and the test
``test_migrations_install_exactly_what_sql_defines`` fails until one exists.

Usage::

    # a new core migration from sql/ files (run as clinicdb_owner unless prefixed admin:)
    python tools/freeze.py compose core/0009.name "why" --depends 0008.other \\
        functions/x.sql admin:schema/y.sql --rollback schema/x.rollback.sql
    python tools/freeze.py lock     # publish: add new files to migrations/migrations.lock
    python tools/freeze.py check    # exit 1 when a published file changed (make lint)
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from clinicdb import migration_lock  # noqa: E402

SQL = ROOT / "sql"
MIGRATIONS = ROOT / "migrations"
ADMIN = "admin:"


def concat(entries: Sequence[str]) -> str:
    """The text of sql/ files in order. Entries run as clinicdb_owner, or as the
    migrating login when prefixed ``admin:`` (roles, server settings, other clinics' data)."""
    chunks: list[str] = []
    owner = False
    for entry in entries:
        as_admin = entry.startswith(ADMIN)
        name = entry.removeprefix(ADMIN)
        if owner and as_admin:
            chunks.append("reset role;\n")
            owner = False
        if not owner and not as_admin:
            chunks.append("set local role clinicdb_owner;\n")
            owner = True
        body = (SQL / name).read_text()
        chunks.append(f"-- ---- sql/{name} ----\n{body.rstrip()}\n")
    if owner:
        chunks.append("reset role;\n")
    return "".join(chunks)


def header(migration_id: str, doc: str, depends: Sequence[str], sources: Sequence[str]) -> str:
    """Leading comment: what the migration does, its dependencies (yoyo reads ``-- depends:``), its sources."""
    lines = [f"-- {migration_id}: " + line for line in textwrap.wrap(doc, 100)[:1]]
    lines += [f"-- {line}" for line in textwrap.wrap(doc, 100)[1:]]
    if depends:
        lines.append(f"-- depends: {' '.join(depends)}")
    lines.append("--")
    frozen = (
        "Frozen: the SQL below is what this migration runs, copied from "
        + ", ".join(f"sql/{s.removeprefix(ADMIN)}" for s in sources)
        + " when it was written. migrations/migrations.lock pins it: change sql/ and add a new migration"
        " instead of editing this file."
    )
    lines += [f"-- {line}" for line in textwrap.wrap(frozen, 100)]
    return "\n".join(lines) + "\n\n"


def compose(target: str, doc: str, depends: Sequence[str], apply: Sequence[str], rollback: Sequence[str]) -> list[Path]:
    """Write migrations/<target>.sql (and .rollback.sql) from sql/ files; return the paths written."""
    path = MIGRATIONS / f"{target}.sql"
    if path.exists():
        raise SystemExit(f"{path.relative_to(ROOT)} exists: a migration is written once")
    migration_id = path.stem
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header(migration_id, doc, depends, apply) + concat(apply))
    written = [path]
    if rollback:
        back = path.with_name(f"{migration_id}.rollback.sql")
        back.write_text(header(migration_id, f"undo {migration_id}.", [], rollback) + concat(rollback))
        written.append(back)
    return written


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("compose", help="write a new migration from sql/ files")
    new.add_argument("target", help="core/NNNN.name or reference/NNNN.name")
    new.add_argument("doc", help="one sentence: what the migration does")
    new.add_argument("files", nargs="+", help="sql/ files in order (admin:path runs as the migrating login)")
    new.add_argument("--depends", nargs="*", default=[])
    new.add_argument("--rollback", nargs="*", default=[])
    commands.add_parser("lock", help="add new migration files to migrations.lock")
    commands.add_parser("check", help="exit 1 when a published migration file changed or a new one is unlocked")
    args = parser.parse_args(argv)

    if args.command == "compose":
        for written in compose(args.target, args.doc, args.depends, args.files, args.rollback):
            print(f"wrote {written.relative_to(ROOT)}")
        return 0
    if args.command == "lock":
        added = migration_lock.lock(MIGRATIONS)
        print(f"locked: {', '.join(added)}" if added else "nothing new to lock")
        return 0
    report = migration_lock.check(MIGRATIONS)
    if report.broken or report.unlocked:
        print(report.describe(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
