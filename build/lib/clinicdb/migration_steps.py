"""What clinicdb's Python migrations share: frozen SQL parts run with the master key in force.

A migration is Python only when it needs more than SQL: encrypting or
decrypting existing values takes the master key (CLINICDB_MASTER_KEY or
CLINICDB_MASTER_KEY_FILE), sent as a bind parameter and never logged. Its SQL
still ships frozen, in a folder named after the migration
(``0005.encryption/``), pinned by migrations.lock like every other file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clinicdb.keys import load_master_key, quiet_parameters, set_master_key


def parts_folder(migration_file: str) -> Path:
    """The folder of frozen SQL beside a Python migration: ``0005.encryption.py`` -> ``0005.encryption/``."""
    return Path(migration_file).with_suffix("")


def with_master_key(conn: Any) -> None:
    """Bind parameters unlogged for this transaction, and the master key in force when one is configured."""
    row = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    if row and row[0]:
        quiet_parameters(conn)
    key = load_master_key(required=False)
    if key:
        set_master_key(conn, key)


def run_part(conn: Any, folder: Path, name: str) -> None:
    """Execute one frozen SQL file of a Python migration."""
    conn.execute((folder / name).read_text())


def applied(conn: Any, migration_id: str) -> bool:
    """True when the migration history records ``migration_id``."""
    row = conn.execute("select to_regclass('clinicdb_migrations._yoyo_migration') is not null").fetchone()
    if not (row and row[0]):
        return False
    found = conn.execute(
        "select 1 from clinicdb_migrations._yoyo_migration where migration_id = %s", (migration_id,)
    ).fetchone()
    return found is not None
