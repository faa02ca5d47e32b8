"""Every ``CLINICDB_*`` setting in one place, with its default and meaning.

The README's configuration table is checked against ``SETTINGS`` by a test,
so a setting cannot exist without documentation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One environment variable clinicdb reads."""

    name: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "CLINICDB_DATABASE_URL",
        "",
        "Primary server URL the application (a clinicdb_app login) uses.",
    ),
    Setting(
        "CLINICDB_REPLICA_URLS",
        "",
        "Comma-separated replica URLs for reads; empty means reads use the primary.",
    ),
    Setting(
        "CLINICDB_ADMIN_URL",
        "",
        "URL of a superuser (or CREATEROLE) login for migrate, rollback, check, clinic and staff commands; "
        "falls back to CLINICDB_DATABASE_URL.",
    ),
    Setting("CLINICDB_HOME", "the checkout", "The clinicdb checkout holding sql/ and migrations/."),
    Setting(
        "CLINICDB_DEV_DIR",
        "<checkout>/.clinicdb",
        "Where `clinicdb dev up` keeps the local servers.",
    ),
    Setting(
        "CLINICDB_PG_BINDIR",
        "found",
        "Directory with initdb and pg_ctl, when not found on PATH or in /usr/lib/postgresql.",
    ),
    Setting(
        "CLINICDB_TEST_DATABASE_URL",
        "",
        "Tests: use this existing server (superuser URL) instead of starting one.",
    ),
    Setting(
        "CLINICDB_MASTER_KEY_FILE",
        "",
        "File (mode 0600, outside the database server) holding the 64-hex-digit master key that unwraps the "
        "per-clinic data keys; sent per transaction as app.master_key, never stored in the database.",
    ),
    Setting(
        "CLINICDB_MASTER_KEY",
        "",
        "The master key itself (64 hex digits), when a file is not possible; CLINICDB_MASTER_KEY_FILE is preferred "
        "(environments leak into process listings and crash reports).",
    ),
)


def env(name: str, default: str | None = None) -> str | None:
    """The value of one ``CLINICDB_*`` variable, or its default; empty counts as unset."""
    value = os.environ.get(name, "")
    return value if value else default
