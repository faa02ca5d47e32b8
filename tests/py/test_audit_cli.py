"""The audit trail from the command line (cli/audit.py) against a real server."""

from __future__ import annotations

import functools
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

import catalog
from clinicdb import schema
from clinicdb.devcluster.testing import ServerSet, scratch_database


def _run(servers: ServerSet, *args: str) -> Result:
    return _invoke(servers.admin_url, *args)


def _invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args, "--database-url", url])


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
    with scratch_database(servers.admin_url, "audit") as url:
        yield url


@pytest.fixture
def other_db(servers: ServerSet) -> Iterator[str]:
    """A second new, empty database."""
    with scratch_database(servers.admin_url, "audit") as url:
        yield url


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


# The chain, version 2 (#13 items 5 and 6, #16 item 3): per-clinic chains, sealed prunes, every problem reported,
# and a trail sealed by the global chain carried over by migration 0020.


def _rows(conn: psycopg.Connection, clinic: uuid.UUID | None, count: int, ago: str, purpose: str) -> None:
    """Committed audit rows of one clinic (or none), written ``ago`` (an interval) in the past."""
    conn.execute(
        "insert into clinicdb.audit_log (clinic_id, logged_at, table_name, row_id, action, purpose)"
        " select %s, now() - %s::interval, 'public.patients', 'row-' || g, 'access', %s || ' ' || g"
        " from generate_series(1, %s) g",
        (clinic, ago, purpose, count),
    )


def _head(output: str) -> str:
    """The ROUND:HASH of the `head:` line `audit seal` (or `audit prune`) printed."""
    line = next(line for line in output.splitlines() if line.startswith("head: "))
    return line.split()[1]


def _month(ago_days: int, conn: psycopg.Connection) -> tuple[str, str]:
    """The month (YYYY-MM) and partition of a time ``ago_days`` ago."""
    row = conn.execute(
        "select to_char(t at time zone 'UTC', 'YYYY-MM'), 'clinicdb.audit_log_y' || to_char(t at time zone 'UTC',"
        " 'YYYY\"m\"MM') from (select now() - make_interval(days => %s) as t) x",
        (ago_days,),
    ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def test_verify_names_a_truncated_month_whatever_the_pruned_months_table_says(fresh_servers: ServerSet) -> None:
    """A sealed month emptied by TRUNCATE, with a row forged into clinicdb.audit_pruned_months, fails
    `audit verify --expect`, naming the month and its partition (#13 item 5)."""
    with psycopg.connect(fresh_servers.admin_url, autocommit=True) as conn:
        clinic = conn.execute("select clinicdb.create_clinic('Truncated')").fetchone()[0]  # type: ignore[index]
        _rows(conn, clinic, 3, "2600 days", "old")
        _rows(conn, None, 1, "2600 days", "old system")
        conn.execute("select clinicdb.ensure_audit_partitions(0)")
        month, partition = _month(2600, conn)
        sealed = _run(fresh_servers, "seal")
        assert sealed.exit_code == 0, sealed.output
        with conn.transaction():
            conn.execute("select set_config('clinicdb.audit_maintenance', 'on', true)")
            conn.execute(f"truncate {partition}")
            conn.execute(
                "insert into clinicdb.audit_pruned_months (month, partition_name, row_count) values (%s, %s, 4)",
                (f"{month}-01", partition),
            )
    result = _run(fresh_servers, "verify", "--expect", _head(sealed.output))
    assert result.exit_code == 1, result.output
    assert f"audit month {month} ({partition}): 4 sealed rows missing and no sealed prune record" in result.output


def test_verify_prints_every_problem_not_only_the_first(fresh_servers: ServerSet) -> None:
    """A row altered in one clinic and a row deleted in another are both reported, one line each (#13 item 6)."""
    with psycopg.connect(fresh_servers.admin_url, autocommit=True) as conn:
        a = conn.execute("select clinicdb.create_clinic('A')").fetchone()[0]  # type: ignore[index]
        b = conn.execute("select clinicdb.create_clinic('B')").fetchone()[0]  # type: ignore[index]
        _rows(conn, a, 4, "2 hours", "a")
        _rows(conn, b, 4, "2 hours", "b")
        assert _run(fresh_servers, "seal", "--block-rows", "2").exit_code == 0
        altered = conn.execute("select id from clinicdb.audit_log where purpose = 'a 2'").fetchone()[0]  # type: ignore[index]
        deleted = conn.execute("select id from clinicdb.audit_log where purpose = 'b 3'").fetchone()[0]  # type: ignore[index]
        with conn.transaction():
            conn.execute("select set_config('clinicdb.audit_maintenance', 'on', true)")
            conn.execute("update clinicdb.audit_log set purpose = 'nothing to see' where id = %s", (altered,))
            conn.execute("delete from clinicdb.audit_log where id = %s", (deleted,))
    result = _run(fresh_servers, "verify")
    assert result.exit_code == 1
    assert f"row altered: audit row {altered} " in result.output
    assert f"row deleted: audit row {deleted} " in result.output


def test_verify_names_a_missing_block_its_hash_and_what_to_do(fresh_servers: ServerSet) -> None:
    """Blocks deleted from two chains are each named by clinic and number, with the hash they had and what to do;
    rows they sealed are counted beyond the listing limit."""
    with psycopg.connect(fresh_servers.admin_url, autocommit=True) as conn:
        a = conn.execute("select clinicdb.create_clinic('A')").fetchone()[0]  # type: ignore[index]
        b = conn.execute("select clinicdb.create_clinic('B')").fetchone()[0]  # type: ignore[index]
        _rows(conn, a, 6, "2 hours", "a")
        _rows(conn, b, 6, "2 hours", "b")
        assert _run(fresh_servers, "seal", "--block-rows", "2").exit_code == 0
        lost = {
            c: conn.execute(
                "select encode(prev_hash, 'hex') from clinicdb.audit_seals where clinic_id = %s and block_no = 2", (c,)
            ).fetchone()[0]  # type: ignore[index]
            for c in (a, b)
        }
        with conn.transaction():
            conn.execute("select set_config('clinicdb.audit_maintenance', 'on', true)")
            conn.execute("delete from clinicdb.audit_seals where clinic_id in (%s, %s) and block_no = 1", (a, b))
    result = _run(fresh_servers, "verify", "--max-rows", "1")
    assert result.exit_code == 1
    for clinic, digest in lost.items():
        assert (
            f"block missing: block 1 of clinic {clinic} is missing: its hash was {digest} (block 2's prev_hash). "
            "Restore it from a backup of clinicdb.audit_seals"
        ) in result.output
    assert "rows unsealed: 3 more not listed" in result.output
    assert result.output.splitlines()[-1].startswith("TAMPERED: 6 problems")


def test_seal_prints_each_chain_head_and_verify_checks_them(fresh_servers: ServerSet) -> None:
    """`audit seal` prints `chain CLINIC:BLOCK:HASH` for each chain it extended and the round head;
    `audit verify --expect` checks either form, and `none` names the chain of rows without a clinic."""
    with psycopg.connect(fresh_servers.admin_url, autocommit=True) as conn:
        clinic = conn.execute("select clinicdb.create_clinic('Heads')").fetchone()[0]  # type: ignore[index]
        _rows(conn, clinic, 2, "1 minute", "heads")
        _rows(conn, None, 1, "1 minute", "system")
    waiting = _run(fresh_servers, "seal")
    assert waiting.exit_code == 0 and waiting.output.startswith("sealed 0 rows"), "fresh rows wait for --max-wait"
    sealed = _run(fresh_servers, "seal", "--all")
    assert sealed.exit_code == 0, sealed.output
    chains = {line.split()[1].split(":")[0]: line.split()[1] for line in sealed.output.splitlines()
              if line.startswith("chain ")}  # fmt: skip
    assert set(chains) == {str(clinic), "none"}
    ok = _run(fresh_servers, "verify", "--expect", chains[str(clinic)], "--expect", chains["none"],
              "--expect", _head(sealed.output))  # fmt: skip
    assert ok.exit_code == 0, ok.output
    wrong = _run(fresh_servers, "verify", "--expect", f"{clinic}:1:{'0' * 64}")
    assert wrong.exit_code == 1
    assert f"anchor mismatch: block 1 of clinic {clinic} has hash {chains[str(clinic)].split(':')[2]}" in wrong.output


def test_prune_refuses_a_month_it_cannot_seal_whole(fresh_servers: ServerSet) -> None:
    """`audit prune` refuses in one line while a transaction still running writes into the month (its rows would be
    dropped unseen) or holds the sealing horizon below a row of it; once they ended it prunes with a sealed record
    that `audit verify` accepts."""
    with psycopg.connect(fresh_servers.admin_url, autocommit=True) as conn:
        _rows(conn, None, 2, "2600 days", "old")
        conn.execute("select clinicdb.ensure_audit_partitions(0)")
        month, partition = _month(2600, conn)
    with psycopg.connect(fresh_servers.admin_url) as writer:
        _rows(writer, None, 1, "2600 days", "still running")
        refused = _run(fresh_servers, "prune")
        assert refused.exit_code == 1
        assert refused.output.splitlines()[-1].startswith(
            f"Error: audit month {month} ({partition}): a transaction still running is writing into it"
        )
        writer.rollback()
    with (
        psycopg.connect(fresh_servers.admin_url) as older,
        psycopg.connect(fresh_servers.admin_url, autocommit=True) as conn,
    ):
        _rows(older, None, 1, "1 minute", "holds the horizon")
        _rows(conn, None, 1, "2600 days", "committed after it began")
        refused = _run(fresh_servers, "prune")
        assert refused.exit_code == 1
        assert refused.output.splitlines()[-1].startswith(
            f"Error: audit month {month} ({partition}): 1 rows are not sealed yet, so it cannot be pruned"
        )
        older.rollback()
    pruned = _run(fresh_servers, "prune")
    assert pruned.exit_code == 0, pruned.output
    assert "dropped 1 partition(s), 3 rows" in pruned.output
    verified = _run(fresh_servers, "verify", "--expect", _head(pruned.output))
    assert verified.exit_code == 0, verified.output


def _migrate_before(url: str, migration_id: str) -> None:
    """Apply the core migrations whose ids come before ``migration_id`` (a database as it was before it)."""
    with schema._quiet():
        found = schema._read([schema.set_folder(schema.CORE)])
    chosen = found.__class__([m for m in found if m.id < migration_id])
    with schema._backend(url) as backend, schema._quiet():
        backend.apply_migrations(backend.to_apply(chosen))


def test_a_trail_sealed_by_the_global_chain_stays_verifiable_after_0020(empty_db: str) -> None:
    """Migration 0020 keeps the global chain as the legacy chain: heads kept before still check, months pruned
    before stay excused, later rows go to per-clinic chains, and tampering with legacy evidence is reported."""
    _migrate_before(empty_db, "0020")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        clinic = conn.execute("select clinicdb.create_clinic('Legacy')").fetchone()[0]  # type: ignore[index]
        _rows(conn, clinic, 3, "2700 days", "pruned before")
        _rows(conn, clinic, 3, "2500 days", "pruned after")
        _rows(conn, None, 2, "2500 days", "pruned after, system")
        _rows(conn, clinic, 4, "2 hours", "recent")
        conn.execute("select clinicdb.ensure_audit_partitions(0)")
        conn.execute("select count(*) from clinicdb.seal_audit(3)")
        old_head = conn.execute("select head_block, head_hash from clinicdb.audit_seal_status()").fetchone()
        assert old_head is not None
        conn.execute("select count(*) from clinicdb.prune_audit(interval '2600 days', false)")
        assert conn.execute("select count(*) from clinicdb.verify_audit()").fetchone() == (0,)
        blocks = conn.execute("select block_no, block_hash from clinicdb.audit_seals order by 1").fetchall()

    migrated = CliRunner().invoke(cli, ["migrate", "--database-url", empty_db])
    assert migrated.exit_code == 0 and "0020.audit-chain-per-clinic" in migrated.output, migrated.output
    run = functools.partial(_invoke, empty_db)
    anchor = f"{old_head[0]}:{old_head[1]}"
    kept = run("verify", "--expect", anchor)
    assert kept.exit_code == 0, kept.output
    assert f"legacy chain {len(blocks)} blocks" in kept.output
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute("select block_no, block_hash from clinicdb.audit_seals_legacy order by 1").fetchall() == (
            blocks
        ), "the legacy chain is kept as it was"
        assert conn.execute(
            "select count(*) from clinicdb.audit_seals where kind = 'prune-legacy' and months[1] ="
            " clinicdb.audit_month(now() - interval '2700 days')"
        ).fetchone() == (1,), "the month pruned before the upgrade is sealed as pruned"
        _rows(conn, clinic, 2, "1 hour", "after the cut-over")
    sealed = run("seal", "--all")
    assert sealed.exit_code == 0 and f"chain {clinic}:1:" in sealed.output, sealed.output
    pruned = run("prune", "--retention-days", "2400")
    assert pruned.exit_code == 0 and "dropped 1 partition(s), 5 rows" in pruned.output, pruned.output
    assert run("verify", "--expect", anchor, "--expect", _head(pruned.output)).exit_code == 0

    with psycopg.connect(empty_db, autocommit=True) as conn:
        victim = conn.execute("select id from clinicdb.audit_log where purpose = 'recent 2'").fetchone()[0]  # type: ignore[index]
        with conn.transaction():
            conn.execute("select set_config('clinicdb.audit_maintenance', 'on', true)")
            conn.execute("update clinicdb.audit_log set purpose = 'rewritten' where id = %s", (victim,))
            last = conn.execute(
                "delete from clinicdb.audit_seals_legacy where block_no = (select max(block_no)"
                " from clinicdb.audit_seals_legacy) returning block_no, encode(block_hash, 'hex')"
            ).fetchone()
            assert last is not None
    tampered = run("verify", "--expect", anchor)
    assert tampered.exit_code == 1
    assert f"row altered: audit row {victim} " in tampered.output
    assert (
        f"block missing: block {last[0]} of the legacy chain, its last, is missing: its hash was {last[1]}"
    ) in tampered.output
    assert f"anchor mismatch: block {old_head[0]} of the legacy chain no longer exists" in tampered.output


def test_rolling_back_0020_reseals_into_the_global_chain(empty_db: str, other_db: str) -> None:
    """Rolling back 0020 refuses while the chains fail verification; otherwise it re-seals every row after the
    cut-over into the global chain, which the first format's verify accepts, and leaves the catalog as 0011 did."""
    # Migrations newer than 0020 are rolled back first, so 0020 is the newest.
    newer = [m for m in schema.apply(empty_db) if m.split(".")[0] > "0020"]
    if newer:
        assert schema.rollback(empty_db, count=len(newer)) == sorted(newer, reverse=True)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        clinic = conn.execute("select clinicdb.create_clinic('Back')").fetchone()[0]  # type: ignore[index]
        _rows(conn, clinic, 3, "2 hours", "back")
        _rows(conn, None, 1, "2 hours", "back system")
    assert _invoke(empty_db, "seal", "--all").exit_code == 0
    with psycopg.connect(empty_db, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("select set_config('clinicdb.audit_maintenance', 'on', true)")
            conn.execute("update clinicdb.audit_log set purpose = 'rewritten' where purpose = 'back 1'")
        with pytest.raises(psycopg.Error, match="rolling back 0020 would discard per-clinic seal chains"):
            schema.rollback(empty_db)
        with conn.transaction():
            conn.execute("select set_config('clinicdb.audit_maintenance', 'on', true)")
            conn.execute("update clinicdb.audit_log set purpose = 'back 1' where purpose = 'rewritten'")
    assert schema.rollback(empty_db) == ["0020.audit-chain-per-clinic"]
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute("select count(*) from clinicdb.verify_audit()").fetchone() == (0,)
        sealed = conn.execute("select sum(row_count) from clinicdb.audit_seals").fetchone()
        assert sealed == conn.execute("select count(*) from clinicdb.audit_log").fetchone(), "every row sealed again"
    _migrate_before(other_db, "0020")
    differences = catalog.diff(catalog.snapshot(other_db), catalog.snapshot(empty_db))
    assert not differences, "\n".join(differences)
    assert "0020.audit-chain-per-clinic" in schema.apply(empty_db)
    assert _invoke(empty_db, "verify").exit_code == 0
