"""The opening flight, deferred to the transaction's first statement and sent with it.

A transaction through the driver needs ``BEGIN`` and the ``set_config`` select
(the opening, see ``_wire``) before the app's first statement. Sent on its
own, the opening is one round trip, as psycopg's own ``BEGIN`` would be. The
driver instead *defers* it: checking a connection out only records the
opening on the connection (``state(conn).pending``), and the first statement
the app runs carries it. For the common case, ``cursor.execute()`` with psycopg's
default cursor, the opening and the statement travel in one pipeline flight
(``BEGIN``, opening, the statement, one Sync): a point read costs two round
trips (that flight, then the closing message) where a bare psycopg
transaction costs three. The clinic and the other settings stay server-side
parameters.

Every other way a transaction can start on the connection (``executemany``,
``copy``, ``stream``, a named cursor, ``connection.pipeline()``) goes through
psycopg's ``_start_query``, overridden here to send the opening on its own
first (or to queue it in psycopg's pipeline); ``connection.transaction()``,
which sends its own ``BEGIN``, is overridden by the driver's connection class
to send the opening first.
Nothing reaches the server before the opening: a statement can never run
without the clinic set. A block that runs no statement sends nothing at all.

This leans on psycopg internals (``BaseCursor._execute_gen``,
``BaseConnection._start_query``, the pipeline queues and the
prepared-statement manager); pyproject pins psycopg to the minor versions it
was checked against, and the driver suite runs each path
(``test_every_way_to_start_a_transaction_runs_with_the_clinic_set``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import adapt, pq
from psycopg._preparing import Prepare
from psycopg.abc import PQGen, Query

from clinicdb import _wire
from clinicdb._common import Opening, sync_prepared

if TYPE_CHECKING:
    from psycopg._connection_base import BaseConnection

_IDLE = pq.TransactionStatus.IDLE
_FATAL = pq.ExecStatus.FATAL_ERROR
_RETRY_ON = (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement)


class OpeningState:
    """What the driver keeps on each pooled connection."""

    def __init__(self) -> None:
        self.pending: Opening | None = None  # set at checkout, cleared when sent or when the block ends
        self.prepared: set[bytes] = set()  # names of the openings prepared on this connection
        self.replay: str | None = None  # the replica's replay LSN, as the opening read it
        self.owner: Any = None  # the pool this connection was checked out of, while it is out


def state(conn: Any) -> OpeningState:
    """The connection's opening state (``DeferredOpeningConnection`` makes it with the connection)."""
    found: OpeningState = conn.clinicdb
    return found


def looks_dead(pgconn: pq.abc.PGconn) -> bool:
    """True when an idle pooled connection was closed by its server (shutdown, crash, terminate).

    A server that goes away leaves its last message and end-of-file on the
    socket of every idle connection. Reading what is there (the socket never
    blocks) finds them without a round trip: the first read takes the message,
    the second meets end-of-file. Unlike a ``select()``, it keeps the GIL, so
    a checkout does not hand the interpreter to another thread.
    """
    if pgconn.status != pq.ConnStatus.OK:
        return True
    try:
        pgconn.consume_input()
        pgconn.consume_input()
    except psycopg.OperationalError:
        return True
    return pgconn.status != pq.ConnStatus.OK


def opening_gen(
    conn: BaseConnection[Any], extra: Sequence[_wire.Command] = (), st: OpeningState | None = None
) -> PQGen[list[pq.abc.PGresult]]:
    """Send the pending opening (and ``extra`` commands) in one flight; the results of ``extra``.

    Errors in ``extra`` are returned, not raised, for the caller to handle as
    its own; an error in the opening itself is raised. A prepared opening the
    session lost (``DISCARD ALL`` by a pooler) is prepared again, once.
    """
    if st is None:
        st = state(conn)
    opening = st.pending
    assert opening is not None
    st.pending = None
    pgconn = conn.pgconn
    for attempt in (1, 2):
        need = opening.prepared and opening.name not in st.prepared
        head = opening.commands(prepare=need)
        results = yield from _wire.flight(pgconn, [*head, *extra])
        n = len(head)
        failed = None
        for res in results[:n]:
            if res.status == _FATAL:
                failed = res
                break
        if failed is None:
            if need:
                st.prepared.add(opening.name)
            st.replay = _wire.text_value(results[n - 1], opening.lsn_column)
            return results[n:]
        error = psycopg.errors.error_from_result(failed, encoding=pgconn._encoding)
        if attempt == 2 or not isinstance(error, _RETRY_ON):
            raise error
        yield from _wire.closing(pgconn, b"rollback")
        sync_prepared(st.prepared, opening, error)
    raise AssertionError("unreachable")  # pragma: no cover


def flush_gen(conn: BaseConnection[Any]) -> PQGen[None]:
    """Send the pending opening on its own, if there is one and no transaction has started."""
    if state(conn).pending is not None and conn.pgconn.transaction_status == _IDLE:
        yield from opening_gen(conn)


class DeferredOpeningConnection:
    """Mixin for the driver's connection classes: any transaction start sends the pending opening first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clinicdb = OpeningState()

    def _start_query(self) -> PQGen[None]:
        conn: Any = self
        st = state(conn)
        if st.pending is None or conn.pgconn.transaction_status != _IDLE:
            yield from super()._start_query()  # type: ignore[misc]
        elif conn._pipeline is None:
            yield from opening_gen(conn)
        else:
            # Inside psycopg's pipeline (executemany, connection.pipeline()): queue the opening in it, unprepared,
            # the way psycopg queues its own BEGIN, and sync like psycopg does after BEGIN.
            opening, st.pending = st.pending, None
            for sql, params in opening.statements():
                conn._pipeline.command_queue.append(partial(conn.pgconn.send_query_params, sql, params))
                conn._pipeline.result_queue.append(None)
            yield from conn._pipeline._sync_gen()


class MergedExecuteCursor:
    """Mixin for the driver's cursor classes: ``execute()`` carries the pending opening in its own flight."""

    def _execute_gen(
        self, query: Query, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> PQGen[None]:
        cur: Any = self
        conn = cur._conn
        st = state(conn)
        if st.pending is None or conn._pipeline is not None or cur._pgconn.transaction_status != _IDLE:
            yield from super()._execute_gen(query, params, prepare=prepare, binary=binary)  # type: ignore[misc]
            return
        # What psycopg's BaseCursor._start_query does, minus the BEGIN (the opening carries it).
        if cur.closed:
            raise psycopg.InterfaceError("the cursor is closed")
        cur._reset()
        if not cur._last_query or (cur._last_query is not query):
            cur._last_query = None
            cur._tx = adapt.Transformer(cur)
        pgq = cur._convert_query(query, params)
        fmt = cur.format if binary is None else (pq.Format.BINARY if binary else pq.Format.TEXT)
        # What _maybe_prepare_gen does, with the statement added to the opening's flight.
        prep, name = cur._get_prepared(pgq, prepare)
        sends: list[_wire.Command] = []
        if prep is Prepare.NO:
            sends.append(
                lambda pg: pg.send_query_params(
                    pgq.query, pgq.params, param_formats=pgq.formats, param_types=pgq.types, result_format=fmt
                )
            )
        else:
            if prep is Prepare.SHOULD:
                sends.append(lambda pg: pg.send_prepare(name, pgq.query, param_types=pgq.types))
            sends.append(
                lambda pg: pg.send_query_prepared(name, pgq.params, param_formats=pgq.formats, result_format=fmt)
            )
        results = yield from opening_gen(conn, sends, st)
        if prep is Prepare.SHOULD:
            prepare_result, results = results[:1], results[1:]
            if prepare_result[0].status == pq.ExecStatus.FATAL_ERROR:
                cur._check_results(prepare_result)
        key = conn._prepared.maybe_add_to_cache(pgq, prep, name)
        if key is not None:
            conn._prepared.validate(key, prep, name, results)
        cur._check_results(results)
        cur._set_results(results)
        cur._last_query = query
        yield from conn._prepared.maintain_gen(conn)
