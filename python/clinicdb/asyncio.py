"""The clinicdb driver: ``AsyncClinicDB`` over psycopg's ``AsyncConnectionPool``.

Policy lives in the shared modules (``_scope`` validates, ``_wire`` builds the
opening and closing flights, ``_routing`` picks servers, ``_retry`` decides
what may run again, ``metrics`` counts); the driver only does the I/O.

asyncio.py is the source of both drivers: sync.py is generated from it by
tools/async_to_sync.py (``make generate``), and ``make lint`` fails when the
two differ. In asyncio.py a line ending in ``# NOSYNC`` is async-only, and a
``# sync: ...`` comment line is sync-only code.
"""

from __future__ import annotations

import asyncio  # NOSYNC
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import AsyncRowFactory
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from clinicdb import _bulk, _deferred, _login, _retry, _wire
from clinicdb._common import (
    ROUTE_PRIMARY,
    ROUTE_REPLICA,
    Opening,
    aborted_error,
    check_urls,
    exhausted_message,
    monitor_row_problem,
    pool_kwargs,
    primary_reopen_attempts,
    redacted_error,
    replica_names,
)
from clinicdb._config import DriverConfig
from clinicdb._routing import CAUSAL, NO_REPLICAS, Router
from clinicdb._scope import Scope, clinic_id_arg, resolve
from clinicdb._tokens import CausalToken, later, parse_lsn
from clinicdb.encryption import KeyringCache, is_stale_keyring
from clinicdb.errors import CommitOutcomeUnknown, PoolExhausted, UnsafeLogin
from clinicdb.health import acheck_server, describe_url, summarize
from clinicdb.metrics import Metrics
from clinicdb.settings import env

# sync: import threading
logger = logging.getLogger("clinicdb.driver")
T = TypeVar("T")
AConn = psycopg.AsyncConnection[Any]


class _AsyncClinicConnection(_deferred.DeferredOpeningConnection, psycopg.AsyncConnection[Any]):
    """The pools' connections: whatever starts a transaction sends the driver's pending opening first (_deferred).

    ``transaction()`` sends its own BEGIN (it does not go through ``_start_query``), so it is covered here.
    """

    @contextlib.asynccontextmanager
    async def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> AsyncIterator[psycopg.AsyncTransaction]:
        await self._send_pending_opening()
        async with super().transaction(savepoint_name, force_rollback) as tx:
            yield tx

    async def _send_pending_opening(self) -> None:
        async with self.lock:
            await self.wait(_deferred.flush_gen(self))


class _AsyncClinicCursor(_deferred.MergedExecuteCursor, psycopg.AsyncCursor[Any]):
    """The pools' cursors: ``execute()`` carries the pending opening in its own flight (_deferred)."""


class _AsyncServer:
    def __init__(self, name: str, url: str, pool: AsyncConnectionPool[AConn]) -> None:
        self.name, self.url, self.pool = name, url, pool


class AsyncClinicDB:
    """One object for a multi-tenant app: clinic-scoped transactions, read routing, retries, health, metrics.

    Example::

        async with AsyncClinicDB.from_env() as db:  # CLINICDB_DATABASE_URL, CLINICDB_REPLICA_URLS
            async with db.write(clinic_id, user_id="dr-lee") as cur:
                await cur.execute("insert into patients (mrn, given_name, family_name) values ('N-9', 'Ann', 'Lee')")
            async with db.read(clinic_id) as cur:  # a replica that has replayed the write, else the primary
                await cur.execute("select * from patients where mrn = %s", ("N-9",))

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
        config: DriverConfig | None = None,
        # sync: open: bool = True,
        keyring: KeyringCache | None = None,
        unsafe_allow_rls_bypass_login: bool = False,
        **settings: Any,
    ) -> None:
        check_urls(primary_url, replica_urls)
        self.config = DriverConfig.from_env(**settings) if config is None else config
        if config is not None and settings:
            raise TypeError("pass either config= or individual settings, not both")
        cfg = self.config
        self.keyring = keyring
        self._allow_bypass = unsafe_allow_rls_bypass_login
        self._refusal: UnsafeLogin | None = None
        self.primary = self._server("primary", primary_url)
        self.replicas = [self._server(n, u) for n, u in zip(replica_names(replica_urls), replica_urls, strict=True)]
        self.router = Router(
            [r.name for r in self.replicas],
            max_lag=cfg.max_replica_lag,
            check_interval=cfg.replica_check_interval,
            backoff=cfg.breaker_backoff,
            max_backoff=cfg.breaker_max_backoff,
        )
        self._metrics = Metrics(cfg.slow_transaction)
        self._token: ContextVar[CausalToken | None] = ContextVar(f"clinicdb_token_{id(self)}", default=None)
        self._health: dict[str, Any] | None = None
        self._health_at = 0.0
        self._health_lock = asyncio.Lock()  # NOSYNC
        self._monitor: asyncio.Task[None] | None = None  # NOSYNC
        # sync: self._health_lock = threading.Lock()
        # sync: self._closing = threading.Event()
        # sync: self._monitor: threading.Thread | None = None
        self._monitor_conns: dict[int, AConn | None] = {}
        self._primary_monitor: AConn | None = None
        self._opened = False
        # sync: if open:
        # sync:     self.open()

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncClinicDB:
        """From ``CLINICDB_DATABASE_URL``, ``CLINICDB_REPLICA_URLS`` (comma-separated) and ``CLINICDB_*`` settings.

        Opened by ``open()`` or the context manager (the sync driver also opens on creation unless ``open=False``).
        """
        primary = env("CLINICDB_DATABASE_URL")
        if not primary:
            raise ValueError('CLINICDB_DATABASE_URL is not set: export it, or run eval "$(clinicdb dev env)"')
        replicas = [u.strip() for u in (env("CLINICDB_REPLICA_URLS") or "").split(",") if u.strip()]
        return cls(primary, replicas, **kwargs)

    def _server(self, name: str, url: str) -> _AsyncServer:
        return _AsyncServer(name, url, self._pool(name, url))

    def _pool(self, name: str, url: str) -> AsyncConnectionPool[AConn]:
        pool: AsyncConnectionPool[AConn] = AsyncConnectionPool(
            url,
            min_size=self.config.min_size,
            max_size=self.config.max_size,
            timeout=self.config.acquire_timeout,
            reconnect_timeout=self.config.reconnect_timeout,
            kwargs={**pool_kwargs(self.config), "cursor_factory": _AsyncClinicCursor},
            connection_class=_AsyncClinicConnection,
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
        timeout = max(1, round(self.config.health_timeout))
        async with await psycopg.AsyncConnection.connect(self.primary.url, connect_timeout=timeout) as conn:
            await self._configure(conn)
        for server in (self.primary, *self.replicas):
            await server.pool.open(wait=False)
        self._opened = True
        await self._check_replicas()
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
        for conn in (*self._monitor_conns.values(), self._primary_monitor):
            if conn is not None:
                await conn.close()
        self._monitor_conns.clear()
        self._primary_monitor = None
        for server in (self.primary, *self.replicas):
            await server.pool.close()
        self._opened = False

    async def __aenter__(self) -> AsyncClinicDB:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _configure(self, conn: AConn) -> None:
        cur = await conn.execute(_login.BYPASS_SQL)
        row = await cur.fetchone()
        await conn.rollback()
        try:
            _login.judge(row, server=describe_url(conn.info.dsn), allow=self._allow_bypass)
        except UnsafeLogin as exc:
            self._refusal = exc
            raise

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

        ``after`` (and, with read-your-writes on, this caller's last write)
        sends the read only where that write is visible. Not retried: use
        ``run_read`` for that.
        """
        scope = resolve(clinic_id, user_id=user_id, request_id=request_id, settings=settings)
        token = self._read_token(after)
        return self._transaction(scope, read=True, token=token, isolation=isolation, row_factory=row_factory)

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
        return self._transaction(scope, read=False, token=None, isolation=isolation, row_factory=row_factory)

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
        """``fn(cursor)`` in a read transaction, run again on 40001/40P01 or a lost connection; returns its result."""
        scope = resolve(clinic_id, user_id=user_id, request_id=request_id, settings=settings)
        return await self._run(
            fn, scope, read=True, token=self._read_token(after), isolation=isolation, row_factory=row_factory
        )

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
        """``fn(cursor)`` in a write transaction, run again on 40001/40P01; returns its result.

        ``fn`` may run more than once: keep side effects outside the database
        out of it. A commit whose outcome is unknown raises
        ``CommitOutcomeUnknown`` and is never retried.
        """
        scope = resolve(clinic_id, user_id=user_id, request_id=request_id, settings=settings)
        return await self._run(fn, scope, read=False, token=None, isolation=isolation, row_factory=row_factory)

    async def _run(
        self,
        fn: Callable[[psycopg.AsyncCursor[Any]], Awaitable[T]],
        scope: Scope,
        *,
        read: bool,
        token: CausalToken | None,
        isolation: str | None,
        row_factory: AsyncRowFactory[Any] | None,
    ) -> T:
        """The retry loop of run_read/run_write: whole transactions, jittered capped back-off."""
        attempt = 1
        while True:
            try:
                async with self._transaction(
                    scope, read=read, token=token, isolation=isolation, row_factory=row_factory
                ) as c:
                    return await fn(c)
            except Exception as exc:
                stale = self.keyring is not None and is_stale_keyring(exc)  # dropped by _transaction: reload
                if attempt >= self.config.retry_attempts or not (stale or _retry.retryable(exc, read=read)):
                    raise
                self._metrics.retry("read" if read else "write")
                await asyncio.sleep(
                    _retry.delay(attempt, base=self.config.retry_backoff, cap=self.config.retry_max_backoff)
                )
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
        async with self._transaction(scope, read=False, token=None, isolation=None, row_factory=None) as cur:
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

    def last_write_token(self) -> CausalToken | None:
        """The causal token of this caller's (thread's or task's) latest write through this object."""
        return self._token.get()

    def _read_token(self, after: CausalToken | None) -> CausalToken | None:
        if after is not None and not isinstance(after, CausalToken):
            raise ValueError(f"after must be a CausalToken (from last_write_token()), got {type(after).__name__}")
        return later(after, self._token.get() if self.config.read_your_writes else None)

    # -- the transaction ----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _transaction(
        self,
        scope: Scope,
        *,
        read: bool,
        token: CausalToken | None,
        isolation: str | None,
        row_factory: AsyncRowFactory[Any] | None,
    ) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        if self.keyring is not None:
            scope = await self._with_keyring(scope, self.keyring)
        opening = Opening.build(scope, self.config, read=read, isolation=isolation)
        started = time.perf_counter()
        if read:
            conn, server, route = await self._begin(opening, token)
        else:
            conn, server, route = await self._open_primary(opening), self.primary, ROUTE_PRIMARY
        deferred = _deferred.state(conn)
        ok = False
        try:
            cur = conn.cursor(row_factory=row_factory) if row_factory is not None else conn.cursor()
            async with cur:
                yield cur
            # Still pending: the block ran no statement, so nothing was sent and there is nothing to end.
            if deferred.pending is None:
                if read:
                    await self._commit_read(conn, standby=route == ROUTE_REPLICA)
                else:
                    await self._commit_write(conn)
            ok = True
        except BaseException as exc:
            if route == ROUTE_REPLICA and _retry.connection_lost(exc):
                self._replica_failed(self.replicas.index(server), exc)
            if self.keyring is not None and is_stale_keyring(exc):
                self.keyring.invalidate(scope.clinic_id)
            if deferred.pending is None and not conn.broken and not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    await self._close(conn, _wire.ROLLBACK)
            raise
        finally:
            deferred.pending = None
            if deferred.replay is not None:
                if route == ROUTE_REPLICA:
                    self.router.observe_replay_text(self.replicas.index(server), deferred.replay)
                deferred.replay = None
            await self._put(server, conn)
            self._metrics.transaction(
                route, time.perf_counter() - started, ok=ok, clinic_id=scope.clinic_id, kind="read" if read else "write"
            )

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
            conn = await self._open_primary(None)
            try:
                await keyring.load_async(conn, clinic)
            finally:
                await self._put(self.primary, conn)

    async def _with_keyring(self, scope: Scope, keyring: KeyringCache) -> Scope:
        """``scope`` plus the clinic's ``app.clinic_keyring``, loaded first if not cached."""
        for _ in range(2):  # another thread may invalidate it between the load and its use: load once more
            await self._load_keyring(scope.clinic_id, keyring)
            with contextlib.suppress(LookupError):
                return scope.with_settings(keyring.settings(scope.clinic_id))
        raise LookupError(f"the keyring of clinic {scope.clinic_id} was invalidated while loading: try again")

    async def _close(self, conn: AConn, message: bytes) -> list[pq.abc.PGresult]:
        async with conn.lock:
            results = await conn.wait(_wire.closing(conn.pgconn, message))
        return _wire.raise_first_error(results, conn)

    async def _getconn(self, server: _AsyncServer, timeout: float) -> AConn:
        """A connection from ``server``'s pool, which ``_put`` returns it to; PoolTimeout if none came in time.

        A pool that could not open any connection because the login was refused raises that refusal instead.
        """
        try:
            conn = await server.pool.getconn(timeout=timeout)
        except PoolTimeout as exc:
            if self._refusal is not None:
                raise self._refusal from exc
            raise
        # Remember the pool: a replica's pool may be renewed before the connection comes back.
        _deferred.state(conn).owner = server.pool
        return conn

    async def _send_opening(self, conn: AConn, opening: Opening) -> str | None:
        """Send the opening now, on its own (a causal read must see the replica's position first); the replay LSN."""
        deferred = _deferred.state(conn)
        deferred.pending = opening
        async with conn.lock:
            await conn.wait(_deferred.flush_gen(conn))
        replay, deferred.replay = deferred.replay, None
        return replay

    async def _open_primary(self, opening: Opening | None) -> AConn:
        # A pooled connection the primary closed (restart) is discarded for another: nothing has run yet.
        timeout = self.config.acquire_timeout
        for _ in range(primary_reopen_attempts(self.config)):
            try:
                conn = await self._getconn(self.primary, timeout)
            except PoolTimeout as exc:
                stats = self.primary.pool.get_stats()
                raise PoolExhausted(exhausted_message(self.primary.name, stats, timeout)) from exc
            if not _deferred.looks_dead(conn.pgconn):
                _deferred.state(conn).pending = opening
                return conn
            await self._release_failed(self.primary, conn)
        raise psycopg.OperationalError(
            "the primary had closed every pooled connection tried (restarted or down?): try again, or see db.health()"
        )

    async def _begin(self, opening: Opening, token: CausalToken | None) -> tuple[AConn, _AsyncServer, str]:
        tried: set[int] = set()
        waited = False
        while True:
            route = self.router.pick(token, exclude=frozenset(tried))
            if route.replica is not None:
                conn = await self._open_replica(route.replica, opening, None)
                if conn is not None:
                    return conn, self.replicas[route.replica], ROUTE_REPLICA
                tried.add(route.replica)
                continue
            if route.reason == CAUSAL and token is not None and self.config.causal_wait > 0 and not waited:
                waited = True
                index = self.router.waitable(token, exclude=frozenset(tried))
                if index is not None:
                    conn = await self._open_replica(index, opening, token)
                    if conn is not None:
                        return conn, self.replicas[index], ROUTE_REPLICA
            if route.reason != NO_REPLICAS and route.reason is not None:
                self._metrics.failover(route.reason)
            return await self._open_primary(opening), self.primary, ROUTE_PRIMARY

    async def _open_replica(self, index: int, opening: Opening, wait_for: CausalToken | None) -> AConn | None:
        server = self.replicas[index]
        try:
            conn = await self._getconn(server, self.config.replica_acquire_timeout)
        except PoolTimeout as exc:
            if server.pool.get_stats().get("pool_size", 0) == 0:
                self._replica_failed(index, exc)
            return None
        if _deferred.looks_dead(conn.pgconn):
            await self._release_failed(server, conn)
            self._replica_failed(index, psycopg.OperationalError("the replica closed a pooled connection"))
            return None
        if wait_for is None:
            _deferred.state(conn).pending = opening
            return conn
        try:
            replay = await self._send_opening(conn, opening)
        except psycopg.Error as exc:
            await self._release_failed(server, conn)
            if _retry.connection_lost(exc):
                self._replica_failed(index, exc)
                return None
            raise
        if replay is not None:
            self.router.observe_replay_text(index, replay)
        if not await self._wait_replay(conn, replay, wait_for):
            await self._release_failed(server, conn)
            return None
        return conn

    async def _wait_replay(self, conn: AConn, replay: str | None, token: CausalToken) -> bool:
        deadline = time.monotonic() + self.config.causal_wait
        while True:
            if replay is not None and parse_lsn(replay) >= token.lsn:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.002)
            cur = await conn.execute(_wire.REPLAY_LSN)
            row = await cur.fetchone()
            replay = row[0] if row else None

    async def _put(self, server: _AsyncServer, conn: AConn) -> None:
        # Back to the pool it came from: a replica's pool may have been renewed meanwhile.
        st = _deferred.state(conn)
        owner, st.owner = st.owner or server.pool, None
        await owner.putconn(conn)

    async def _renew_pool(self, server: _AsyncServer) -> None:
        """A fresh pool for a replica that came back: the old one may be stuck in its reconnect back-off."""
        old, server.pool = server.pool, self._pool(server.name, server.url)
        await server.pool.open(wait=False)
        with contextlib.suppress(PoolTimeout):
            await server.pool.wait(timeout=self.config.health_timeout)
        await old.close(timeout=1.0)

    async def _release_failed(self, server: _AsyncServer, conn: AConn) -> None:
        _deferred.state(conn).pending = None
        if not conn.broken and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()
        await self._put(server, conn)

    def _replica_failed(self, index: int, exc: BaseException) -> None:
        if self.router.record_failure(index, redacted_error(exc)):
            self._metrics.breaker_trip()
            logger.warning("clinicdb: replica %s marked unhealthy: %s", self.replicas[index].name, redacted_error(exc))

    async def _commit_read(self, conn: AConn, *, standby: bool) -> None:
        # A read changes nothing: a caught error inside the block just means rolling back.
        status = conn.pgconn.transaction_status
        if status == pq.TransactionStatus.INERROR:
            await self._close(conn, _wire.ROLLBACK)
        elif status == pq.TransactionStatus.INTRANS:
            await self._close(conn, _wire.COMMIT_STANDBY_READ if standby else _wire.COMMIT_READ)
        else:  # the block ended the transaction itself: still leave nothing behind
            await self._close(conn, _wire.CLEAN_SESSION)

    async def _commit_write(self, conn: AConn) -> None:
        status = conn.pgconn.transaction_status
        if status == pq.TransactionStatus.INERROR:
            await self._close(conn, _wire.ROLLBACK)
            raise aborted_error()
        if status != pq.TransactionStatus.INTRANS:
            # The block ended the transaction itself: nothing to commit, still leave nothing behind.
            await self._close(conn, _wire.CLEAN_SESSION)
            return
        try:
            results = await self._close(conn, _wire.COMMIT_WITH_TOKEN)
        except psycopg.Error as exc:
            if _retry.connection_lost(exc) or conn.broken:
                self._metrics.commit_unknown()
                raise CommitOutcomeUnknown(
                    "the connection was lost while COMMIT was in flight: the write may or may not be applied;"
                    " check before repeating it (it was not retried)"
                ) from exc
            raise
        lsn = _wire.text_value(results[-1], 0)
        if lsn is not None:
            token = CausalToken(parse_lsn(lsn))
            self._token.set(later(self._token.get(), token))

    # -- replica checks -----------------------------------------------------------
    async def _pause(self, seconds: float) -> bool:
        """Wait between replica checks; False once the driver is closing (the async one is cancelled instead)."""
        await asyncio.sleep(seconds)  # NOSYNC
        return True  # NOSYNC
        # sync: return not self._closing.wait(seconds)

    async def _monitor_loop(self) -> None:
        while await self._pause(self.config.replica_check_interval):
            try:
                await self._check_replicas()
            except Exception:  # keep checking whatever happens; reads must not depend on this loop
                logger.exception("clinicdb: replica check failed")

    async def _check_replicas(self) -> None:
        if not self.replicas:
            return
        timeout = max(1, round(self.config.health_timeout))
        try:
            if self._primary_monitor is None or self._primary_monitor.closed:
                self._primary_monitor = await psycopg.AsyncConnection.connect(
                    self.primary.url, autocommit=True, connect_timeout=timeout
                )
            cur = await self._primary_monitor.execute("select pg_current_wal_lsn()::text")
            row = await cur.fetchone()
            if row and row[0]:
                self.router.observe_primary(parse_lsn(row[0]))
        except psycopg.Error:
            if self._primary_monitor is not None:
                await self._primary_monitor.close()
            self._primary_monitor = None
        for index, server in enumerate(self.replicas):
            if not self.router.due_for_check(index):
                continue
            # sync: if self._closing.is_set():
            # sync:     return
            was_open = self.router.replicas[index].breaker_open
            conn = self._monitor_conns.get(index)
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(server.url, autocommit=True, connect_timeout=timeout)
                    self._monitor_conns[index] = conn
                cur = await conn.execute("select pg_last_wal_replay_lsn()::text, pg_is_in_recovery()")
                found = await cur.fetchone()
                problem = monitor_row_problem(found)
                if problem is not None:
                    self._replica_failed(index, RuntimeError(problem))
                    continue
                if was_open:
                    await self._renew_pool(server)
                    self.router.record_recovery(index)
                    logger.warning("clinicdb: replica %s is back", server.name)
                assert found is not None
                self.router.observe_replay(index, parse_lsn(found[0]), measured=True)
            except psycopg.Error as exc:
                if conn is not None:
                    await conn.close()
                self._monitor_conns[index] = None
                self._replica_failed(index, exc)

    # -- health and metrics -------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        """Per server up/down, latency, replica lag, and overall healthy/degraded/down (cached a few seconds)."""
        async with self._health_lock:
            now = time.monotonic()
            if self._health is None or now - self._health_at > self.config.health_cache:
                timeout = self.config.health_timeout
                checks = [acheck_server("primary", "primary", self.primary.url, timeout)]
                checks += [acheck_server(r.name, "replica", r.url, timeout) for r in self.replicas]
                servers = list(await asyncio.gather(*checks))  # NOSYNC
                # sync: servers = checks
                self._health = summarize(servers, max_lag=self.config.max_replica_lag)
                self._health_at = now
            result = dict(self._health)
        result["routing"] = self.router.snapshot()
        return result

    def metrics(self) -> dict[str, Any]:
        """Pool stats per server, per-route counts and p50/p95/p99, retries, failovers, slow transactions."""
        snapshot = self._metrics.snapshot()
        snapshot["pools"] = {s.name: s.pool.get_stats() for s in (self.primary, *self.replicas)}
        snapshot["replicas"] = self.router.snapshot()
        return snapshot
