"""The driver's knobs: one frozen ``Options`` object, filled from ``CLINICDB_*`` settings.

``ClinicDB(primary, replicas, options=Options(...))`` or ``options=Options.from_env()``;
``ClinicDB(primary, replicas, max_size=4)`` still works (the keywords override the
environment). Every field maps to one setting in :mod:`clinicdb.settings`
(documented there, in the README and in docs/driver.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clinicdb.settings import env

# field name -> (setting, default text); the defaults live in settings.SETTINGS too (a test checks both agree).
ENV_NAMES: dict[str, tuple[str, str]] = {
    "min_size": ("CLINICDB_POOL_MIN_SIZE", "1"),
    "max_size": ("CLINICDB_POOL_MAX_SIZE", "10"),
    "acquire_timeout": ("CLINICDB_ACQUIRE_TIMEOUT_MS", "5000"),
    "replica_acquire_timeout": ("CLINICDB_REPLICA_ACQUIRE_TIMEOUT_MS", "500"),
    "statement_timeout_ms": ("CLINICDB_STATEMENT_TIMEOUT_MS", "30000"),
    "idle_in_transaction_timeout_ms": ("CLINICDB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "60000"),
    "max_replica_lag": ("CLINICDB_MAX_REPLICA_LAG_BYTES", "16777216"),
    "replica_check_interval": ("CLINICDB_REPLICA_CHECK_INTERVAL_MS", "500"),
    "causal_wait": ("CLINICDB_CAUSAL_WAIT_MS", "0"),
    "breaker_backoff": ("CLINICDB_BREAKER_BACKOFF_MS", "1000"),
    "breaker_max_backoff": ("CLINICDB_BREAKER_MAX_BACKOFF_MS", "30000"),
    "retry_attempts": ("CLINICDB_RETRY_ATTEMPTS", "5"),
    "retry_backoff": ("CLINICDB_RETRY_BACKOFF_MS", "20"),
    "retry_max_backoff": ("CLINICDB_RETRY_MAX_BACKOFF_MS", "1000"),
    "slow_transaction": ("CLINICDB_SLOW_TRANSACTION_MS", "1000"),
    "health_cache": ("CLINICDB_HEALTH_CACHE_MS", "3000"),
    "health_timeout": ("CLINICDB_HEALTH_TIMEOUT_MS", "2000"),
    "prepare_threshold": ("CLINICDB_PREPARE_THRESHOLD", "5"),
    "read_your_writes": ("CLINICDB_READ_YOUR_WRITES", "on"),
    "citus": ("CLINICDB_CITUS", "auto"),
}
_MILLISECONDS = {
    "acquire_timeout",
    "replica_acquire_timeout",
    "replica_check_interval",
    "causal_wait",
    "breaker_backoff",
    "breaker_max_backoff",
    "retry_backoff",
    "retry_max_backoff",
    "slow_transaction",
    "health_cache",
    "health_timeout",
}


@dataclass(frozen=True)
class Options:
    """Pool sizes, timeouts and routing limits. Durations are seconds except the ``*_ms`` ones.

    ``Options()`` is the defaults alone; ``Options.from_env()`` reads ``CLINICDB_*`` first.
    """

    min_size: int = 1
    max_size: int = 10
    acquire_timeout: float = 5.0
    replica_acquire_timeout: float = 0.5
    statement_timeout_ms: int = 30000
    idle_in_transaction_timeout_ms: int = 60000
    max_replica_lag: int = 16 * 1024 * 1024
    replica_check_interval: float = 0.5
    causal_wait: float = 0.0
    breaker_backoff: float = 1.0
    breaker_max_backoff: float = 30.0
    retry_attempts: int = 5
    retry_backoff: float = 0.02
    retry_max_backoff: float = 1.0
    slow_transaction: float = 1.0
    health_cache: float = 3.0
    health_timeout: float = 2.0
    prepare_threshold: int | None = 5
    read_your_writes: bool = True
    # None: detected on each new pooled connection (the citus extension in the database); True/False: forced.
    citus: bool | None = None

    def __post_init__(self) -> None:
        if self.min_size < 0 or self.max_size < max(1, self.min_size):
            raise ValueError(
                f"pool sizes must satisfy 0 <= min_size <= max_size and max_size >= 1"
                f" (got {self.min_size}, {self.max_size})"
            )
        if self.retry_attempts < 1:
            raise ValueError("retry_attempts counts the first try too: it must be at least 1")
        for name in ("acquire_timeout", "replica_acquire_timeout", "replica_check_interval", "health_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @classmethod
    def from_env(cls, **overrides: Any) -> Options:
        """Defaults, then ``CLINICDB_*`` variables, then ``overrides`` (field names of this class)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown driver setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, (var, _default) in ENV_NAMES.items():
            raw = env(var)
            if raw is not None:
                values[name] = _parse(name, var, raw)
        values.update(overrides)
        return cls(**values)

    def pool_kwargs(self) -> dict[str, Any]:
        """psycopg connection options of every pooled connection."""
        return {
            "autocommit": False,
            "prepare_threshold": self.prepare_threshold,
            "connect_timeout": max(1, round(self.health_timeout)),
            "client_encoding": "utf-8",
        }


def resolve_options(options: Options | None, overrides: Mapping[str, Any]) -> Options:
    """The driver's options: ``options`` (else the environment's) with keyword ``overrides`` applied."""
    if options is None:
        return Options.from_env(**overrides)
    if not isinstance(options, Options):
        raise TypeError(f"options must be a clinicdb.Options, got {type(options).__name__}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Options)}
    if unknown:
        raise TypeError(f"unknown driver setting(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(options, **overrides) if overrides else options


# The name before 0.2: kept importable.
DriverConfig = Options


def _parse(field: str, var: str, raw: str) -> Any:
    text = raw.strip().lower()
    try:
        if field == "read_your_writes":
            if text in ("1", "on", "true", "yes"):
                return True
            if text in ("0", "off", "false", "no"):
                return False
            raise ValueError(text)
        if field == "citus":
            return {"auto": None, "on": True, "off": False}[text]
        if field == "prepare_threshold":
            return None if text in ("none", "off", "") else int(text)
        if field in _MILLISECONDS:
            return float(text) / 1000.0
        return int(text)
    except (ValueError, KeyError):
        raise ValueError(f"{var}={raw[:40]!r} is not valid; see docs/driver.md for its meaning and default") from None
