"""The clinicdb driver: ``AsyncClinicDB`` over psycopg's ``AsyncConnectionPool``.

Policy lives in the shared modules (``_scope`` validates, ``_wire`` builds the
opening and closing flights, ``_routing`` picks servers, ``_retry`` decides
what may run again, ``metrics`` counts, ``health`` checks); the driver does the
I/O, on psycopg's public API: pools, connections and cursors, and
``conn.pgconn`` (``psycopg.pq``) for the opening and closing flights.

asyncio.py is the source of both drivers: sync.py is generated from it by
tools/async_to_sync.py (``make generate``), and ``make lint`` fails when the
two differ. In asyncio.py a line ending in ``# NOSYNC`` is async-only, and a
``# sync: ...`` comment line is sync-only code.
"""

from __future__ import annotations

import asyncio  # NOSYNC
import contextlib
import datetime
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import AsyncRowFactory
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from clinicdb import _bulk, _login, _retry, _wire, citus
from clinicdb._config import Options, resolve_options
from clinicdb._routing import CAUSAL, NO_REPLICAS, Router
from clinicdb._scope import Scope, clinic_id_arg, resolve
from clinicdb._tokens import CausalToken, later, parse_lsn
from clinicdb._url import seeks_standby, split_urls
from clinicdb.encryption import KeyringCache, is_stale_keyring
from clinicdb.errors import CommitOutcomeUnknown, NotSent, PoolExhausted, TransactionAborted, UnsafeLogin
from clinicdb.health import acheck_server, describe_url, summarize
from clinicdb.metrics import Metrics
from clinicdb.settings import env

# sync: import threading
logger = logging.getLogger("clinicdb.driver")
T = TypeVar("T")
AConn = psycopg.AsyncConnection[Any]
_INTRANS = pq.TransactionStatus.INTRANS
_INERROR = pq.TransactionStatus.INERROR
PRIMARY, REPLICA = "primary", "replica"
_PROMOTED_UNDER_STANDBY_URL = "the server this standby URL reached was promoted; reconnecting to find the standby"
_SETTLE = (
    "select exists (select 1 from clinicdb.audit_log where clinic_id = %s and request_id = %s"
    " and action in ('insert', 'update', 'delete')"
)


class _AsyncServer:
    """One server the driver uses: its name (health, metrics), URL and pool (renewed when it must)."""

    def __init__(self, name: str, url: str, pool: AsyncConnectionPool[AConn]) -> None:
        self.name, self.url, self.pool = name, url, pool


async def _flight(pgconn: pq.abc.PGconn, *, pipeline: bool) -> list[pq.abc.PGresult]:
    """Flush what was queued on ``pgconn`` and read until the flight is complete; its results."""
    results: list[pq.abc.PGresult] = []
    if pgconn.flush():  # rare: more than the socket takes at once; read meanwhile
        while pgconn.flush():
            await _wire.ready_async(pgconn.socket, write=True)
            pgconn.consume_input()
        if _wire.take(pgconn, results, pipeline=pipeline):
            return results
    while True:  # the answer is a round trip away: wait first
        await _wire.ready_async(pgconn.socket)
        pgconn.consume_input()
        if _wire.take(pgconn, results, pipeline=pipeline):
            return results


async def _send(conn: AConn, message: bytes) -> list[pq.abc.PGresult]:
    """One closing message (simple query protocol); its results, or its first error raised."""
    conn.pgconn.send_query(message)
    results = await _flight(conn.pgconn, pipeline=False)
    error = _wire.first_error(results, conn.pgconn)
    if error is not None:
        raise error
    return results


async def _open(conn: AConn, opening: _wire.Opening) -> str | None:
    """Send the opening; the server's replay position (None on a primary). A lost prepared select is prepared again."""
    pgconn = conn.pgconn
    opening.send(pgconn)
    results = await _flight(pgconn, pipeline=True)
    error = _wire.first_error(results, pgconn)
    if isinstance(error, psycopg.errors.InvalidSqlStatementName) and opening.name is not None:
        opening.send(pgconn, prepare=True, rollback_first=True)  # DISCARD ALL or DEALLOCATE ALL dropped it
        results = await _flight(pgconn, pipeline=True)
        error = _wire.first_error(results, pgconn)
    if error is not None:
        raise error
    return _wire.text_value(results[-1], opening.lsn_column)


class _AsyncTransaction:
    """One scoped transaction: ``async with`` opens it and yields the cursor; leaving commits or rolls back."""

    __slots__ = ("conn", "cursor", "db", "isolation", "pool", "primary", "read", "route", "row_factory", "scope",
                 "server", "started", "token")  # fmt: skip

    def __init__(
        self,
        db: AsyncClinicDB,
        scope: Scope,
        *,
        read: bool,
        token: CausalToken | None = None,
        isolation: str | None = None,
        row_factory: AsyncRowFactory[Any] | None = None,
        primary: bool = False,
    ) -> None:
        self.db, self.scope, self.read, self.token = db, scope, read, token
        self.isolation, self.row_factory, self.primary = isolation, row_factory, primary

    async def __aenter__(self) -> psycopg.AsyncCursor[Any]:
        db = self.db
        if db.keyring is not None:
            self.scope = await db._with_keyring(self.scope, db.keyring)
        self.started = time.perf_counter()
        opening = db._opening_for(self.scope, self.read, self.isolation)
        self.conn, self.server, self.pool, self.route = await db._checkout(opening, self.token, self.read, self.primary)
        self.cursor = self.conn.cursor(row_factory=self.row_factory) if self.row_factory else self.conn.cursor()
        return self.cursor

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        db, conn = self.db, self.conn
        ok = False
        try:
            await self.cursor.close()
            if exc is None:
                if self.read:
                    await db._commit_read(conn, standby=self.route == REPLICA)
                else:
                    await db._commit_write(conn, self.scope, self.started)
                ok = True
            else:
                db._failed(self.route, self.server, self.scope, exc)
                if not conn.broken and not conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        await _send(conn, _wire.ROLLBACK)
        finally:
            await self.pool.putconn(conn)
            what = "read" if self.read else "write"
            db._metrics.transaction(self.route, time.perf_counter() - self.started, ok, self.scope.clinic_id, what)


class AsyncClinicDB:
    """One object for a multi-tenant app: clinic-scoped transactions, read routing, retries, health, metrics.

    Example::

        async with AsyncClinicDB.from_env() as db:  # CLINICDB_DATABASE_URL, CLINICDB_REPLICA_URLS
            async with db.write(clinic_id, user_id="dr-lee") as cur:
                await cur.execute("insert into patients (mrn, given_name, family_name) values ('N-9', 'Ann', 'Lee')")
            async with db.read(clinic_id) as cur:  # a replica that has replayed the write, else the primary
                await cur.execute("select * from patients where mrn = %s", ("N-9",))

    Settings: ``options=Options(...)`` (or ``Options.from_env()``), or the same
    fields as keywords (``max_size=4``), which override the environment.

    Connect as a login that is a member of ``clinicdb_app``: a superuser or
    BYPASSRLS login is refused with ``UnsafeLogin`` (RLS would not apply).

    With ``keyring=KeyringCache(master_key)`` every transaction carries its
    clinic's keyring (``app.clinic_keyring``), loaded once per clinic on a
    primary connection: encrypted columns are read and written without the
    master key in the transaction. A keyring made stale by a rotation, shred
    or re-wrap (SQLSTATE 55K01) is dropped from the cache, and
    ``run_read``/``run_write`` reload it and run again.
    """

    def __init__(
        self,
        primary_url: str,
        replica_urls: Sequence[str] = (),
        *,
        options: Options | None = None,
        # sync: open: bool = True,
        keyring: KeyringCache | None = None,
        unsafe_allow_rls_bypass_login: bool = False,
        config: Options | None = None,
        **settings: Any,
    ) -> None:
        if not isinstance(primary_url, str) or not primary_url.strip():
            raise ValueError("primary_url must be a libpq URL such as postgresql://clinicdb_app_user@host/clinicdb")
        if isinstance(replica_urls, str) or not all(isinstance(u, str) and u.strip() for u in replica_urls):
            raise ValueError("replica_urls must be a list of non-empty URLs (not one string)")
        self.options = resolve_options(options or config, settings)
        self.keyring = keyring
        self._allow_bypass = unsafe_allow_rls_bypass_login
        self._refusal: UnsafeLogin | None = None
        self._primary_url = primary_url  # as configured; self.primary.url is where writes go now
        self.primary = self._server(PRIMARY, primary_url)
        self.replicas = [self._server(f"replica{i}", url) for i, url in enumerate(replica_urls, 1)]
        opts = self.options
        self.router = Router(
            [r.name for r in self.replicas],
            max_lag=opts.max_replica_lag,
            check_interval=opts.replica_check_interval,
            backoff=opts.breaker_backoff,
            max_backoff=opts.breaker_max_backoff,
        )
        self._metrics = Metrics(opts.slow_transaction)
        self._token: ContextVar[CausalToken | None] = ContextVar(f"clinicdb_token_{id(self)}", default=None)
        self._timeouts = (opts.statement_timeout_ms, opts.idle_in_transaction_timeout_ms)
        self._cached_opening = functools.lru_cache(maxsize=4096)(self._build)
        # Citus mode: the opening sets the clinic with SET LOCAL statements that reach the workers. Forced by
        # options.citus, else switched on by _configure when a connection finds the citus extension.
        self._citus = opts.citus is True
        self._health: dict[str, Any] | None = None
        self._health_at = 0.0
        self._health_lock = asyncio.Lock()  # NOSYNC
        self._monitor: asyncio.Task[None] | None = None  # NOSYNC
        # sync: self._health_lock = threading.Lock()
        # sync: self._closing = threading.Event()
        # sync: self._monitor: threading.Thread | None = None
        self._monitor_conns: dict[str, AConn | None] = {}
        self._primary_host: str | None = None  # host:port that answered the configured primary URL last
        self._pool_errors: dict[str, int] = {}  # each pool's failed connection attempts when last exhausted
        self._opened = False
        # sync: if open:
        # sync:     self.open()

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncClinicDB:
        """From ``CLINICDB_DATABASE_URL``, ``CLINICDB_REPLICA_URLS`` (whitespace-separated) and ``CLINICDB_*`` settings.

        Opened by ``open()`` or the context manager (the sync driver also opens on creation unless ``open=False``).
        """
        primary = env("CLINICDB_DATABASE_URL")
        if not primary:
            raise ValueError('CLINICDB_DATABASE_URL is not set: export it, or run eval "$(clinicdb dev env)"')
        return cls(primary, split_urls(env("CLINICDB_REPLICA_URLS") or ""), **kwargs)

    def _server(self, name: str, url: str) -> _AsyncServer:
        return _AsyncServer(name, url, self._pool(name, url))

    def _pool(self, name: str, url: str) -> AsyncConnectionPool[AConn]:
        pool: AsyncConnectionPool[AConn] = AsyncConnectionPool(
            url,
            min_size=self.options.min_size,
            max_size=self.options.max_size,
            timeout=self.options.acquire_timeout,
            kwargs=self.options.pool_kwargs(),
            configure=self._configure,
            open=False,
            name=f"clinicdb-{name}",
        )
        return pool

    # -- lifecycle ----------------------------------------------------------------
    async def open(self) -> None:
        """Check the login, open the pools, measure the replicas once, start the background check."""
        if self._opened:
            return
        timeout = max(1, round(self.options.health_timeout))
        async with await psycopg.AsyncConnection.connect(self.primary.url, connect_timeout=timeout) as conn:
            await self._configure(conn)
        for server in (self.primary, *self.replicas):
            await server.pool.open(wait=False)
        self._opened = True
        await self._check_servers()
        if self.replicas:
            self._monitor = asyncio.create_task(self._monitor_loop(), name="clinicdb-replica-check")  # NOSYNC
            # sync: self._monitor = threading.Thread(target=self._monitor_loop, name="clinicdb-replica-check")
            # sync: self._monitor.daemon = True
            # sync: self._monitor.start()

    async def close(self) -> None:
        """Stop the background check and close every pool (idempotent)."""
        # sync: self._closing.set()
        if self._monitor is not None:
            self._monitor.cancel()  # NOSYNC
            with contextlib.suppress(asyncio.CancelledError):  # NOSYNC
                await self._monitor  # NOSYNC
            # sync: self._monitor.join(timeout=10)
            self._monitor = None
        for conn in self._monitor_conns.values():
            if conn is not None:
                await conn.close()
        self._monitor_conns.clear()
        for server in (self.primary, *self.replicas):
            await server.pool.close()
        self._opened = False

    async def __aenter__(self) -> AsyncClinicDB:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _configure(self, conn: AConn) -> None:
        """Every new connection: refuse a login RLS would not apply to, detect Citus, prepare the opening selects."""
        cur = await conn.execute(_login.BYPASS_SQL)
        row = await cur.fetchone()
        try:
            _login.judge(row, server=describe_url(conn.info.dsn), allow=self._allow_bypass)
        except UnsafeLogin as exc:
            self._refusal = exc
            await conn.rollback()
            raise
        if self.options.citus is None and not self._citus:
            cur = await conn.execute(citus.INSTALLED_SQL)
            found = await cur.fetchone()
            if found and found[0]:
                # Sticky: a set_config-only opening would see no row on the workers (it fails closed, never open).
                self._citus = True
                self._cached_opening.cache_clear()
        if self.options.prepare_threshold is not None:
            await conn.execute(_wire.prepare_statements())
        await conn.commit()

    # -- scoped transactions ------------------------------------------------------
    def read(
        self,
        clinic_id: Any = None,
        *,
        user_id: str | None = None,
        request_id: str | None = None,
        settings: Mapping[str, str] | None = None,
        after: CausalToken | None = None,
        isolation: str | None = None,
        row_factory: AsyncRowFactory[Any] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncCursor[Any]]:
        """A read-only transaction for one clinic, on a fit replica (or the primary); yields a cursor.

        The transaction is open, with the clinic set, when the cursor is
        handed over. ``after`` (and, with read-your-writes on, this caller's
        last write) sends the read only where that write is visible. Not
        retried: use ``run_read`` for that.
        """
        scope = resolve(clinic_id, user_id=user_id, request_id=request_id, settings=settings)
        token = self._token.get() if after is None and self.options.read_your_writes else self._read_token(after)
        return _AsyncTransaction(self, scope, read=True, token=token, isolation=isolation, row_factory=row_factory)

    def write(
        self,
        clinic_id: Any = None,
        *,
        user_id: str | None = None,
        request_id: str | None = None,
        settings: Mapping[str, str] | None = None,
        isolation: str | None = None,
        row_factory: AsyncRowFactory[Any] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncCursor[Any]]:
        """A transaction for one clinic on the primary; yields a cursor, commits when the block ends.

        After it, ``last_write_token()`` is the causal token of this commit.
        Not retried: use ``run_write`` for that.
        """
        scope = resolve(clinic_id, user_id=user_id, request_id=request_id, settings=settings)
        return _AsyncTransaction(self, scope, read=False, isolation=isolation, row_factory=row_factory)

    async def run_read(
        self,
        fn: Callable[[psycopg.AsyncCursor[Any]], Awaitable[T]],
        clinic_id: Any = None,
        *,
        user_id: str | None = None,
        request_id: str | None = None,
        settings: Mapping[str, str] | None = None,
        after: CausalToken | None = None,
        isolation: str | None = None,
        row_factory: AsyncRowFactory[Any] | None = None,
    ) -> T:
        """``fn(cursor)`` in a read transaction, run again on 40001/40P01, a lost connection or nothing sent."""
        scope = resolve(clinic_id, user_id=user_id, request_id=request_id, settings=settings)
        token = self._read_token(after)
        return await self._run(fn, scope, True, token=token, isolation=isolation, row_factory=row_factory)

    async def run_write(
        self,
        fn: Callable[[psycopg.AsyncCursor[Any]], Awaitable[T]],
        clinic_id: Any = None,
        *,
        user_id: str | None = None,
        request_id: str | None = None,
        settings: Mapping[str, str] | None = None,
        isolation: str | None = None,
        row_factory: AsyncRowFactory[Any] | None = None,
    ) -> T:
        """``fn(cursor)`` in a write transaction, run again on 40001/40P01 or when nothing was sent; returns its result.

        ``fn`` may run more than once: keep side effects outside the database
        out of it. A commit whose outcome is unknown raises
        ``CommitOutcomeUnknown`` and is never retried (see ``settle``).
        """
        scope = resolve(clinic_id, user_id=user_id, request_id=request_id, settings=settings)
        return await self._run(fn, scope, False, isolation=isolation, row_factory=row_factory)

    async def _run(
        self, fn: Callable[[psycopg.AsyncCursor[Any]], Awaitable[T]], scope: Scope, read: bool, **kwargs: Any
    ) -> T:
        """The retry loop of run_read/run_write: whole transactions, jittered capped back-off."""
        attempt = 1
        while True:
            try:
                async with _AsyncTransaction(self, scope, read=read, **kwargs) as cur:
                    return await fn(cur)
            except Exception as exc:
                stale = self.keyring is not None and is_stale_keyring(exc)  # dropped by the transaction: reload
                if attempt >= self.options.retry_attempts or not (stale or _retry.retryable(exc, read=read)):
                    raise
                self._metrics.retry("read" if read else "write")
                opts = self.options
                await asyncio.sleep(_retry.delay(attempt, base=opts.retry_backoff, cap=opts.retry_max_backoff))
                attempt += 1

    async def copy_rows(
        self,
        clinic_id: Any,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        user_id: str | None = None,
        request_id: str | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> int:
        """Load ``rows`` into ``table`` for one clinic in one transaction: COPY to a temp table, one INSERT ... SELECT.

        Policies and triggers apply as to any insert. Returns the number of rows inserted. Not retried.
        """
        scope = resolve(clinic_id, user_id=user_id, request_id=request_id, settings=settings)
        _bulk.table_identifier(table)
        _bulk.column_identifiers(columns)
        async with _AsyncTransaction(self, scope, read=False) as cur:
            await cur.execute(_bulk.HAS_CLINIC_ID, (table,))
            has = await cur.fetchone()
            fill = bool(has and has[0]) and "clinic_id" not in columns
            create, copy_sql, insert = _bulk.statements(table, columns, fill_clinic_id=fill)
            await cur.execute(create)
            async with cur.copy(copy_sql) as copy:
                for row in rows:
                    await copy.write_row(row)
            await cur.execute(insert, (scope.clinic_id,) if fill else None)
            return cur.rowcount

    async def settle(self, request_id: str, clinic_id: Any = None, *, since: datetime.datetime | None = None) -> bool:
        """Did a write tagged ``request_id`` commit? Asks the audit trail on the primary, for one clinic.

        For after ``CommitOutcomeUnknown``: ``db.settle(exc.request_id,
        exc.clinic_id, since=exc.started_at)``. True when an audit row of an
        insert, update or delete carries the request id; so the write must
        have passed ``request_id=`` and changed an audited table. ``since``
        (default: the whole trail) narrows the search to audit rows from a
        minute before that time on.
        """
        if not isinstance(request_id, str) or not request_id:
            raise ValueError("settle needs the request_id the write was made with (db.write(..., request_id=...))")
        scope = resolve(clinic_id)
        query, params = _SETTLE + ")", [scope.clinic_id, request_id]
        if since is not None:  # the (clinic_id, logged_at) index then finds the rows
            query, params = _SETTLE + " and logged_at >= %s)", [*params, since - datetime.timedelta(minutes=1)]
        async with _AsyncTransaction(self, scope, read=True, primary=True) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
        return bool(row and row[0])

    def last_write_token(self) -> CausalToken | None:
        """The causal token of this caller's (thread's or task's) latest write through this object."""
        return self._token.get()

    def _read_token(self, after: CausalToken | None) -> CausalToken | None:
        if after is not None and not isinstance(after, CausalToken):
            raise ValueError(f"after must be a CausalToken (from last_write_token()), got {type(after).__name__}")
        return later(after, self._token.get() if self.options.read_your_writes else None)

    # -- the transaction ----------------------------------------------------------
    def _build(self, scope: Scope, read: bool, isolation: str | None) -> _wire.Opening:
        prepared = self.options.prepare_threshold is not None
        return _wire.Opening.build(
            scope, read=read, isolation=isolation, timeouts=self._timeouts, prepared=prepared, citus=self._citus
        )

    def _opening_for(self, scope: Scope, read: bool, isolation: str | None) -> _wire.Opening:
        # Extra settings may hold keys: such openings are built per transaction and never cached.
        return self._build(scope, read, isolation) if scope.settings else self._cached_opening(scope, read, isolation)

    async def _checkout(
        self, opening: _wire.Opening, token: CausalToken | None, read: bool, primary: bool
    ) -> tuple[AConn, _AsyncServer, AsyncConnectionPool[AConn], str]:
        """A connection with the transaction open: a fit replica for a read when there is one, else the primary."""
        tried: frozenset[int] = frozenset()
        waited = False
        while read and not primary:
            route = self.router.pick(token, exclude=tried)
            index, wait_for = route.replica, None
            if index is None and route.reason == CAUSAL and token and self.options.causal_wait > 0 and not waited:
                waited, wait_for = True, token
                index = self.router.waitable(token, exclude=tried)
            if index is None:
                if route.reason != NO_REPLICAS and route.reason is not None:
                    self._metrics.failover(route.reason)
                break
            got = await self._open_replica(index, opening, wait_for)
            if got is not None:
                return got
            tried |= {index}
        server = self.primary
        lost: psycopg.Error | None = None
        for _ in range(min(3, self.options.max_size) + 1):  # the pool replaces each dead connection it gets back
            pool = server.pool
            conn = await self._getconn(server, self.options.acquire_timeout, probe=True)
            try:
                replay = await _open(conn, opening)
            except BaseException as exc:
                await self._discard(pool, conn, midway=not isinstance(exc, psycopg.Error))
                if not isinstance(exc, psycopg.Error) or not _retry.connection_lost(exc):
                    raise
                lost = exc  # closed while idle (a restart, a terminated backend): nothing of the block ran yet
                self._metrics.reopened()
                continue
            if replay is not None:  # the "primary" is a standby: it was demoted, or the primary moved
                await self._discard(pool, conn)
                await self._renew_pool(server)
                raise NotSent(
                    f"the primary ({describe_url(server.url)}) answered as a standby (failover?): its pool was"
                    " renewed; nothing was sent, run the transaction again (run_read/run_write do)"
                )
            return conn, server, pool, PRIMARY
        raise NotSent(f"every pooled connection to the primary tried had been closed (last: {lost}): try again")

    async def _getconn(self, server: _AsyncServer, timeout: float, *, probe: bool = False) -> AConn:
        """A pooled connection of ``server``; PoolExhausted (``probe``: saying what the server does) if none came."""
        pool = server.pool
        try:
            return await pool.getconn(timeout=timeout)
        except PoolClosed as exc:  # renewed while we waited (the server moved), unless the driver was closed
            if not self._opened:
                raise
            raise NotSent(f"the {server.name} pool was renewed (the server moved): nothing was sent") from exc
        except PoolTimeout as exc:
            if self._refusal is not None:
                raise self._refusal from exc
            if pool is not server.pool:
                raise NotSent(f"the {server.name} pool was renewed (the server moved): nothing was sent") from exc
            raise await self._exhausted(server, timeout, probe) from exc

    async def _exhausted(self, server: _AsyncServer, timeout: float, probe: bool) -> PoolExhausted:
        """PoolExhausted with the pool's numbers and, when it could not connect, what the server is doing."""
        stats = server.pool.get_stats()
        size, most = stats.get("pool_size", 0), stats.get("pool_max", 0)
        idle, waiting = stats.get("pool_available", 0), stats.get("requests_waiting", 0)
        errors = stats.get("connections_errors", 0)
        failing = size == 0 or errors > self._pool_errors.get(server.name, 0)  # its tries to connect failed of late
        self._pool_errors[server.name] = errors
        why = "every connection is busy; raise CLINICDB_POOL_MAX_SIZE or keep transactions shorter"
        if probe:  # is the server there at all?
            seen = await acheck_server(server.name, server.name, server.url, min(1.0, self.options.health_timeout))
            if not seen["up"]:
                failing, why = True, f"the server is down or unreachable ({seen['error']})"
            elif seen["in_recovery"]:
                failing, why = True, "the server answers as a standby: failing over"
            elif failing:
                why = "the pool's tries to connect failed and the server answers now: it was restarting or moving"
            promoted = [str(r["name"]) for r in self.router.snapshot() if r["promoted"]]
            if promoted:
                why += f"; {', '.join(promoted)} answered as a primary: failing over (see db.health())"
        elif failing:
            why = "the pool's tries to connect failed: the server is down or restarting"
        error = PoolExhausted(
            f"no connection from the {server.name} pool within {timeout:.2f}s: {size} open of max {most},"
            f" {idle} idle, {waiting} other requests waiting; {why}"
        )
        error.server_down = failing
        return error

    async def _open_replica(
        self, index: int, opening: _wire.Opening, wait_for: CausalToken | None
    ) -> tuple[AConn, _AsyncServer, AsyncConnectionPool[AConn], str] | None:
        """The read opened on replica ``index``, or None (and the reason recorded) to try another route."""
        server = self.replicas[index]
        pool = server.pool
        try:
            conn = await self._getconn(server, self.options.replica_acquire_timeout)
        except PoolExhausted as exc:
            if exc.server_down:
                self._replica_failed(index, exc)
            return None
        except NotSent:
            return None
        try:
            replay = await _open(conn, opening)
        except BaseException as exc:
            await self._discard(pool, conn, midway=not isinstance(exc, psycopg.Error))
            if isinstance(exc, psycopg.Error) and _retry.connection_lost(exc):
                self._replica_failed(index, exc)
                return None
            raise
        if replay is None:  # out of recovery: promoted
            if seeks_standby(server.url):  # the URL finds the standby on a new connection: this one is stale
                await self._discard(pool, conn, midway=True)
                self._replica_failed(index, RuntimeError(_PROMOTED_UNDER_STANDBY_URL))
                return None
            await self._discard(pool, conn)
            if self.router.record_promoted(index):
                logger.warning("clinicdb: replica %s answered as a primary (promoted): no reads go there", server.name)
            return None
        self.router.observe_replay_text(index, replay)
        if wait_for is not None and not await self._wait_replay(conn, replay, wait_for):
            await self._discard(pool, conn)
            return None
        return conn, server, pool, REPLICA

    async def _wait_replay(self, conn: AConn, replay: str, token: CausalToken) -> bool:
        deadline = time.monotonic() + self.options.causal_wait
        while parse_lsn(replay) < token.lsn:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.002)
            found = _wire.text_value((await _send(conn, _wire.REPLAY_LSN))[0], 0)
            replay = found or replay
        return True

    async def _discard(self, pool: AsyncConnectionPool[AConn], conn: AConn, *, midway: bool = False) -> None:
        """Back to the pool with nothing of the transaction left: rolled back, or closed when that fails.

        ``midway``: interrupted inside a flight (cancelled, KeyboardInterrupt): the protocol state is unknown, close.
        """
        if midway:
            await conn.close()
        elif not conn.broken and not conn.closed:
            try:
                await _send(conn, b"rollback")
            except psycopg.Error:
                await conn.close()
        await pool.putconn(conn)

    async def _renew_pool(self, server: _AsyncServer, url: str | None = None) -> None:
        """A fresh pool for ``server`` (to ``url``): the old one may be in its reconnect back-off or point elsewhere."""
        old = server.pool
        server.url = url or server.url
        server.pool = self._pool(server.name, server.url)
        await server.pool.open(wait=False)
        await old.close(timeout=1.0)

    def _failed(self, route: str, server: _AsyncServer, scope: Scope, exc: BaseException) -> None:
        """What an error inside a block says about the server and the keyring."""
        if route == REPLICA and _retry.connection_lost(exc):
            self._replica_failed(self.replicas.index(server), exc)
        if self.keyring is not None and is_stale_keyring(exc):
            self.keyring.invalidate(scope.clinic_id)

    def _replica_failed(self, index: int, exc: BaseException) -> None:
        error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if self.router.record_failure(index, error):
            self._metrics.breaker_trip()
            logger.warning("clinicdb: replica %s marked unhealthy: %s", self.replicas[index].name, error)

    async def _commit_read(self, conn: AConn, *, standby: bool) -> None:
        # A read changes nothing: a caught error inside the block just means rolling back.
        status = conn.pgconn.transaction_status
        if status == _INERROR:
            await _send(conn, _wire.ROLLBACK)
        elif status == _INTRANS:
            await _send(conn, _wire.COMMIT_STANDBY_READ if standby else _wire.COMMIT_READ)
        else:  # the block ended the transaction itself: still leave nothing behind
            await _send(conn, _wire.CLEAN_SESSION)

    async def _commit_write(self, conn: AConn, scope: Scope, started: float) -> None:
        status = conn.pgconn.transaction_status
        if status == _INERROR:
            await _send(conn, _wire.ROLLBACK)
            raise TransactionAborted(
                "a statement failed inside the block and the error was caught: the transaction was rolled back,"
                " nothing in it was committed"
            )
        if status != _INTRANS:  # the block ended the transaction itself: still leave nothing behind
            await _send(conn, _wire.CLEAN_SESSION)
            return
        error: psycopg.Error | None
        try:
            conn.pgconn.send_query(_wire.COMMIT_WITH_TOKEN)
            results = await _flight(conn.pgconn, pipeline=False)
            error = _wire.first_error(results, conn.pgconn)
        except psycopg.Error as exc:  # libpq lost the connection mid-flight
            results, error = [], exc
        if _wire.committed(results):
            # COMMIT completed, so the write is durable whatever followed it: a statement timeout or a lost
            # connection during the token's select costs the causal token, never a report of failure.
            if error is None:
                lsn = _wire.text_value(results[-1], 0)
                if lsn is not None:
                    self._token.set(later(self._token.get(), CausalToken(parse_lsn(lsn))))
            return
        if error is None:
            return
        if _retry.connection_lost(error) or conn.broken:
            self._metrics.commit_unknown()
            began = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=time.perf_counter() - started)
            raise CommitOutcomeUnknown(
                "the connection was lost while COMMIT was in flight: the write may or may not be applied;"
                " it was not retried: ask db.settle(exc.request_id, exc.clinic_id, since=exc.started_at)",
                clinic_id=scope.clinic_id,
                request_id=scope.request_id,
                started_at=began,
            ) from error
        raise error

    # -- keyrings -----------------------------------------------------------------
    async def blind_index(self, clinic_id: Any, table: str, column: str, value: str) -> list[bytes]:
        """The blind index values of ``value`` in ``table.column`` for ``clinic_id`` (needs ``keyring=``).

        Loads the clinic's keyring first when the cache lacks it. Pass the
        values to ``clinicdb.encryption.blind_index_condition()``.
        """
        if self.keyring is None:
            raise ValueError("blind_index() needs the driver made with keyring=KeyringCache(master_key)")
        clinic = clinic_id_arg(clinic_id)
        await self._load_keyring(clinic, self.keyring)
        return self.keyring.blind_index(clinic, table, column, value)

    async def _load_keyring(self, clinic: uuid.UUID, keyring: KeyringCache) -> None:
        """Put ``clinic``'s keyring in the cache if it is not there (one transaction on the primary)."""
        if not keyring.loaded(clinic):
            async with self.primary.pool.connection(timeout=self.options.acquire_timeout) as conn:
                await keyring.load_async(conn, clinic)

    async def _with_keyring(self, scope: Scope, keyring: KeyringCache) -> Scope:
        """``scope`` plus the clinic's ``app.clinic_keyring``, loaded first if not cached."""
        for _ in range(2):  # another thread may invalidate it between the load and its use: load once more
            await self._load_keyring(scope.clinic_id, keyring)
            with contextlib.suppress(LookupError):
                return scope.with_settings(keyring.settings(scope.clinic_id))
        raise LookupError(f"the keyring of clinic {scope.clinic_id} was invalidated while loading: try again")

    # -- the background check -----------------------------------------------------
    async def _pause(self, seconds: float) -> bool:
        """Wait between checks; False once the driver is closing (the async one is cancelled instead)."""
        await asyncio.sleep(seconds)  # NOSYNC
        return True  # NOSYNC
        # sync: return not self._closing.wait(seconds)

    async def _monitor_loop(self) -> None:
        while await self._pause(self.options.replica_check_interval):
            try:
                await self._check_servers()
            except Exception:  # keep checking whatever happens; transactions must not depend on this loop
                logger.exception("clinicdb: server check failed")

    async def _probe(self, key: str, url: str, sql: str) -> tuple[Any, ...] | str:
        """One row of ``sql`` on the monitor's own connection for ``key``; the error text when that fails."""
        conn = self._monitor_conns.get(key)
        try:
            if conn is None or conn.closed:
                timeout = max(1, round(self.options.health_timeout))
                conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=timeout)
                self._monitor_conns[key] = conn
            cur = await conn.execute(sql)
            row = await cur.fetchone()
            assert row is not None
            return (*row, f"{conn.info.host}:{conn.info.port}")
        except psycopg.Error as exc:
            if conn is not None:
                await conn.close()
            self._monitor_conns[key] = None
            return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]

    async def _drop_probe(self, key: str) -> None:
        """Close the monitor's connection for ``key``: the next probe connects afresh."""
        conn = self._monitor_conns.pop(key, None)
        if conn is not None:
            await conn.close()

    async def _check_servers(self) -> None:
        """Measure the replicas' lag, notice promotions and a moved primary, and move writes when the primary went."""
        if not self.replicas:
            return
        seen = await self._probe("primary", self._primary_url, "select pg_is_in_recovery(), pg_current_wal_lsn()::text")
        primary_ok = isinstance(seen, tuple) and seen[0] is False
        if isinstance(seen, tuple) and primary_ok:
            self.router.observe_primary(parse_lsn(seen[1]))
            # Back from an outage (the pool may sit in its reconnect back-off), or the URL leads elsewhere now.
            if self._primary_host not in (None, seen[2]) and self.primary.url == self._primary_url:
                logger.warning("clinicdb: the primary answers at %s again: renewing its pool", seen[2])
                await self._renew_pool(self.primary)
            self._primary_host = seen[2]
        else:
            self._primary_host = ""  # down or a standby: renew the pool when it answers as a primary again
        writable: list[int] = []
        for index, server in enumerate(self.replicas):
            # sync: if self._closing.is_set():
            # sync:     return
            if not self.router.due_for_check(index):
                continue
            found = await self._probe(server.name, server.url, _wire.REPLAY_LSN.decode())
            if isinstance(found, str):
                self._replica_failed(index, RuntimeError(found))
                continue
            if found[0] is None and seeks_standby(server.url):
                # A URL that asks for a standby reached a server that was promoted since: not a write target (the
                # primary's own URL follows the promotion); the next probe connects afresh and finds the standby.
                await self._drop_probe(server.name)
                self._replica_failed(index, RuntimeError(f"{_PROMOTED_UNDER_STANDBY_URL} ({found[1]})"))
                continue
            if found[0] is None:
                writable.append(index)
                if self.router.record_promoted(index):
                    logger.warning("clinicdb: replica %s is out of recovery (promoted): no reads go there", server.name)
                continue
            was_promoted = self.router.record_promoted(index, False)
            if self.router.replicas[index].breaker_open or was_promoted:
                await self._renew_pool(server)  # back: the old pool may be stuck in its reconnect back-off
                self.router.record_recovery(index)
                logger.warning("clinicdb: replica %s is back", server.name)
            self.router.observe_replay(index, parse_lsn(found[0]), measured=True)
        await self._follow_writes(primary_ok, writable)

    async def _follow_writes(self, primary_ok: bool, writable: list[int]) -> None:
        """Writes go to the configured primary while it is writable, else to a replica that was promoted."""
        # A promoted replica that already takes the writes keeps them, even when the old primary is back
        # writable: moving back would hide what was written there (two primaries need a person to decide).
        staying = [i for i in writable if self.replicas[i].url == self.primary.url]
        if staying:
            return
        if primary_ok:
            target = self._primary_url
        elif writable:
            target = self.replicas[writable[0]].url
        else:
            return
        if target != self.primary.url:
            to = "the configured primary" if target == self._primary_url else describe_url(target)
            logger.warning("clinicdb: writes move to %s", to)
            self._metrics.failover("primary_moved")
            await self._renew_pool(self.primary, target)

    # -- health and metrics -------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        """Per server up/down, role, latency, replica lag; overall healthy/degraded/down (cached a few seconds).

        Reflects where writes go now (``write_target``), replicas found
        promoted or behind an open breaker, and a primary that answers as a standby.
        """
        async with self._health_lock:
            now = time.monotonic()
            if self._health is None or now - self._health_at > self.options.health_cache:
                timeout = self.options.health_timeout
                checks = [acheck_server(PRIMARY, PRIMARY, self.primary.url, timeout)]
                checks += [acheck_server(r.name, REPLICA, r.url, timeout) for r in self.replicas]
                servers = list(await asyncio.gather(*checks))  # NOSYNC
                # sync: servers = checks
                target = next((r.name for r in self.replicas if r.url == self.primary.url), PRIMARY)
                self._health = summarize(
                    servers, max_lag=self.options.max_replica_lag, routing=self.router.snapshot(), write_target=target
                )
                self._health_at = now
            return dict(self._health)

    def metrics(self) -> dict[str, Any]:
        """Pool stats per server, per-route counts and p50/p95/p99, retries, failovers, slow transactions."""
        snapshot = self._metrics.snapshot()
        snapshot["pools"] = {s.name: s.pool.get_stats() for s in (self.primary, *self.replicas)}
        snapshot["replicas"] = self.router.snapshot()
        return snapshot
