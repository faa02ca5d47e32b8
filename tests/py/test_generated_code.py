"""The sync driver is generated from the async one, so the two cannot drift apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import async_to_sync  # noqa: E402
import pytest  # noqa: E402


def test_sync_driver_is_exactly_what_the_async_source_generates() -> None:
    """sync.py equals tools/async_to_sync.py's output for asyncio.py (make lint runs the same check)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "async_to_sync.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_generator_drops_async_only_lines_and_keeps_sync_only_ones() -> None:
    """``# NOSYNC`` lines go, ``# sync:`` lines become code, awaits and async names turn into their sync twins."""
    source = (
        "async def f(pool: AsyncConnectionPool[AConn]) -> None:\n"
        "    await asyncio.sleep(1)  # NOSYNC\n"
        "    # sync: time.sleep(2)\n"
        "    async with pool.connection() as conn:\n"
        "        await conn.execute('select 1')\n"
    )
    assert async_to_sync.convert_lines(source) == (
        "def f(pool: ConnectionPool[Conn]) -> None:\n"
        "    time.sleep(2)\n"
        "    with pool.connection() as conn:\n"
        "        conn.execute('select 1')\n"
    )


def test_check_fails_when_the_sync_driver_was_edited_by_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edit to sync.py alone makes --check exit 1 with a message saying what to do."""
    edited = tmp_path / "sync.py"
    edited.write_text(async_to_sync.TARGET.read_text() + "\n# a hand edit\n")
    original = async_to_sync.TARGET
    async_to_sync.TARGET = edited
    try:
        assert async_to_sync.main(["--check"]) == 1
        assert "make generate" in capsys.readouterr().err
    finally:
        async_to_sync.TARGET = original
