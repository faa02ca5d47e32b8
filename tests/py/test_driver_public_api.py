"""clinicdb uses psycopg's documented surface only, so any psycopg 3.x release can run under it.

Two sweeps over every module in python/: no import or mention of a private
psycopg module (``psycopg._*``, ``psycopg.generators``, ``psycopg.waiting``,
``psycopg_pool._*``), and no access to an underscore member of a psycopg
object. The member names are taken from live psycopg objects of the
installed release (connections, cursors, pipelines, transactions, copy, the
pools, libpq's PGconn and PGresult), so the test follows psycopg's
internals as they change. ``psycopg.pq`` and ``conn.pgconn`` are public.
"""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import psycopg
import psycopg_pool

from clinicdb.devcluster.testing import ServerSet

ROOT = Path(__file__).resolve().parents[2] / "python"
PRIVATE_MODULE = re.compile(
    r"\bpsycopg(?:_pool)?\._\w+|\bpsycopg\.(?:generators|waiting)\b"
    r"|\bfrom\s+psycopg(?:_pool)?\s+import\s+[^\n]*\b(?:generators|waiting|_\w+)"
)


def _private_members(servers: ServerSet) -> set[str]:
    names: set[str] = set()
    with psycopg.connect(servers.admin_url) as conn:
        with conn.cursor() as cur, conn.cursor(name="n") as named, psycopg.ClientCursor(conn) as client:
            names.update(*(dir(o) for o in (conn, cur, named, client, conn.pgconn, conn.info)))
            cur.execute("select 1")
            names.update(dir(cur.pgresult))
            with conn.transaction() as tx:
                names.update(dir(tx))
            with conn.pipeline() as pipeline:
                names.update(dir(pipeline))
            with cur.copy("copy (select 1) to stdout") as copy:
                names.update(dir(copy))
                list(copy.rows())
        conn.rollback()

    async def async_names() -> set[str]:
        aconn = await psycopg.AsyncConnection.connect(servers.admin_url)
        async with aconn, aconn.cursor() as acur, aconn.cursor(name="n") as anamed:
            return set(dir(aconn)) | set(dir(acur)) | set(dir(anamed))

    names |= asyncio.run(async_names())
    for pool in (psycopg_pool.ConnectionPool, psycopg_pool.AsyncConnectionPool):
        names |= set(dir(pool(servers.admin_url, open=False)))
    return {n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))}


def _psycopg_subclasses(tree: ast.Module) -> set[str]:
    """Names of classes in the module that derive from a psycopg or psycopg_pool class."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any("psycopg" in ast.unparse(base) for base in node.bases):
            found.add(node.name)
    return found


def _violations(path: Path, private: set[str]) -> list[str]:
    text = path.read_text()
    where = path.relative_to(ROOT.parent) if path.is_relative_to(ROOT.parent) else path.name
    problems = [f"{where}: private psycopg module {m.group(0)!r}" for m in PRIVATE_MODULE.finditer(text)]
    tree = ast.parse(text)
    subclasses = _psycopg_subclasses(tree)
    for cls in ast.walk(tree):
        inside_subclass = isinstance(cls, ast.ClassDef) and cls.name in subclasses
        for node in ast.walk(cls) if isinstance(cls, ast.ClassDef | ast.Module) else ():
            if not isinstance(node, ast.Attribute) or node.attr not in private:
                continue
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not on_self or inside_subclass:
                problems.append(f"{where}:{node.lineno}: {ast.unparse(node)} (a psycopg private member)")
    return sorted(set(problems))


def test_no_private_psycopg_name_is_used_anywhere_in_the_package(servers: ServerSet) -> None:
    """No module in python/ imports a private psycopg module or touches an underscore member of a psycopg object."""
    private = _private_members(servers)
    assert {"_pgconn", "_execute_gen", "_start_query", "_tx", "_pipeline"} & private, "the sweep found psycopg's names"
    problems = [p for path in sorted(ROOT.rglob("*.py")) for p in _violations(path, private)]
    assert problems == []


def test_the_sweep_catches_what_the_old_driver_did(servers: ServerSet, tmp_path: Path) -> None:
    """The sweep flags the private imports and member accesses the driver used before #14."""
    private = _private_members(servers)
    sample = tmp_path / "old.py"
    sample.write_text(
        "from psycopg._preparing import Prepare\n"
        "from psycopg import generators, pq\n"
        "import psycopg.waiting\n"
        "def f(conn, cur):\n"
        "    conn._pipeline.command_queue.append(None)\n"
        "    return cur._execute_gen, conn.pgconn._encoding\n"
        "class C(psycopg.Connection):\n"
        "    def g(self):\n"
        "        return self._start_query()\n"
    )
    text = "\n".join(_violations(sample, private))
    for expected in ("_preparing", "generators", "waiting", "conn._pipeline", "cur._execute_gen", "_encoding"):
        assert expected in text
    assert "self._start_query" in text
