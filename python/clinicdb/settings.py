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
        "CLINICDB_AUDIT_RETENTION_DAYS",
        "2555",
        "Days of audit trail `clinicdb audit prune` and `archive` keep (whole monthly partitions older are dropped).",
    ),
    Setting(
        "CLINICDB_TEST_DATABASE_URL",
        "",
        "Tests: use this existing server (superuser URL) instead of starting one.",
    ),
)


def env(name: str, default: str | None = None) -> str | None:
    """The value of one ``CLINICDB_*`` variable, or its default; empty counts as unset."""
    value = os.environ.get(name, "")
    return value if value else default
