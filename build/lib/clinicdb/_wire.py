"""The two messages the driver adds to a transaction, and how they travel.

Opening: psycopg would send ``BEGIN`` on its own and wait for it. The driver
sends ``BEGIN`` *and* one ``select set_config($1, ..., true), ...`` with
server-side parameters in a single libpq pipeline flight (Parse/Bind/Execute
twice, one Sync), so setting the clinic costs no round trip beyond the BEGIN
psycopg would have waited for anyway. The same flight reads the replica's
replay position for free (``pg_last_wal_replay_lsn()`` is NULL on a primary).

Closing: one simple-query message (no parameters to carry, so no pipeline),
sent and read by psycopg's own C generator, which costs less client CPU than
a pipeline. A write's ``COMMIT`` is followed by ``select
pg_current_wal_insert_lsn()`` in the same message, so the causal token costs
no round trip either.

Every closing message (commit or rollback, read or write) also carries
``CLOSE ALL`` and ``DISCARD TEMP``: a ``WITH HOLD`` cursor or a temporary
table the app made (temporary tables have no row level security) must not
survive into the next clinic's transaction on the same pooled connection.
Before ``COMMIT`` they are part of the transaction; after ``ROLLBACK`` they
run on their own, for what an earlier commit inside the block left.

The generators here are shared by the sync and async drivers: each runs them
with its connection's ``wait()`` (see docs/driver.md for the measurements that
chose this form).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, NoReturn

from psycopg import errors as e
from psycopg import generators, pq
from psycopg.abc import PQGen
from psycopg.waiting import Ready, Wait

from clinicdb._scope import Scope

# (b"q", sql, params): an unnamed statement; (b"p", name, sql): prepare; (b"e", name, params): run a prepared one;
# or a function that sends one statement itself (the app's first statement, see _deferred).
Command = tuple[bytes, bytes, Any] | Callable[[pq.abc.PGconn], Any]
_COPY = (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT, pq.ExecStatus.COPY_BOTH)
_FATAL = pq.ExecStatus.FATAL_ERROR
_SYNC = pq.ExecStatus.PIPELINE_SYNC

_FIXED = ("app.clinic_id", "app.user_id", "app.request_id", "statement_timeout", "idle_in_transaction_session_timeout")
# Closing messages (simple query protocol, several statements each). CLEAN_SESSION drops the session state
# that could carry one clinic's rows into another's transaction; COMMIT_WITH_TOKEN's last result is the token.
CLEAN_SESSION = b"close all; discard temp"
COMMIT_READ = CLEAN_SESSION + b"; commit"
# A hot standby cannot hold temporary tables, so a read there only closes cursors.
COMMIT_STANDBY_READ = b"close all; commit"
COMMIT_WITH_TOKEN = CLEAN_SESSION + b"; commit; select pg_current_wal_insert_lsn()::text"
ROLLBACK = b"rollback; " + CLEAN_SESSION
REPLAY_LSN = b"select pg_last_wal_replay_lsn()::text"

_ISOLATION = {
    None: b"",
    "read committed": b" isolation level read committed",
    "repeatable read": b" isolation level repeatable read",
    "serializable": b" isolation level serializable",
}


def begin_command(*, read_only: bool, isolation: str | None) -> bytes:
    """``begin [isolation level ...] [read only]``; ValueError on an unknown level."""
    try:
        level = _ISOLATION[isolation.lower() if isolation else None]
    except KeyError:
        raise ValueError(f"isolation must be one of {', '.join(k for k in _ISOLATION if k)}, or None") from None
    return b"begin" + level + (b" read only" if read_only else b"")


@lru_cache(maxsize=64)
def opening_name(extra: int) -> bytes:
    """The prepared statement name of ``opening_query(extra)`` on each connection."""
    return f"clinicdb_open_{extra}".encode()


@lru_cache(maxsize=64)
def opening_query(extra: int) -> bytes:
    """``select set_config($1, $2, true), ...``: fixed settings, ``extra`` named ones, then the replay LSN."""
    calls = [f"set_config('{name}', ${i}, true)" for i, name in enumerate(_FIXED, start=1)]
    n = len(_FIXED)
    for k in range(extra):
        calls.append(f"set_config(${n + 2 * k + 1}, ${n + 2 * k + 2}, true)")
    calls.append("pg_last_wal_replay_lsn()::text")
    return ("select " + ", ".join(calls)).encode()


def opening_lsn_column(extra: int) -> int:
    """Index of ``pg_last_wal_replay_lsn()`` in the row of ``opening_query(extra)``."""
    return len(_FIXED) + extra


def opening_params(
    scope: Scope, *, statement_timeout_ms: int, idle_timeout_ms: int, encoding: str
) -> list[bytes | None]:
    """The parameters of ``opening_query(len(scope.settings))``, as text bytes."""
    values = [
        str(scope.clinic_id),
        scope.user_id or "",
        scope.request_id or "",
        str(int(statement_timeout_ms)),
        str(int(idle_timeout_ms)),
    ]
    for name, value in scope.settings.items():
        values += [name, value]
    return [v.encode(encoding) for v in values]


def flight(pgconn: pq.abc.PGconn, commands: Sequence[Command]) -> PQGen[list[pq.abc.PGresult]]:
    """Send ``commands`` in one pipeline (one Sync) and return one result per command.

    An error the server returned comes back as a result (with PIPELINE_ABORTED
    for the commands after it), read to the end so the connection stays
    usable: the caller decides whose error it is (see _deferred). Connection
    loss raises OperationalError.
    """
    pgconn.enter_pipeline_mode()
    try:
        for command in commands:
            if callable(command):
                command(pgconn)
                continue
            op, first, second = command
            if op == b"e":
                pgconn.send_query_prepared(first, second)
            elif op == b"p":
                pgconn.send_prepare(first, second)
            else:
                pgconn.send_query_params(first, second)
        pgconn.pipeline_sync()
        while pgconn.flush() != 0:
            ready = yield Wait.RW
            if ready & Ready.R:
                pgconn.consume_input()
        # psycopg's C generator reads each command's result (up to libpq's separating NULL), then the Sync.
        results: list[pq.abc.PGresult] = []
        for _ in commands:
            got = yield from generators.fetch_many(pgconn)
            if len(got) != 1 or got[0].status in _COPY:
                _not_one_result(pgconn, got)
            results.append(got[0])
        sync = yield from generators.fetch_many(pgconn)
        if not sync or sync[0].status != _SYNC:
            _not_one_result(pgconn, sync)
    finally:
        if pgconn.status == pq.ConnStatus.OK and pgconn.pipeline_status != pq.PipelineStatus.OFF:
            pgconn.exit_pipeline_mode()
    return results


def _not_one_result(pgconn: pq.abc.PGconn, got: Sequence[pq.abc.PGresult]) -> NoReturn:
    """What a pipeline command returning other than one result means: a lost connection, or COPY."""
    if got and got[0].status in _COPY:
        # libpq cannot leave COPY inside a pipeline: the connection is lost to the pool either way.
        pgconn.finish()
        raise e.NotSupportedError("COPY cannot run through execute() here: use cursor.copy()")
    if pgconn.status != pq.ConnStatus.OK:
        raise e.OperationalError(f"connection lost: {pgconn.get_error_message(pgconn._encoding)}")
    raise e.OperationalError(f"expected one result from a pipeline command, got {len(got)}")


def closing(pgconn: pq.abc.PGconn, message: bytes) -> PQGen[list[pq.abc.PGresult]]:
    """Send one closing message (simple query protocol); its results, one per statement.

    psycopg's own (C) generator does the I/O. An error result stops the
    server at that statement; ``raise_first_error`` turns it into an exception.
    """
    pgconn.send_query(message)
    gen: PQGen[list[pq.abc.PGresult]] = generators.execute(pgconn)
    return gen


def raise_first_error(results: Sequence[pq.abc.PGresult], conn: Any) -> list[pq.abc.PGresult]:
    """``results`` unchanged, or the first error among them raised as psycopg's exception (``conn``'s encoding)."""
    for res in results:
        if res.status == _FATAL:
            raise e.error_from_result(res, encoding=conn.info.encoding)
    return list(results)


def text_value(res: pq.abc.PGresult, column: int) -> str | None:
    """One text cell of the first row."""
    raw = res.get_value(0, column)
    return None if raw is None else bytes(raw).decode()
