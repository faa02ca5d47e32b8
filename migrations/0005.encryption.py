"""PHI encryption with pgcrypto (issue #5): per-clinic data keys wrapped by a
master key that is never stored, encrypted reference columns (patients.ssn
with a blind index, patients.phone, medical_records.notes), rotation,
re-encryption and shredding. docs/encryption.md has the design.

Existing plaintext is encrypted by this migration, and decrypted again by its
rollback: either needs the master key (CLINICDB_MASTER_KEY or
CLINICDB_MASTER_KEY_FILE) whenever such values exist. On an empty database
no key is needed.
"""

from typing import Any

from yoyo import step  # type: ignore[import-untyped]

from clinicdb.keys import load_master_key, quiet_parameters, set_master_key
from clinicdb.schema import read_sql

__depends__ = {"0003.reference-schema"}

_OBJECTS = [
    "schema/encryption.sql",
    "functions/crypto_primitives.sql",
    "functions/master_key.sql",
    "functions/clinic_keys.sql",
    "functions/encrypted_values.sql",
    "functions/encrypt_column.sql",
    "functions/reencrypt.sql",
]


def _with_key(conn: Any) -> None:
    """Parameters unlogged for this transaction, and the master key in force if one is configured."""
    row = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    if row and row[0]:
        quiet_parameters(conn)
    key = load_master_key(required=False)
    if key:
        set_master_key(conn, key)


def _apply(conn: Any) -> None:
    _with_key(conn)
    conn.execute(read_sql("schema/encryption_logging.sql"))
    conn.execute("set local role clinicdb_owner")
    conn.execute(read_sql(*_OBJECTS))
    conn.execute("reset role")
    # As the migrating superuser: existing plaintext of every clinic is encrypted.
    conn.execute(read_sql("reference/encryption.sql"))


def _rollback(conn: Any) -> None:
    _with_key(conn)
    conn.execute(read_sql("reference/encryption.rollback.sql"))
    conn.execute("set local role clinicdb_owner")
    conn.execute(read_sql("schema/encryption.rollback.sql"))
    conn.execute("reset role")
    conn.execute(read_sql("schema/encryption_logging.rollback.sql"))


steps = [step(_apply, _rollback)]
