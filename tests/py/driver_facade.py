"""``AsyncClinicDB`` behind blocking calls, so one pytest suite runs against both drivers.

The event loop runs in a thread of its own; each call runs as a task there in
a copy of the calling thread's context (so ``clinic_scope`` and the causal
token cross over like they would in an async app), and the driver's token is
copied back afterwards. Cursors are wrapped so test code calls ``execute`` and
``fetchone`` the same way for both drivers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from clinicdb import AsyncClinicDB


class CursorShim:
    """A blocking face for an ``AsyncCursor``."""

    def __init__(self, cur: Any, facade: AsyncFacade) -> None:
        self._cur = cur
        self._facade = facade

    def execute(self, query: Any, params: Any = None) -> CursorShim:
        self._facade.run(self._cur.execute(query, params))
        return self

    def executemany(self, query: Any, params: Any) -> None:
        self._facade.run(self._cur.executemany(query, params))

    def fetchone(self) -> Any:
        return self._facade.run(self._cur.fetchone())

    def fetchall(self) -> Any:
        return self._facade.run(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)


class AsyncFacade:
    """Wraps an ``AsyncClinicDB``; attributes not defined here pass through."""

    def __init__(self, adb: AsyncClinicDB) -> None:
        self.adb = adb
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="async-facade", daemon=True)
        self._thread.start()
        self.run(adb.open())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.adb, name)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
        ctx = contextvars.copy_context()
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def start() -> None:
            task = self.loop.create_task(coro, context=ctx)

            def finish(t: asyncio.Task[Any]) -> None:
                if t.cancelled():
                    done.cancel()
                elif t.exception() is not None:
                    done.set_exception(t.exception())  # type: ignore[arg-type]
                else:
                    done.set_result(t.result())

            task.add_done_callback(finish)

        self.loop.call_soon_threadsafe(start)
        try:
            return done.result(timeout)
        finally:
            token = ctx.get(self.adb._token)
            if token is not None:
                self.adb._token.set(token)

    @contextlib.contextmanager
    def _block(self, cm: Any) -> Iterator[CursorShim]:
        cur = self.run(cm.__aenter__())
        try:
            yield CursorShim(cur, self)
        except BaseException as exc:
            if not self.run(cm.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self.run(cm.__aexit__(None, None, None))

    def read(self, *args: Any, **kwargs: Any) -> contextlib.AbstractContextManager[CursorShim]:
        return self._block(self.adb.read(*args, **kwargs))

    def write(self, *args: Any, **kwargs: Any) -> contextlib.AbstractContextManager[CursorShim]:
        return self._block(self.adb.write(*args, **kwargs))

    def _wrap(self, fn: Callable[[Any], Any]) -> Callable[[Any], Coroutine[Any, Any, Any]]:
        async def afn(acur: Any) -> Any:
            return await asyncio.to_thread(fn, CursorShim(acur, self))

        return afn

    def run_read(self, fn: Callable[[Any], Any], *args: Any, **kwargs: Any) -> Any:
        return self.run(self.adb.run_read(self._wrap(fn), *args, **kwargs))

    def run_write(self, fn: Callable[[Any], Any], *args: Any, **kwargs: Any) -> Any:
        return self.run(self.adb.run_write(self._wrap(fn), *args, **kwargs))

    def blind_index(self, *args: Any, **kwargs: Any) -> list[bytes]:
        found: list[bytes] = self.run(self.adb.blind_index(*args, **kwargs))
        return found

    def copy_rows(self, *args: Any, **kwargs: Any) -> int:
        return int(self.run(self.adb.copy_rows(*args, **kwargs)))

    def settle(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self.run(self.adb.settle(*args, **kwargs)))

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.run(self.adb.health())
        return result

    def raw_setting(self, name: str) -> Any:
        """What a connection taken straight from the primary pool says about ``name``."""

        async def probe() -> Any:
            async with self.adb.primary.pool.connection() as conn:
                cur = await conn.execute("select current_setting(%s, true)", (name,))
                row = await cur.fetchone()
                return row[0] if row else None

        return self.run(probe())

    def close(self) -> None:
        try:
            self.run(self.adb.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()
