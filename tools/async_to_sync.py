"""Generate the sync driver (python/clinicdb/sync.py) from the async one (asyncio.py).

The two drivers do the same I/O, one awaiting and one blocking, so one is
written and the other derived: asyncio.py is the source. The rules are
textual and few, so the source stays plain Python that reads naturally:

* ``await `` and the ``async`` of ``async def`` / ``with`` / ``for`` go;
  async names become their sync twins (``RENAMES``, whole words only);
* a line ending in ``# NOSYNC`` is async-only and is dropped;
* a comment line ``# sync: CODE`` is sync-only: it becomes ``CODE`` at the
  comment's indentation;
* the result is formatted and import-sorted by ruff, like the rest of the tree.

Usage::

    python tools/async_to_sync.py           # rewrite sync.py
    python tools/async_to_sync.py --check   # exit 1 when sync.py is not what asyncio.py generates (make lint)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "python" / "clinicdb" / "asyncio.py"
TARGET = ROOT / "python" / "clinicdb" / "sync.py"

HEADER = (
    "# Generated from python/clinicdb/asyncio.py by tools/async_to_sync.py: do not edit.\n"
    "# Change asyncio.py, then run `make generate` (`make lint` fails when the two differ).\n"
)

# Async name -> sync name; matched as whole words (dotted names included).
RENAMES = {
    "AsyncClinicDB": "ClinicDB",
    "AsyncConnectionPool": "ConnectionPool",
    "psycopg.AsyncConnection": "psycopg.Connection",
    "psycopg.AsyncCursor": "psycopg.Cursor",
    "AsyncRowFactory": "RowFactory",
    "AsyncIterator": "Iterator",
    "asynccontextmanager": "contextmanager",
    "AbstractAsyncContextManager": "AbstractContextManager",
    "Awaitable[T]": "T",
    "acheck_server": "check_server",
    "asyncio.sleep": "time.sleep",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "_AsyncServer": "_Server",
    "_AsyncClinicConnection": "_ClinicConnection",
    "_AsyncClinicCursor": "_ClinicCursor",
    "_AsyncTransaction": "_Transaction",
    "ready_async": "ready",
    "psycopg.AsyncTransaction": "psycopg.Transaction",
    "psycopg.AsyncPipeline": "psycopg.Pipeline",
    "AConn": "Conn",
    "load_async": "load",
}

_AWAIT = re.compile(r"\bawait\s+")
_ASYNC = re.compile(r"\basync\s+(?=def\b|with\b|for\b)")
_RENAME = re.compile("|".join(rf"(?<!\w){re.escape(old)}(?![\w])" for old in sorted(RENAMES, key=len, reverse=True)))
_SYNC_ONLY = re.compile(r"^(\s*)# sync: ?(.*)$")


def convert_lines(source: str) -> str:
    """The textual rules of the module docstring, before formatting."""
    out: list[str] = []
    for line in source.splitlines():
        if line.rstrip().endswith("# NOSYNC"):
            continue
        sync_only = _SYNC_ONLY.match(line)
        if sync_only:
            line = sync_only.group(1) + sync_only.group(2)
        line = _AWAIT.sub("", line)
        line = _ASYNC.sub("", line)
        line = _RENAME.sub(lambda m: RENAMES[m.group(0)], line)
        out.append(line)
    return "\n".join(out) + "\n"


def _ruff(args: list[str], text: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"async_to_sync: ruff {args[0]} failed on the generated code:\n{done.stderr or done.stdout}")
    return done.stdout


def generate(source: str) -> str:
    """sync.py's full text for asyncio.py's text."""
    text = HEADER + convert_lines(source)
    text = _ruff(["check", "--fix", "--select", "I,F401", "--quiet", "--exit-zero"], text)
    return _ruff(["format", "--quiet"], text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when sync.py differs from what would be generated")
    args = parser.parse_args(argv)
    wanted = generate(SOURCE.read_text())
    current = TARGET.read_text() if TARGET.exists() else ""
    if args.check:
        if current != wanted:
            print(
                f"{TARGET.name} is not what {SOURCE.name} generates: change asyncio.py, then run `make generate`",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != wanted:
        TARGET.write_text(wanted)
        print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
