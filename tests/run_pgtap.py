"""Run every pgTAP suite under tests/pgtap/ with pg_prove on a throwaway server.

Starts a fresh migrated primary (the `dev up` code, or a new database on
CLINICDB_TEST_DATABASE_URL), installs pgTAP and the clinicdb_tap helpers from
sql/tap/, runs pg_prove recursively, stops the server. Exit code: pg_prove's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import conninfo

from clinicdb.devcluster.testing import throwaway_servers

ROOT = Path(__file__).resolve().parents[1]


def install_helpers(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create extension if not exists pgtap")
        for path in sorted((ROOT / "sql" / "tap").glob("*.sql")):
            conn.execute(path.read_text().encode())


def main(argv: list[str]) -> int:
    pg_prove = shutil.which("pg_prove")
    if pg_prove is None:
        print(
            "pg_prove not found: apt-get install libtap-parser-sourcehandler-pgtap-perl",
            file=sys.stderr,
        )
        return 1
    targets = argv or [str(ROOT / "tests" / "pgtap")]
    with throwaway_servers(replicas=0) as servers:
        install_helpers(servers.admin_url)
        with psycopg.connect(servers.admin_url) as conn:
            version = conn.execute("select version()").fetchone()
        print(f"pgTAP suites on {version[0] if version else 'an unknown server'}", flush=True)
        params = conninfo.conninfo_to_dict(servers.admin_url)
        cmd = [
            pg_prove,
            "--recurse",
            "--ext", ".sql",
            "--host", str(params.get("host", "127.0.0.1")),
            "--port", str(params.get("port", 5432)),
            "--username", str(params.get("user", "postgres")),
            "--dbname", str(params["dbname"]),
            *targets,
        ]  # fmt: skip
        # Suites speak through TAP; NOTICEs from idempotent DDL are noise.
        env = {**os.environ, "PGOPTIONS": "-c client_min_messages=warning"}
        return subprocess.run(cmd, check=False, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
