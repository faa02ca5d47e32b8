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
        "Replica URLs for reads, separated by whitespace (commas still work between whole URLs), so a multi-host "
        "URL fits; empty means reads use the primary. `clinicdb health` still splits on commas only.",
    ),
    Setting(
        "CLINICDB_ADMIN_URL",
        "",
        "URL of a superuser (or CREATEROLE) login for migrate, rollback, check, clinic and staff commands; "
        "falls back to CLINICDB_DATABASE_URL.",
    ),
    Setting(
        "CLINICDB_HOME",
        "(none)",
        "Development override: a clinicdb checkout whose migrations/ to apply instead of the installed package's.",
    ),
    Setting(
        "CLINICDB_MIGRATION_LOCK_TIMEOUT_MS",
        "10000",
        "migrate and rollback: how long a statement waits for a lock (behind open transactions) before failing "
        "with a clear error instead of stalling every query queued behind it (0: wait forever).",
    ),
    Setting(
        "CLINICDB_DEV_DIR",
        "<checkout>/.clinicdb",
        "Where `clinicdb dev up` keeps the local servers (.clinicdb in the checkout, or the current folder for an "
        "installed wheel; as root, /var/lib/clinicdb/<name>-<hash> when the PostgreSQL OS user cannot reach that).",
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
    # The driver (ClinicDB / AsyncClinicDB); docs/driver.md explains each.
    Setting("CLINICDB_POOL_MIN_SIZE", "1", "Driver: connections each pool (primary, every replica) keeps open."),
    Setting("CLINICDB_POOL_MAX_SIZE", "10", "Driver: most connections per pool."),
    Setting(
        "CLINICDB_ACQUIRE_TIMEOUT_MS",
        "5000",
        "Driver: how long a transaction waits for a pooled connection before PoolExhausted.",
    ),
    Setting(
        "CLINICDB_REPLICA_ACQUIRE_TIMEOUT_MS",
        "500",
        "Driver: how long a read waits for a replica connection before going to the primary instead.",
    ),
    Setting("CLINICDB_STATEMENT_TIMEOUT_MS", "30000", "Driver: statement_timeout set in every transaction (0: none)."),
    Setting(
        "CLINICDB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        "60000",
        "Driver: idle_in_transaction_session_timeout set in every transaction (0: none).",
    ),
    Setting(
        "CLINICDB_MAX_REPLICA_LAG_BYTES",
        "16777216",
        "Driver: a replica further behind the primary's WAL than this many bytes gets no reads.",
    ),
    Setting(
        "CLINICDB_REPLICA_CHECK_INTERVAL_MS",
        "500",
        "Driver: how often the background check measures replica lag and probes unhealthy replicas.",
    ),
    Setting(
        "CLINICDB_CAUSAL_WAIT_MS",
        "0",
        "Driver: how long a read with a causal token may wait for a replica to replay it (0: go to the primary).",
    ),
    Setting(
        "CLINICDB_BREAKER_BACKOFF_MS", "1000", "Driver: first back-off after a replica fails; doubles per failure."
    ),
    Setting("CLINICDB_BREAKER_MAX_BACKOFF_MS", "30000", "Driver: cap of the replica back-off."),
    Setting("CLINICDB_RETRY_ATTEMPTS", "5", "Driver: run_read/run_write attempts in all, the first included."),
    Setting("CLINICDB_RETRY_BACKOFF_MS", "20", "Driver: base of the jittered exponential back-off between attempts."),
    Setting("CLINICDB_RETRY_MAX_BACKOFF_MS", "1000", "Driver: cap of the back-off between attempts."),
    Setting(
        "CLINICDB_SLOW_TRANSACTION_MS",
        "1000",
        "Driver: transactions at least this long are counted and logged (clinic, route, duration; 0: off).",
    ),
    Setting("CLINICDB_HEALTH_CACHE_MS", "3000", "Driver: how long db.health() reuses its last answer."),
    Setting(
        "CLINICDB_HEALTH_TIMEOUT_MS",
        "2000",
        "Driver: connect timeout of health checks, replica checks and pooled connections (whole seconds, min 1).",
    ),
    Setting(
        "CLINICDB_PREPARE_THRESHOLD",
        "5",
        "Driver: psycopg prepare_threshold; 'none' turns prepared statements off (pgbouncer before 1.21).",
    ),
    Setting(
        "CLINICDB_READ_YOUR_WRITES",
        "on",
        "Driver: reads after a write by the same thread/task see it (on) or may read a lagging replica (off).",
    ),
    Setting(
        "CLINICDB_CITUS",
        "auto",
        "Driver: set the clinic with SET LOCAL statements that reach Citus workers (on), with set_config only "
        "(off), or as each new connection finds the citus extension (auto); docs/citus.md.",
    ),
)


def env(name: str, default: str | None = None) -> str | None:
    """The value of one ``CLINICDB_*`` variable, or its default; empty counts as unset."""
    value = os.environ.get(name, "")
    return value if value else default
