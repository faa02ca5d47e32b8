"""The audit trail from the command line (cli/audit.py) against a real server."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from clinicdb_cli.audit import demo_audit_history
from clinicdb_cli.main import cli
from psycopg import sql

from clinicdb import schema
from clinicdb._url import replace_url
from clinicdb.devcluster.testing import ServerSet


def _run(servers: ServerSet, *args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args, "--database-url", servers.admin_url])


def _app_write(servers: ServerSet, clinic: uuid.UUID, user: str, sql_text: str) -> None:
    with psycopg.connect(servers.app_url) as conn:
        conn.execute(
            "select set_config('app.clinic_id', %s, true), set_config('app.user_id', %s, true)", (str(clinic), user)
        )
        conn.execute(sql_text)


def _old_partition(admin: psycopg.Connection, days_ago: int, purpose: str) -> str:
    """An audit row (and its month's partition) far in the past, as if written then."""
    admin.execute(
        "insert into clinicdb.audit_log (logged_at, table_name, action, purpose)"
        " values (now() - make_interval(days => %s), 'public.patients', 'access', %s)",
        (days_ago, purpose),
    )
    admin.execute("select clinicdb.ensure_audit_partitions(0)")
    row = admin.execute(
        "select tableoid::regclass::text from clinicdb.audit_log where purpose = %s", (purpose,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_prune_dry_run_says_what_it_would_drop_and_drops_nothing(servers: ServerSet, admin: psycopg.Connection) -> None:
    """`audit prune --dry-run` lists only partitions past retention and leaves every row in place."""
    old = _old_partition(admin, 2700, f"dry {uuid.uuid4()}")
    _old_partition(admin, 2400, f"kept {uuid.uuid4()}")
    result = _run(servers, "prune", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    planned = json.loads(result.output)
    assert [p["partition"] for p in planned] == [old]
    assert planned[0]["action"] == "would drop"
    assert admin.execute("select to_regclass(%s)", (old,)).fetchone() == (old,)


def test_prune_drops_only_expired_partitions_and_leaves_a_row(servers: ServerSet, admin: psycopg.Connection) -> None:
    """`audit prune` drops whole partitions past retention, keeps the rest, and audits itself."""
    old = _old_partition(admin, 2800, f"old {uuid.uuid4()}")
    kept_purpose = f"kept {uuid.uuid4()}"
    kept = _old_partition(admin, 2300, kept_purpose)
    result = _run(servers, "prune")
    assert result.exit_code == 0, result.output
    assert old in result.output and "dropped" in result.output
    assert admin.execute("select to_regclass(%s)", (old,)).fetchone() == (None,)
    assert admin.execute("select to_regclass(%s)", (kept,)).fetchone() == (kept,)
    assert admin.execute("select count(*) from clinicdb.audit_log where purpose = %s", (kept_purpose,)).fetchone() == (
        1,
    )
    assert admin.execute(
        "select count(*) from clinicdb.audit_log where action = 'prune' and table_name = %s", (old,)
    ).fetchone() == (1,)


def test_archive_writes_compressed_partitions_with_a_checksum_manifest(
    servers: ServerSet, admin: psycopg.Connection, tmp_path: Path
) -> None:
    """`audit archive --to DIR` writes each expiring partition as .csv.gz, and the manifest's checksums match."""
    purpose = f"archive {uuid.uuid4()}"
    old = _old_partition(admin, 2900, purpose)
    refused = _run(servers, "prune", "--require-archive", str(tmp_path))
    assert refused.exit_code == 1 and "is not archived" in refused.output
    assert admin.execute("select to_regclass(%s)", (old,)).fetchone() == (old,)

    result = _run(servers, "archive", "--to", str(tmp_path))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = next(e for e in manifest if e["partition"] == old)
    data = tmp_path / entry["file"]
    assert hashlib.sha256(data.read_bytes()).hexdigest() == entry["sha256"]
    assert f"{entry['sha256']}  {entry['file']}" in (tmp_path / "MANIFEST.sha256").read_text()
    lines = gzip.decompress(data.read_bytes()).decode().splitlines()
    assert lines[0].startswith("id,logged_at,")
    assert len(lines) - 1 == entry["rows"] and any(purpose in line for line in lines)

    pruned = _run(servers, "prune", "--require-archive", str(tmp_path))
    assert pruned.exit_code == 0, pruned.output
    assert admin.execute("select to_regclass(%s)", (old,)).fetchone() == (None,)


@pytest.fixture
def sealed(servers: ServerSet, admin: psycopg.Connection, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> Iterator[int]:
    """Fresh application changes, sealed; yields one sealed audit id. Undoes any tampering afterwards."""
    user = f"sealer-{uuid.uuid4().hex[:6]}"
    _app_write(
        servers, clinic_pair[0], user, "insert into patients (mrn, given_name, family_name) values ('S-1', 'S', 'T')"
    )
    result = _run(servers, "seal", "--all", "--block-rows", "50")
    assert result.exit_code == 0, result.output
    row = admin.execute(
        "select id, purpose from clinicdb.audit_log where app_user = %s and action = 'insert'", (user,)
    ).fetchone()
    assert row is not None
    yield row[0]
    with admin.transaction():
        admin.execute("select set_config('clinicdb.audit_maintenance', 'on', true)")
        admin.execute("update clinicdb.audit_log set purpose = %s where id = %s", (row[1], row[0]))


def test_verify_passes_on_an_untouched_trail(servers: ServerSet, sealed: int) -> None:
    """`audit verify` recomputes every sealed block and exits 0 when nothing changed."""
    result = _run(servers, "verify", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["ok"] and report["rows"] > 0


def test_verify_names_a_row_a_superuser_edited(servers: ServerSet, admin: psycopg.Connection, sealed: int) -> None:
    """A sealed audit row edited by a superuser makes `audit verify` exit 1 naming that row."""
    with admin.transaction():
        admin.execute("select set_config('clinicdb.audit_maintenance', 'on', true)")
        admin.execute("update clinicdb.audit_log set purpose = 'nothing to see' where id = %s", (sealed,))
    result = _run(servers, "verify")
    assert result.exit_code == 1
    assert f"row altered: audit row {sealed} " in result.output


def test_verify_checks_a_head_kept_elsewhere(servers: ServerSet, admin: psycopg.Connection, sealed: int) -> None:
    """`audit verify --expect ROUND:HASH` fails when the round chain no longer has the head recorded earlier."""
    head = admin.execute("select head_round, head_hash from clinicdb.audit_seal_status()").fetchone()
    assert head is not None
    ok = _run(servers, "verify", "--expect", f"{head[0]}:{head[1]}")
    assert ok.exit_code == 0, ok.output
    wrong = _run(servers, "verify", "--expect", f"{head[0]}:{'0' * 64}")
    assert wrong.exit_code == 1 and f"anchor mismatch: round {head[0]} has hash {head[1]}" in wrong.output
    bad = _run(servers, "verify", "--expect", "nonsense")
    assert bad.exit_code == 1 and bad.output.startswith("Error: --expect wants ROUND:HASH or CLINIC:BLOCK:HASH")


def test_sealing_never_waits_for_writers_nor_blocks_them(
    servers: ServerSet, admin: psycopg.Connection, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A seal runs while a writer's transaction is open, leaves its rows for later, and never blocks writers."""
    clinic = str(clinic_pair[0])
    user = f"open-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(servers.app_url) as writer, psycopg.connect(servers.admin_url) as sealer:
        writer.execute(
            "select set_config('app.clinic_id', %s, true), set_config('app.user_id', %s, true)", (clinic, user)
        )
        writer.execute("insert into patients (mrn, given_name, family_name) values (%s, 'Open', 'Tx')", (user,))
        sealer.execute("set statement_timeout = '20s'")
        sealer.execute("select count(*) from clinicdb.seal_audit()")
        # The sealer's transaction stays open; another writer must not wait for it.
        done = threading.Event()

        def second_writer() -> None:
            with psycopg.connect(servers.app_url) as conn:
                conn.execute("set lock_timeout = '5s'")
                conn.execute("select set_config('app.clinic_id', %s, true)", (clinic,))
                conn.execute(
                    "insert into patients (mrn, given_name, family_name) values (%s, 'W', 'Two')", (user + "b",)
                )
            done.set()

        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join(timeout=15)
        assert done.is_set(), "a writer waited for the sealer"
        sealer.commit()
        writer.commit()
    row = admin.execute("select id, txid from clinicdb.audit_log where app_user = %s", (user,)).fetchone()
    assert row is not None
    head = admin.execute(
        "select coalesce(max(hi_txid), 0) from clinicdb.audit_seals where clinic_id = %s", (clinic_pair[0],)
    ).fetchone()
    assert head is not None and head[0] <= row[1], "a row of a transaction still open was sealed"
    assert _run(servers, "seal", "--all").exit_code == 0
    assert _run(servers, "verify").exit_code == 0


def test_tail_filters_by_clinic_table_and_user(servers: ServerSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """`audit tail --clinic --table --user --json` returns only the matching rows, newest last."""
    a, b = clinic_pair
    user = f"tail-{uuid.uuid4().hex[:6]}"
    _app_write(servers, a, user, "insert into patients (mrn, given_name, family_name) values ('T-1', 'Tai', 'L')")
    _app_write(servers, a, user, "update patients set address = '555 Elm' where mrn = 'T-1'")
    _app_write(servers, b, user, "insert into patients (mrn, given_name, family_name) values ('T-1', 'Oth', 'Er')")
    result = _run(servers, "tail", "--clinic", str(a), "--table", "patients", "--user", user, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["action"] for r in rows] == ["insert", "update"]
    assert {r["clinic_id"] for r in rows} == {str(a)}
    text = _run(servers, "tail", "--user", user)
    assert text.exit_code == 0 and text.output.count("public.patients") == 3


def test_history_shows_every_change_of_one_row(
    servers: ServerSet, admin: psycopg.Connection, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """`audit history TABLE ID` lists the row's insert, updates and delete with what changed."""
    a = clinic_pair[0]
    mrn = f"H-{uuid.uuid4().hex[:6]}"
    _app_write(
        servers, a, "hist", f"insert into patients (mrn, given_name, family_name) values ('{mrn}', 'His', 'Tory')"
    )
    _app_write(servers, a, "hist", f"update patients set given_name = 'Hiss' where mrn = '{mrn}'")
    _app_write(servers, a, "hist", f"delete from patients where mrn = '{mrn}'")
    row = admin.execute(
        "select row_id from clinicdb.audit_log where new_values ->> 'mrn' = %s and action = 'insert'", (mrn,)
    ).fetchone()
    assert row is not None
    result = _run(servers, "history", "patients", row[0])
    assert result.exit_code == 0, result.output
    assert "given_name: 'His' -> 'Hiss'" in result.output
    assert [line.split()[5] for line in result.output.splitlines()[2:]] == ["insert", "update", "delete"]
    missing = _run(servers, "history", "patients", "no-such-row")
    assert missing.exit_code == 0 and "no audit rows" in missing.output


def test_demo_audit_history_prints_the_clinics_newest_rows(
    servers: ServerSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    """demo_audit_history prints a short table of one clinic's newest audit rows."""
    a = clinic_pair[0]
    _app_write(
        servers, a, "demo-user", "insert into patients (mrn, given_name, family_name) values ('D-1', 'De', 'Mo')"
    )
    demo_audit_history(servers.admin_url, a)
    out = capsys.readouterr().out
    assert "demo-user" in out and "public.patients" in out


def test_unreachable_server_is_one_line() -> None:
    """An audit command against a server that is not there prints one error line, not a traceback."""
    result = CliRunner().invoke(
        cli, ["audit", "tail", "--database-url", "postgresql://postgres@127.0.0.1:1/nope?connect_timeout=2"]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1 and result.output.startswith("Error: ")


@pytest.fixture
def empty_db(servers: ServerSet) -> Iterator[str]:
    """A new, empty database on the test server."""
    name = f"audit_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    yield replace_url(servers.admin_url, database=name)
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def test_rolling_back_the_audit_migration_detaches_every_trigger(empty_db: str) -> None:
    """Rolling back 0004.audit (and what came after it) removes the triggers from every table; migrating again
    attaches them again."""
    query = (
        "select count(*) from pg_trigger where tgname in"
        " ('clinicdb_audit_insert', 'clinicdb_audit_update', 'clinicdb_audit_delete', 'clinicdb_audit_truncate')"
    )
    audited = "select count(*) from clinicdb.protected_tables where table_name <> 'clinicdb.policy_reference'::regclass"
    applied = schema.apply(empty_db, reference=True)
    with psycopg.connect(empty_db) as conn:
        attached = conn.execute(query).fetchone()
        tables = conn.execute(audited).fetchone()
    assert attached is not None and tables is not None and tables[0] >= 6
    assert attached[0] == 4 * tables[0], "every audited table carries the four audit triggers"
    later = applied[applied.index("0004.audit") :]
    assert schema.rollback(empty_db, count=len(later)) == list(reversed(later))
    with psycopg.connect(empty_db) as conn:
        assert conn.execute(query).fetchone() == (0,)
        assert conn.execute("select to_regclass('clinicdb.audit_log')").fetchone() == (None,)
        conn.execute("select clinicdb.create_clinic('after rollback')")
    schema.apply(empty_db, reference=True)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute(query).fetchone() == attached


def test_partitions_creates_months_ahead_and_lists_them(servers: ServerSet) -> None:
    """`audit partitions --months-ahead 5` creates the coming months' partitions and lists every partition."""
    result = _run(servers, "partitions", "--months-ahead", "5", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    names = [p["partition"] for p in listed]
    assert "clinicdb.audit_log_default" in names
    assert sum(1 for n in names if n.startswith("clinicdb.audit_log_y")) >= 6
    again = _run(servers, "partitions", "--months-ahead", "5")
    assert again.exit_code == 0 and "created" not in again.output
