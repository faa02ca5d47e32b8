"""The driver behind a real pgbouncer in transaction mode.

pgbouncer here is Debian's (1.18, installed by docker/install-debian-deps.sh),
started by the fixture on a free port in front of the test primary with one
server connection for every client: clients take turns on the same server
session, so anything the driver left behind in a session would reach the
next client's transaction. pgbouncer before 1.21 does not track prepared
statements, so the driver runs with CLINICDB_PREPARE_THRESHOLD=none there,
as docs/driver.md says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from clinicdb import ClinicDB
from clinicdb.devcluster.binaries import chown_for_server, server_user
from clinicdb.devcluster.cluster import free_port
from clinicdb.devcluster.testing import APP_LOGIN, ServerSet


@pytest.fixture(scope="module")
def bouncer_url(servers: ServerSet) -> Iterator[str]:
    """An app URL through pgbouncer (transaction pooling, one server connection)."""
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if binary is None:
        pytest.skip("pgbouncer is not installed (make system-deps installs it)")
    target = psycopg.conninfo.conninfo_to_dict(servers.admin_url)
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="clinicdb-pgbouncer-"))
    folder.chmod(0o755)
    (folder / "users.txt").write_text(f'"{APP_LOGIN}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{target['dbname']} = host={target.get('host', '127.0.0.1')} port={target['port']} dbname={target['dbname']}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 50\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
    )
    chown_for_server(folder)
    user = server_user()
    argv = [binary, str(folder / "pgbouncer.ini")]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = psycopg.conninfo.make_conninfo(servers.app_url, host="127.0.0.1", port=str(port))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
                    raise RuntimeError(f"pgbouncer did not start: {log[-500:]}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def test_behind_pgbouncer_transaction_mode_clients_sharing_one_session_never_meet(
    bouncer_url: str, clinic_pair: Any
) -> None:
    """Four threads of two clinics on one server session: each transaction sees only its clinic and its rows,
    and no held cursor or temporary table of another client's transaction."""
    a, b = clinic_pair
    db = ClinicDB(bouncer_url, [], prepare_threshold=None, min_size=4, max_size=4)
    problems: list[str] = []
    backends: set[int] = set()
    try:
        for clinic in (a, b):
            with db.write(clinic) as cur:
                cur.execute(
                    "insert into patients (mrn, given_name, family_name) values (%s, 'Bouncer', 'Test')",
                    (f"PGB-{clinic}",),
                )

        def worker(n: int) -> None:
            for i in range(60):
                clinic = a if (n + i) % 2 else b
                use = db.write if i % 3 == 0 else db.read
                with use(clinic, user_id=f"w{n}") as cur:
                    seen = cur.execute(
                        "select current_setting('app.clinic_id'), current_setting('app.user_id'),"
                        " (select count(*) from pg_cursors where name = 'held'),"
                        " to_regclass('pg_temp.stash') is null"
                    ).fetchone()
                    backends.add(cur.execute("select pg_backend_pid()").fetchone()[0])  # type: ignore[index]
                    mrns = [r[0] for r in cur.execute("select mrn from patients where mrn like 'PGB-%'").fetchall()]
                    if seen != (str(clinic), f"w{n}", 0, True) or mrns != [f"PGB-{clinic}"]:
                        problems.append(f"thread {n} clinic {clinic}: saw {seen} and {mrns}")
                    cur.execute("declare held cursor with hold for select mrn from patients")
                    if use == db.write:
                        cur.execute("create temporary table stash as select mrn from patients")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        db.close()
    assert problems == []
    assert len(backends) == 1, "the clients did not share one server session: the test proves nothing"


def test_behind_pgbouncer_a_write_is_read_back_and_the_token_is_issued(bouncer_url: str, clinic_pair: Any) -> None:
    """The closing message (and its WAL position for the causal token) works through the bouncer."""
    a, _b = clinic_pair
    with ClinicDB(bouncer_url, [], prepare_threshold=None) as db:
        mrn = f"PGB-{uuid.uuid4()}"
        with db.write(a) as cur:
            cur.execute("insert into patients (mrn, given_name, family_name) values (%s, 'T', 'K')", (mrn,))
        assert db.last_write_token() is not None
        with db.read(a) as cur:
            assert cur.execute("select count(*) from patients where mrn = %s", (mrn,)).fetchone() == (1,)
