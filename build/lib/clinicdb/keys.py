"""The master key: where it comes from and how it reaches PostgreSQL.

The master key is 32 random bytes written as 64 hex digits. It never rests in
the database: the process that needs it reads it from ``CLINICDB_MASTER_KEY``
or from the file named by ``CLINICDB_MASTER_KEY_FILE`` (mode 0600 or
stricter), and sends it per transaction as the transaction-local setting
``app.master_key``, always as a bind parameter::

    with conn.transaction():
        set_master_key(conn, load_master_key())
        ...

The driver does the same with ``settings=master_key_settings(key)``.
A bind parameter keeps the key out of ``pg_stat_activity`` (which shows
``$1``) and, with ``log_parameter_max_length = 0``, out of the server log; a
literal would put it in both. See docs/encryption.md.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

import psycopg

from clinicdb.settings import env

MASTER_KEY_SETTING = "app.master_key"
NEW_MASTER_KEY_SETTING = "app.new_master_key"
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


class MasterKeyError(ValueError):
    """The master key is missing, malformed or badly protected. The message never contains the key."""


def generate_master_key() -> str:
    """A new random master key (64 hex digits) from the operating system's CSPRNG."""
    return secrets.token_hex(32)


def parse_master_key(text: str, source: str) -> str:
    """Validate a master key read from ``source``; returns it in lower case."""
    key = text.strip()
    if not _HEX_KEY.match(key):
        raise MasterKeyError(f"{source} does not hold a master key: expected 64 hex digits, got {len(key)} characters")
    return key.lower()


def read_key_file(path: Path | str) -> str:
    """The master key in ``path``, refusing a file that group or others can read."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
    except FileNotFoundError as exc:
        raise MasterKeyError(f"master key file {file} does not exist") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(
            f"master key file {file} is accessible by group or others (mode {stat.S_IMODE(mode):04o}): chmod 600 {file}"
        )
    return parse_master_key(file.read_text(), f"master key file {file}")


def write_key_file(path: Path | str, key: str | None = None) -> str:
    """Create ``path`` (mode 0600) holding ``key`` or a new key; an existing file is read, never overwritten."""
    file = Path(path)
    if file.exists():
        return read_key_file(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    value = parse_master_key(key, "the given key") if key else generate_master_key()
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


def dev_master_key(dev_dir: Path | str) -> str:
    """The local development key, ``<dev dir>/master.key`` (created 0600 on first use), never in the database."""
    return write_key_file(Path(dev_dir) / "master.key")


def load_master_key(*, required: bool = True) -> str | None:
    """``CLINICDB_MASTER_KEY``, else the file named by ``CLINICDB_MASTER_KEY_FILE``; None (or an error) when neither."""
    value = env("CLINICDB_MASTER_KEY")
    if value:
        return parse_master_key(value, "CLINICDB_MASTER_KEY")
    path = env("CLINICDB_MASTER_KEY_FILE")
    if path:
        return read_key_file(path)
    if required:
        raise MasterKeyError(
            "no master key: set CLINICDB_MASTER_KEY_FILE to a 0600 file holding it "
            "(or CLINICDB_MASTER_KEY); `clinicdb keys generate-master` makes one"
        )
    return None


def master_key_settings(key: str) -> dict[str, str]:
    """The transaction-local settings that put ``key`` in force (for the driver's ``settings=``)."""
    return {MASTER_KEY_SETTING: parse_master_key(key, "the master key")}


def set_master_key(conn: psycopg.Connection[object], key: str, *, setting: str = MASTER_KEY_SETTING) -> None:
    """Put ``key`` in force for the current transaction only, as a bind parameter."""
    conn.execute("select set_config(%s, %s, true)", (setting, parse_master_key(key, "the master key")))


def quiet_parameters(conn: psycopg.Connection[object]) -> None:
    """For a superuser's transaction that carries keys: never log bind parameters, even if the server would."""
    conn.execute("set local log_parameter_max_length = 0")
    conn.execute("set local log_parameter_max_length_on_error = 0")


__all__ = [
    "MASTER_KEY_SETTING",
    "NEW_MASTER_KEY_SETTING",
    "MasterKeyError",
    "dev_master_key",
    "generate_master_key",
    "load_master_key",
    "master_key_settings",
    "parse_master_key",
    "quiet_parameters",
    "read_key_file",
    "set_master_key",
    "write_key_file",
]
