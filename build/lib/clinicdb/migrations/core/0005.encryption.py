"""PHI encryption with pgcrypto (issue #5): per-clinic data keys wrapped by a
master key that is never stored, rotation, re-encryption and shredding.
docs/encryption.md has the design.

Frozen: the SQL this migration runs is in the folder beside it
(``0005.encryption/``), copied from sql/ when it was written and pinned by
migrations/migrations.lock. Python, not SQL, because existing plaintext is
encrypted here (and decrypted by the rollback), which needs the master key
(CLINICDB_MASTER_KEY or CLINICDB_MASTER_KEY_FILE) whenever such values
exist; on an empty database no key is needed.

In clinicdb 0.1 this migration also encrypted the reference schema's
columns, which every 0.1 database had. It still does, on exactly those
databases (the ones that ran 0.1's ``0003.reference-schema``); elsewhere the
reference schema is optional and its own migration encrypts them.
"""

from typing import Any

from yoyo import step  # type: ignore[import-untyped]

from clinicdb.migration_steps import applied, parts_folder, run_part, with_master_key

__depends__ = {"0004.audit"}

_PARTS = parts_folder(__file__)


def _legacy_reference(conn: Any) -> bool:
    """A database that ran 0.1's reference migration and still has the tables it encrypted."""
    row = conn.execute(
        "select to_regclass('public.patients') is not null and to_regclass('public.medical_records') is not null"
    ).fetchone()
    return bool(row and row[0]) and applied(conn, "0003.reference-schema")


def _apply(conn: Any) -> None:
    with_master_key(conn)
    run_part(conn, _PARTS, "logging.sql")
    run_part(conn, _PARTS, "objects.sql")
    if _legacy_reference(conn):
        run_part(conn, _PARTS, "reference.sql")


def _rollback(conn: Any) -> None:
    with_master_key(conn)
    if _legacy_reference(conn):
        run_part(conn, _PARTS, "reference.rollback.sql")
    run_part(conn, _PARTS, "objects.rollback.sql")
    run_part(conn, _PARTS, "logging.rollback.sql")


steps = [step(_apply, _rollback)]
