"""Inside a scope psycopg behaves as psycopg: the same cases on a bare connection and in db.write/db.read compare equal.

Each case gets a cursor inside an open transaction with the clinic set:
on the bare side a psycopg_pool connection on which ``clinicdb.set_scope``
ran first (read-only for the read cases), on the driver's side the cursor of
``db.write()`` or ``db.read()``. A case returns what it saw (rows,
descriptions, row counts, status messages, exceptions by class, SQLSTATE and
message) and the two answers must be equal. Every case ends by abandoning
its transaction, so nothing is kept. The cases are written once, as
coroutines that await only what needs awaiting, and run with the sync
driver (``ClinicDB``) and with the async one (``AsyncClinicDB``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.rows import class_row, dict_row, namedtuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from clinicdb import AsyncClinicDB, ClinicDB, set_scope
from clinicdb._scope import make_scope, scope_sql
from clinicdb.devcluster.testing import ServerSet

Case = Callable[[Any], Awaitable[Any]]
CASES: dict[str, Case] = {}
READ_CASES: set[str] = set()


def case(*, read: bool = False) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[fn.__name__] = fn
        if read:
            READ_CASES.add(fn.__name__)
        return fn

    return register


async def aw(value: Any) -> Any:
    """``value`` awaited when the async driver gave an awaitable, as is from the sync one."""
    return await value if inspect.isawaitable(value) else value


@contextlib.asynccontextmanager
async def acm(manager: Any) -> AsyncIterator[Any]:
    """Enter a sync or an async context manager."""
    if hasattr(manager, "__aenter__"):
        async with manager as value:
            yield value
    else:
        with manager as value:
            yield value


async def alist(items: Any) -> list[Any]:
    if hasattr(items, "__aiter__"):
        return [item async for item in items]
    return list(items)


def err(exc: BaseException) -> tuple[Any, ...]:
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        return ("error", type(exc).__name__, exc.sqlstate, exc.diag.message_primary)
    return ("error", type(exc).__name__, str(exc))


async def attempt(run: Callable[[], Any]) -> Any:
    """What ``run()`` returned (awaited when it must be), or the psycopg error it raised."""
    try:
        return await aw(run())
    except psycopg.Error as exc:
        return err(exc)


def shape(cur: Any) -> tuple[Any, ...]:
    names = [c.name for c in cur.description] if cur.description else None
    return names, cur.rowcount, cur.statusmessage


# -- the cases --------------------------------------------------------------------


@case(read=True)
async def clinic_is_set(cur: Any) -> Any:
    await aw(cur.execute("select current_setting('app.clinic_id'), count(*) from patients where mrn like 'PAR-%%'"))
    return await aw(cur.fetchall()), shape(cur)


@case(read=True)
async def multi_statement_string(cur: Any) -> Any:
    await aw(cur.execute("select 1 as a; select 'two' as b, count(*) from patients where mrn like 'PAR-%'"))
    first = (shape(cur), await aw(cur.fetchall()))
    more = cur.nextset()
    return first, more, shape(cur), await aw(cur.fetchall())


@case(read=True)
async def multi_statement_string_with_parameters(cur: Any) -> Any:
    return await attempt(lambda: cur.execute("select %s::int; select 2", (1,)))


@case()
async def executemany_into_an_audited_table(cur: Any) -> Any:
    rows = [(f"PAR-M-{i}", "Many", "Rows") for i in range(3)]
    await aw(cur.executemany("insert into patients (mrn, given_name, family_name) values (%s, %s, %s)", rows))
    counted = cur.rowcount
    await aw(cur.execute("select mrn, family_name from patients where mrn like 'PAR-M-%' order by mrn"))
    return counted, await aw(cur.fetchall())


@case()
async def executemany_returning(cur: Any) -> Any:
    await aw(cur.execute("create temporary table par_t (x int)"))
    await aw(cur.executemany("insert into par_t values (%s) returning x * 2", [(1,), (2,), (3,)], returning=True))
    seen = [await aw(cur.fetchall())]
    while cur.nextset():
        seen.append(await aw(cur.fetchall()))
    return seen


@case()
async def copy_in_and_out(cur: Any) -> Any:
    await aw(cur.execute("create temporary table par_c (x int, y text)"))
    async with acm(cur.copy("copy par_c (x, y) from stdin")) as copy:
        for row in [(1, "one"), (2, None), (3, "three\ttab")]:
            await aw(copy.write_row(row))
    async with acm(cur.copy("copy (select x, y from par_c order by x) to stdout")) as copy:
        copy.set_types(["int4", "text"])
        rows = await alist(copy.rows())
    return rows, cur.rowcount


@case(read=True)
async def copy_out_of_a_protected_table(cur: Any) -> Any:
    async with acm(cur.copy("copy (select mrn from patients where mrn like 'PAR-%' order by mrn) to stdout")) as copy:
        return await alist(copy.rows())


@case(read=True)
async def named_server_side_cursor(cur: Any) -> Any:
    async with acm(cur.connection.cursor(name="par_named")) as named:
        named.itersize = 2
        await aw(named.execute("select g, g * g from generate_series(1, 5) g"))
        first = await aw(named.fetchmany(2))
        await aw(named.scroll(1))
        rest = await aw(named.fetchall())
        return first, rest, [c.name for c in named.description]


@case(read=True)
async def row_factories(cur: Any) -> Any:
    @dataclass
    class Row:
        a: int
        b: str

    seen = []
    for factory in (dict_row, namedtuple_row, class_row(Row)):
        async with acm(cur.connection.cursor(row_factory=factory)) as shaped:
            await aw(shaped.execute("select 1 as a, 'x' as b"))
            seen.append(repr(await aw(shaped.fetchone())))
    return seen


@case(read=True)
async def pipeline_mode(cur: Any) -> Any:
    conn = cur.connection
    async with acm(conn.pipeline()):
        c1 = await aw(conn.execute("select 1"))
        c2 = await aw(conn.execute("select count(*) from patients where mrn like %s", ("PAR-%",)))
    return await aw(c1.fetchall()), await aw(c2.fetchall())


@case(read=True)
async def pipeline_mode_with_an_error(cur: Any) -> Any:
    conn = cur.connection

    async def run() -> Any:
        async with acm(conn.pipeline()):
            await aw(conn.execute("select 1"))
            await aw(conn.execute("select 1 / 0"))
            await aw(conn.execute("select 2"))

    return await attempt(run), conn.info.transaction_status.name


@case(read=True)
async def errors_and_the_failed_transaction(cur: Any) -> Any:
    first = await attempt(lambda: cur.execute("select 1 / 0"))
    second = await attempt(lambda: cur.execute("select 1"))
    return first, second, cur.connection.info.transaction_status.name


@case(read=True)
async def savepoint_recovers_from_an_error(cur: Any) -> Any:
    async def failing() -> Any:
        async with acm(cur.connection.transaction()):
            await aw(cur.execute("select 1 / 0"))

    caught = await attempt(failing)
    await aw(cur.execute("select 'after'"))
    return caught, await aw(cur.fetchall())


@case(read=True)
async def prepared_statements(cur: Any) -> Any:
    seen = []
    for i in range(7):
        await aw(cur.execute("select %s::int + 1, count(*) from patients where mrn like 'PAR-%%'", (i,)))
        seen.append(await aw(cur.fetchone()))
    await aw(cur.execute("select %s::text", ("explicit",), prepare=True))
    seen.append(await aw(cur.fetchone()))
    return seen


@case(read=True)
async def stream_and_binary(cur: Any) -> Any:
    streamed = await alist(cur.stream("select g from generate_series(1, 4) g"))
    await aw(cur.execute("select %s::int, %s::text, %s::numeric", (1, "b", 2.5), binary=True))
    return streamed, await aw(cur.fetchone())


@case(read=True)
async def a_write_in_the_transaction(cur: Any) -> Any:
    return await attempt(
        lambda: cur.execute("insert into patients (mrn, given_name, family_name) values ('W', 'a', 'b')")
    )


@case()
async def commit_inside_the_block_ends_the_clinic_too(cur: Any) -> Any:
    await aw(cur.execute("commit"))
    await aw(cur.execute("select current_setting('app.clinic_id', true), count(*) from patients"))
    return await aw(cur.fetchall()), cur.connection.info.transaction_status.name


# -- running them -----------------------------------------------------------------


class _Discard(Exception):
    """Leave the case's transaction without committing it."""


@pytest.fixture(scope="module")
def parity_clinic(servers: ServerSet) -> uuid.UUID:
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        row = conn.execute("select clinicdb.create_clinic(%s)", (f"parity {uuid.uuid4()}",)).fetchone()
    assert row is not None
    with psycopg.connect(servers.app_url) as conn:
        set_scope(conn, row[0])
        conn.execute(
            "insert into patients (mrn, given_name, family_name) values ('PAR-1', 'P', 'One'), ('PAR-2', 'P', 'Two')"
        )
    return uuid.UUID(str(row[0]))


@pytest.fixture(scope="module")
def sync_sides(servers: ServerSet) -> Iterator[tuple[ConnectionPool[Any], ConnectionPool[Any], ClinicDB]]:
    def read_only(conn: psycopg.Connection[Any]) -> None:
        conn.read_only = True

    with (
        ConnectionPool(servers.app_url, min_size=1, max_size=1, open=True) as bare,
        ConnectionPool(servers.app_url, min_size=1, max_size=1, configure=read_only, open=True) as bare_ro,
        ClinicDB(servers.app_url, [], min_size=1, max_size=1) as db,
    ):
        yield bare, bare_ro, db


async def _on_bare_sync(pool: ConnectionPool[Any], clinic: uuid.UUID, fn: Case) -> Any:
    with contextlib.suppress(_Discard), pool.connection() as conn:
        set_scope(conn, clinic)
        with conn.cursor() as cur:
            result = await fn(cur)
        raise _Discard
    return result


async def _in_scope_sync(db: ClinicDB, clinic: uuid.UUID, fn: Case, read: bool) -> Any:
    with contextlib.suppress(_Discard), (db.read if read else db.write)(clinic) as cur:
        result = await fn(cur)
        raise _Discard
    return result


@pytest.mark.parametrize("name", sorted(CASES))
def test_sync_scope_behaves_like_a_bare_psycopg_connection(
    name: str, sync_sides: Any, parity_clinic: uuid.UUID
) -> None:
    """The case sees the same rows, results and exceptions in db.write/db.read as on a bare pool connection."""
    bare, bare_ro, db = sync_sides
    read = name in READ_CASES
    expected = asyncio.run(_on_bare_sync(bare_ro if read else bare, parity_clinic, CASES[name]))
    assert asyncio.run(_in_scope_sync(db, parity_clinic, CASES[name], read)) == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_async_scope_behaves_like_a_bare_psycopg_connection(
    name: str, servers: ServerSet, parity_clinic: uuid.UUID
) -> None:
    """The same with AsyncClinicDB against a bare AsyncConnectionPool connection."""
    read, fn = name in READ_CASES, CASES[name]

    async def read_only(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.set_read_only(True)

    async def both() -> tuple[Any, Any]:
        pool = AsyncConnectionPool(
            servers.app_url, min_size=1, max_size=1, configure=read_only if read else None, open=False
        )
        async with pool, AsyncClinicDB(servers.app_url, [], min_size=1, max_size=1) as db:
            with contextlib.suppress(_Discard):
                async with pool.connection() as conn:
                    await conn.execute(*scope_sql(make_scope(parity_clinic)))
                    async with conn.cursor() as cur:
                        expected = await fn(cur)
                    raise _Discard
            with contextlib.suppress(_Discard):
                async with (db.read if read else db.write)(parity_clinic) as cur:
                    got = await fn(cur)
                    raise _Discard
        return expected, got

    expected, got = asyncio.run(both())
    assert got == expected


def test_an_exception_from_the_block_reaches_the_caller_unchanged_and_nothing_is_kept(
    sync_sides: Any, parity_clinic: uuid.UUID
) -> None:
    """Raising inside db.write propagates the very exception, as from a bare pool block, and rolls the write back."""
    bare, _ro, db = sync_sides
    seen = []
    for block in (bare.connection, lambda: db.write(parity_clinic)):
        boom = KeyError("app")
        with pytest.raises(KeyError) as info, block() as got:
            cur = got.cursor() if isinstance(got, psycopg.Connection) else got
            if isinstance(got, psycopg.Connection):
                set_scope(got, parity_clinic)
            cur.execute("insert into patients (mrn, given_name, family_name) values ('PAR-X', 'a', 'b')")
            raise boom
        seen.append(info.value is boom)
    with db.read(parity_clinic) as cur:
        assert cur.execute("select count(*) from patients where mrn = 'PAR-X'").fetchone() == (0,)
    assert seen == [True, True]
