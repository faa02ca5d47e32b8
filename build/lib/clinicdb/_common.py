"""Small pieces both drivers share: the prepared opening, pool options, messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import psycopg

from clinicdb import _wire
from clinicdb._config import DriverConfig
from clinicdb._scope import Scope
from clinicdb.errors import TransactionAborted

ROUTE_PRIMARY = "primary"
ROUTE_REPLICA = "replica"


@dataclass(frozen=True)
class Opening:
    """The one flight that starts a transaction: BEGIN plus the set_config select with its parameters.

    With prepared statements on (``prepare_threshold`` not None) the select is
    prepared once per connection, in the flight of its first use, and run by
    name afterwards; with them off (pgbouncer before 1.21) it is sent unnamed.
    """

    begin: bytes
    # A tuple: cached Openings are shared between transactions. Never in repr: extra settings may be keys.
    params: tuple[bytes | None, ...] = field(repr=False)
    extra: int
    prepared: bool
    name: bytes = b""  # the prepared select's name on each connection
    lsn_column: int = 0  # index of pg_last_wal_replay_lsn() in the select's row
    _run: tuple[_wire.Command, ...] = field(default=(), repr=False)  # the flight once the select is prepared
    _prepare_and_run: tuple[_wire.Command, ...] = field(default=(), repr=False)  # the flight that prepares it

    def __post_init__(self) -> None:
        # Computed once per Opening (the common ones are cached): a transaction only picks its flight.
        query, name = _wire.opening_query(self.extra), _wire.opening_name(self.extra)
        begin: _wire.Command = (b"q", self.begin, None)
        if self.prepared:
            run: tuple[_wire.Command, ...] = (begin, (b"e", name, self.params))
            first: tuple[_wire.Command, ...] = (begin, (b"p", name, query), (b"e", name, self.params))
        else:
            run = first = tuple((b"q", sql, params) for sql, params in self.statements())
        for field_name, value in (
            ("name", name),
            ("lsn_column", _wire.opening_lsn_column(self.extra)),
            ("_run", run),
            ("_prepare_and_run", first),
        ):
            object.__setattr__(self, field_name, value)

    def commands(self, *, prepare: bool) -> tuple[_wire.Command, ...]:
        """The flight; ``prepare`` when this connection has not prepared this opening yet."""
        return self._prepare_and_run if prepare else self._run

    def statements(self) -> list[tuple[bytes, Sequence[bytes | None] | None]]:
        """The flight as plain (unprepared) statements with their parameters."""
        return [(self.begin, None), (_wire.opening_query(self.extra), self.params)]

    @classmethod
    def build(cls, scope: Scope, config: DriverConfig, *, read: bool, isolation: str | None) -> Opening:
        # Extra settings may hold keys: such openings are built per transaction and never cached.
        make = _build if scope.settings else _cached_build
        return make(
            scope,
            config.statement_timeout_ms,
            config.idle_in_transaction_timeout_ms,
            read,
            isolation,
            config.prepare_threshold is not None,
        )


def _build(
    scope: Scope, statement_timeout_ms: int, idle_timeout_ms: int, read: bool, isolation: str | None, prepared: bool
) -> Opening:
    params = _wire.opening_params(
        scope, statement_timeout_ms=statement_timeout_ms, idle_timeout_ms=idle_timeout_ms, encoding="utf-8"
    )
    begin = _wire.begin_command(read_only=read, isolation=isolation)
    return Opening(begin, tuple(params), len(scope.settings), prepared)


# An Opening is immutable and depends only on these arguments: the common scopes reuse theirs.
_cached_build = lru_cache(maxsize=4096)(_build)


def sync_prepared(prepared: set[bytes], opening: Opening, exc: BaseException) -> None:
    """Correct what we believe is prepared on a connection after the server disagreed."""
    if isinstance(exc, psycopg.errors.DuplicatePreparedStatement):
        prepared.add(opening.name)
    else:
        prepared.clear()


def pool_kwargs(config: DriverConfig) -> dict[str, Any]:
    """Connection options for every pooled connection."""
    return {
        "autocommit": False,
        "prepare_threshold": config.prepare_threshold,
        "connect_timeout": max(1, round(config.health_timeout)),
        "client_encoding": "utf-8",
    }


def primary_reopen_attempts(config: DriverConfig) -> int:
    """How many checkouts to try when pooled connections turn out dead: up to 3 of them, then a fresh one.

    The pool replaces each dead connection it is handed back, so the try after the dead ones gets a new
    connection (or, with the server down, the pool's timeout): a pool of one survives a restart too.
    """
    return min(3, max(1, config.max_size)) + 1


def check_urls(primary_url: str, replica_urls: Sequence[str]) -> None:
    if not isinstance(primary_url, str) or not primary_url.strip():
        raise ValueError("primary_url must be a libpq URL such as postgresql://clinicdb_app_user@host/clinicdb")
    if isinstance(replica_urls, str):
        raise ValueError("replica_urls must be a list of URLs, not one string")
    for url in replica_urls:
        if not isinstance(url, str) or not url.strip():
            raise ValueError("replica_urls must hold non-empty libpq URLs")


def replica_names(replica_urls: Sequence[str]) -> list[str]:
    return [f"replica{i}" for i in range(1, len(replica_urls) + 1)]


def exhausted_message(server: str, stats: Mapping[str, int], timeout: float) -> str:
    size, most = stats.get("pool_size", 0), stats.get("pool_max", 0)
    idle, waiting = stats.get("pool_available", 0), stats.get("requests_waiting", 0)
    if size == 0:
        why = "the pool could not open any connection (is the server up? see db.health())"
    else:
        why = "every connection is busy; raise CLINICDB_POOL_MAX_SIZE or keep transactions shorter"
    return (
        f"no connection from the {server} pool within {timeout:.2f}s: {size} open of max {most},"
        f" {idle} idle, {waiting} other requests waiting; {why}"
    )


def redacted_error(exc: BaseException) -> str:
    """The first line of an error, short; psycopg's connection errors name host and port, never passwords."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def monitor_row_problem(row: tuple[Any, ...] | None) -> str | None:
    """Why a replica's ``(replay lsn, in recovery)`` row disqualifies it, or None."""
    if row is None or row[0] is None:
        return "no replay position (not a streaming replica?)"
    if row[1] is not True:
        return "not in recovery (promoted?): refusing to route reads to it as a replica"
    return None


def aborted_error() -> TransactionAborted:
    return TransactionAborted(
        "a statement failed inside the block and the error was caught: the transaction was rolled back,"
        " nothing in it was committed"
    )
