"""The wheel is the product: built here, installed outside the repository, it migrates and checks a database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from clinicdb.devcluster.testing import ServerSet, scratch_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """A fresh virtual environment in a temporary folder with only the built wheel (and its dependencies)."""
    work = Path(tempfile.mkdtemp(prefix="clinicdb-wheel-"))
    try:
        dist = work / "dist"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(ROOT)],
            check=True,
            cwd=work,
        )
        wheel = next(dist.glob("clinicdb-*.whl"))
        subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
        subprocess.run([str(work / "venv" / "bin" / "pip"), "install", "--quiet", str(wheel)], check=True, cwd=work)
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _clinicdb(installed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINICDB_")}
    return subprocess.run(
        [str(installed / "venv" / "bin" / "clinicdb"), *args],
        capture_output=True,
        text=True,
        cwd=installed,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_the_wheel_carries_the_migrations_and_their_lock(installed: Path) -> None:
    """Every migration file and migrations.lock are package data of the wheel; no sql/ checkout is needed."""
    wheel = next((installed / "dist").glob("clinicdb-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("clinicdb/migrations/") for n in names if n.startswith("clinicdb/migrations/")}
    in_repo = {p.relative_to(ROOT / "migrations").as_posix() for p in (ROOT / "migrations").rglob("*") if p.is_file()}
    in_repo = {n for n in in_repo if "__pycache__" not in n}
    assert in_repo <= shipped, sorted(in_repo - shipped)


@pytest.mark.slow
def test_the_installed_wheel_migrates_checks_and_lists_a_database(installed: Path, servers: ServerSet) -> None:
    """Outside the repository, `clinicdb migrate`, `check` and `migrations` from the installed wheel work on a
    new database: the core layer lands, nothing appears in public, and every migration shows as applied."""
    with scratch_database(servers.admin_url, "wheel") as url:
        migrated = _clinicdb(installed, "migrate", "--database-url", url)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.startswith("applied: 0001.roles")
        checked = _clinicdb(installed, "check", "--database-url", url)
        assert checked.returncode == 0 and checked.stdout.startswith("ok:"), checked.stdout + checked.stderr
        listed = _clinicdb(installed, "migrations", "--database-url", url, "--json")
        assert listed.returncode == 0 and '"applied": "yes"' in listed.stdout
        assert '"set": "core"' in listed.stdout and '"set": "reference"' in listed.stdout
        with psycopg.connect(url) as conn:
            public = conn.execute(
                "select count(*) from pg_class where relnamespace = 'public'::regnamespace and relkind in ('r', 'p')"
            ).fetchone()
        assert public == (0,)
        where = _clinicdb(installed, "--version")
        assert where.returncode == 0 and "clinicdb, version" in where.stdout
