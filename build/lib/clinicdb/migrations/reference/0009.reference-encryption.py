"""The reference schema's encrypted columns: patients.ssn (with a blind
index), patients.phone and medical_records.notes. Existing plaintext is
encrypted on the spot, and the rollback decrypts it again: either needs the
master key (CLINICDB_MASTER_KEY or CLINICDB_MASTER_KEY_FILE) whenever such
values exist. On a clinicdb 0.1 database, whose 0005 encrypted these columns
already, it changes nothing.

Frozen: the SQL is in ``0009.reference-encryption/`` beside this file.
"""

from typing import Any

from yoyo import step  # type: ignore[import-untyped]

from clinicdb.migration_steps import parts_folder, run_part, with_master_key

__depends__ = {"0008.reference-schema"}

_PARTS = parts_folder(__file__)


def _apply(conn: Any) -> None:
    with_master_key(conn)
    run_part(conn, _PARTS, "encryption.sql")


def _rollback(conn: Any) -> None:
    with_master_key(conn)
    run_part(conn, _PARTS, "encryption.rollback.sql")


steps = [step(_apply, _rollback)]
