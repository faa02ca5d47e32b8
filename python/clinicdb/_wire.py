"""What the driver sends around the app's statements, through psycopg's documented libpq layer (``psycopg.pq``).

Opening: psycopg would send ``BEGIN`` on its own and wait for it. At checkout
the driver sends ``BEGIN`` *and* the prepared ``set_config`` select of the
scope (``_scope.settings_select``: clinic, user, request, the two timeouts,
extra settings, then the replay position of a standby, NULL on a primary) in one libpq pipeline
flight on ``conn.pgconn`` (Bind/Execute twice, one Sync): one round trip, as
psycopg's own BEGIN costs, and the values are server-side parameters. The
select is prepared when psycopg_pool opens the connection (``PREPARED``
shapes); when a pooler or psycopg's ``DEALLOCATE ALL`` dropped it, the
opening prepares it again in its next flight.

On Citus (``citus=True``: the driver found the extension, or was told) the
flight also carries, between ``BEGIN`` and the select, the ``SET LOCAL``
statements of ``clinicdb.citus.context_commands``: ``set_config`` does not
reach the workers, ``SET LOCAL`` under ``citus.propagate_set_commands =
'local'`` does. They take no parameters: the clinic is a validated uuid and
the user and request ids are escape-string literals. Still one round trip.

Closing: one simple-query message. Every one (commit or rollback, read or
write) also carries ``CLOSE ALL`` and ``DISCARD TEMP``: a ``WITH HOLD``
cursor or a temporary table the app made (temporary tables have no row level
security) must not survive into the next clinic's transaction on the same
pooled connection. A write's ``COMMIT`` is followed by
``select pg_current_wal_insert_lsn()``, the causal token, in the same message.

Nothing here waits: the drivers wait for the socket (``ready`` and
``ready_async``) and call ``take`` until it says the flight is complete.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import psycopg
from psycopg import pq

from clinicdb._scope import Scope, scope_values, settings_select
from clinicdb.citus import context_commands

_FATAL = pq.ExecStatus.FATAL_ERROR
_ABORTED = pq.ExecStatus.PIPELINE_ABORTED
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_SQLSTATE = pq.DiagnosticField.SQLSTATE
_OK = pq.ConnStatus.OK

# Closing messages (simple query protocol, several statements each). CLEAN_SESSION drops the session state
# that could carry one clinic's rows into another's transaction; COMMIT_WITH_TOKEN's last result is the token.
CLEAN_SESSION = b"close all; discard temp"
COMMIT_READ = CLEAN_SESSION + b"; commit"
COMMIT_STANDBY_READ = b"close all; commit"  # a hot standby holds no temporary tables
COMMIT_WITH_TOKEN = CLEAN_SESSION + b"; commit; select pg_current_wal_insert_lsn()::text"
ROLLBACK = b"rollback; " + CLEAN_SESSION
REPLAY_COLUMN = ", case when pg_is_in_recovery() then pg_last_wal_replay_lsn()::text end"
REPLAY_LSN = ("select" + REPLAY_COLUMN[1:]).encode()

# Openings with up to this many extra settings are prepared on every pooled connection; more go unnamed.
PREPARED = 2
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


@lru_cache(maxsize=16)
def opening_query(extra: int) -> bytes:
    """The opening select: the scope's settings, the timeouts, then the replay position (NULL on a primary).

    A promoted server keeps answering ``pg_last_wal_replay_lsn()`` with where
    its recovery ended, so ``pg_is_in_recovery()`` decides.
    """
    return (settings_select(extra, timeouts=True, dollar=True) + REPLAY_COLUMN).encode()


def opening_name(extra: int) -> bytes:
    return f"clinicdb_open_{extra}".encode()


def prepare_statements() -> str:
    """SQL that prepares the opening selects on a new pooled connection (run by the pool's ``configure``)."""
    return "; ".join(f"prepare {opening_name(n).decode()} as {opening_query(n).decode()}" for n in range(PREPARED + 1))


@dataclass(frozen=True)
class Opening:
    """BEGIN and the set_config select with its parameters: what one transaction sends before the app's statements."""

    begin: bytes
    # A list (psycopg 3.2's C libpq wrapper takes no tuple); never changed, never in repr (extra settings may be keys).
    params: list[bytes | None] = field(repr=False)
    extra: int  # how many extra settings
    name: bytes | None  # the prepared select, or None to send it unnamed
    # Citus: the SET LOCAL statements sent after BEGIN (empty on a single node).
    sets: tuple[bytes, ...] = ()

    @property
    def lsn_column(self) -> int:
        """Where ``pg_last_wal_replay_lsn()`` is in the select's row."""
        return 5 + self.extra

    @classmethod
    def build(
        cls,
        scope: Scope,
        *,
        read: bool,
        isolation: str | None,
        timeouts: tuple[int, int],
        prepared: bool,
        citus: bool = False,
    ) -> Opening:
        extra = len(scope.settings)
        sets = context_commands(scope.clinic_id, scope.user_id, scope.request_id) if citus else []
        values = [*scope_values(scope)[:3], str(timeouts[0]), str(timeouts[1]), *scope_values(scope)[3:]]
        named = prepared and extra <= PREPARED
        return cls(
            begin_command(read_only=read, isolation=isolation),
            [v.encode() for v in values],
            extra,
            opening_name(extra) if named else None,
            tuple(command.encode() for command in sets),
        )

    def send(self, pgconn: pq.abc.PGconn, *, prepare: bool = False, rollback_first: bool = False) -> None:
        """Queue the flight in pipeline mode and sync (``prepare``: its select was dropped from the session)."""
        pgconn.enter_pipeline_mode()
        if rollback_first:
            pgconn.send_query_params(b"rollback", None)
        if self.name is not None and prepare:
            pgconn.send_prepare(self.name, opening_query(self.extra))
        pgconn.send_query_params(self.begin, None)
        for command in self.sets:
            pgconn.send_query_params(command, None)
        if self.name is None:
            pgconn.send_query_params(opening_query(self.extra), self.params)
        else:
            pgconn.send_query_prepared(self.name, self.params)
        pgconn.pipeline_sync()


def take(pgconn: pq.abc.PGconn, results: list[pq.abc.PGresult], *, pipeline: bool) -> bool:
    """Move the results libpq has complete into ``results``; True once the flight is over.

    A pipeline ends with its Sync (pipeline mode is left then); a simple query
    with the NULL after its last result. Call ``pgconn.consume_input()`` after
    the socket is readable and call again while this returns False.
    """
    while not pgconn.is_busy():
        res = pgconn.get_result()
        if res is None:
            if pipeline:
                continue
            return True
        if res.status == _SYNC:
            pgconn.exit_pipeline_mode()
            return True
        results.append(res)
    return False


def error_from(res: pq.abc.PGresult) -> psycopg.Error:
    """The psycopg exception (SQLSTATE class, ``diag``) for an error result."""
    state = res.error_field(_SQLSTATE)
    message = (res.error_message or b"").decode("utf-8", "replace").strip()
    try:
        cls: type[psycopg.Error] = psycopg.errors.lookup(state.decode()) if state else psycopg.OperationalError
    except KeyError:
        cls = psycopg.DatabaseError
    return cls(message, info=res, encoding="utf-8")


def first_error(results: Sequence[pq.abc.PGresult], pgconn: pq.abc.PGconn) -> psycopg.Error | None:
    """The first error among ``results`` (or the lost connection) as an exception; None when all went well."""
    aborted = False
    for res in results:
        status = res.status
        if status == _FATAL:
            return error_from(res)
        aborted = aborted or status == _ABORTED
    if pgconn.status != _OK:
        return psycopg.OperationalError("the connection to the server was lost")
    if aborted:
        return psycopg.OperationalError("the server aborted the driver's commands without saying why")
    return None


def committed(results: Sequence[pq.abc.PGresult]) -> bool:
    """Did a closing message's ``COMMIT`` complete? (An aborted transaction's COMMIT answers ``ROLLBACK``.)

    Decided from the COMMIT's own result, not from the message's first error:
    what runs after it (the causal token's select) can still fail, by a
    statement timeout or a lost connection, once the write is durable.
    """
    return any(res.command_status == b"COMMIT" for res in results)


def text_value(res: pq.abc.PGresult, column: int) -> str | None:
    """One text cell of the first row."""
    raw = res.get_value(0, column)
    return None if raw is None else bytes(raw).decode()


_POLL = getattr(select, "poll", None)


def ready(fd: int, write: bool = False) -> None:
    """Block (without the GIL) until ``fd`` is readable, or writable too when ``write``."""
    if _POLL is None:  # pragma: no cover - Windows
        select.select([fd], [fd] if write else [], [])
        return
    poller = _POLL()
    poller.register(fd, select.POLLIN | (select.POLLOUT if write else 0))
    poller.poll()


async def ready_async(fd: int, write: bool = False) -> None:
    """``ready`` for asyncio: wait on the running loop."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, wake)
    if write:
        loop.add_writer(fd, wake)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        if write:
            loop.remove_writer(fd)
