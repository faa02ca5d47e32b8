"""Audit rows with no clinic on Citus (migration 0046): a TRUNCATE's record and prune's records land in
``clinicdb.audit_log_unscoped``, and sealing, verification and pruning cover them in the no-clinic chain."""

from __future__ import annotations

import csv
import gzip
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from citus_helpers import align_txid_counters, run_clinicdb, scoped

from clinicdb.devcluster.citus import CitusSet

NIL = uuid.UUID(int=0)


@pytest.fixture
def audited_table(admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh table distributed by clinic_id like the protected ones: its TRUNCATE trigger is the one
    attach_audit() attaches, created before distribution so that Citus copies it to every shard (as for
    ``patients``). protect_table() itself cannot run after citus_distribute() (docs/citus.md)."""
    name = f"public.unscoped_{uuid.uuid4().hex[:10]}"
    admin.execute(
        f"create table {name} (id uuid not null default gen_random_uuid(), clinic_id uuid not null, body text,"
        " primary key (clinic_id, id))"
    )
    admin.execute(
        f"create trigger clinicdb_audit_truncate after truncate on {name}"
        " for each statement execute function clinicdb.audit_capture_truncate()"
    )
    admin.execute("set citus.enable_unsafe_triggers = on")
    admin.execute("select create_distributed_table(%s, 'clinic_id', colocate_with => 'clinicdb.audit_log')", (name,))
    admin.execute("reset citus.enable_unsafe_triggers")
    try:
        yield name
    finally:
        admin.execute(f"drop table {name}")


def _truncate(citus: CitusSet, table: str, clinic_pair: tuple[uuid.UUID, uuid.UUID], *, commit: bool = True) -> None:
    """Fill ``table`` with rows of both clinics, then TRUNCATE it through the coordinator as a DBA would."""
    with psycopg.connect(citus.admin_url, autocommit=True) as conn:
        for clinic in clinic_pair:
            conn.execute(f"insert into {table} (clinic_id, body) values (%s, 'x'), (%s, 'y')", (clinic, clinic))
    with scoped(citus.admin_url, None) as conn:
        conn.execute("set local citus.propagate_set_commands = 'local'")
        conn.execute("set local app.user_id = 'dba-truncate'")
        conn.execute(f"truncate {table}")
        if not commit:
            conn.rollback()


def _records(admin: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    return admin.execute(
        "select id, clinic_id, action, app_user, row_id from clinicdb.audit_log_unscoped where table_name = %s",
        (table,),
    ).fetchall()


@contextmanager
def _every_copy(citus: CitusSet, admin: psycopg.Connection[Any]) -> Iterator[list[tuple[psycopg.Connection[Any], str]]]:
    """Superuser connections (triggers off) to every node's copy of the no-clinic table, with the copy's name."""
    placements = admin.execute(
        """select p.nodeport, shard_name('clinicdb.audit_log_unscoped', p.shardid)
             from pg_dist_shard_placement p join pg_dist_shard s on s.shardid = p.shardid
            where s.logicalrelid = 'clinicdb.audit_log_unscoped'::regclass"""
    ).fetchall()
    urls = [citus.admin_url, *citus.worker_admin_urls]
    conns = []
    try:
        for port, shard in placements:
            conn = psycopg.connect(next(u for u in urls if f":{port}/" in u), autocommit=True)
            conn.execute("set session_replication_role = replica")  # the append-only guard is a trigger
            conns.append((conn, str(shard)))
        yield conns
    finally:
        for conn, _ in conns:
            conn.close()


def _seal(citus: CitusSet) -> str:
    align_txid_counters(citus)
    done = run_clinicdb("audit", "seal", "--all", "--database-url", citus.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _sealed_in_no_clinic_chain(admin: psycopg.Connection[Any], audit_id: int) -> bool:
    row = admin.execute(
        "select exists (select 1 from clinicdb.audit_seals where clinic_id = %s and %s = any (row_ids))",
        (NIL, audit_id),
    ).fetchone()
    return bool(row and row[0])


def test_truncate_of_a_distributed_table_leaves_one_audit_record(
    citus: CitusSet,
    admin: psycopg.Connection[Any],
    audited_table: str,
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
) -> None:
    """A TRUNCATE of an audited distributed table through the coordinator succeeds and leaves exactly one
    record (no clinic, the DBA's user id), though its trigger also fires on every shard; none in the
    distributed trail."""
    _truncate(citus, audited_table, clinic_pair)
    assert admin.execute(f"select count(*) from {audited_table}").fetchone() == (0,)
    records = _records(admin, audited_table)
    assert [r[1:] for r in records] == [(None, "truncate", "dba-truncate", None)]
    assert admin.execute(
        "select count(*) from clinicdb.audit_log where table_name = %s", (audited_table,)
    ).fetchone() == (0,)


def test_rolled_back_truncate_leaves_no_record(
    citus: CitusSet,
    admin: psycopg.Connection[Any],
    audited_table: str,
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
) -> None:
    """The record is written in the truncating transaction: rolled back, the rows stay and no record is left."""
    _truncate(citus, audited_table, clinic_pair, commit=False)
    assert admin.execute(f"select count(*) from {audited_table}").fetchone() == (4,)
    assert _records(admin, audited_table) == []


def test_seal_and_verify_include_the_no_clinic_chain(
    citus: CitusSet,
    admin: psycopg.Connection[Any],
    audited_table: str,
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
) -> None:
    """`clinicdb audit seal` seals the truncate record into the no-clinic chain (`chain none:`), and
    `clinicdb audit verify` recomputes it: exit 0."""
    _truncate(citus, audited_table, clinic_pair)
    (audit_id, *_), *_ = _records(admin, audited_table)
    out = _seal(citus)
    assert "chain none:" in out
    assert _sealed_in_no_clinic_chain(admin, audit_id)
    done = run_clinicdb("audit", "verify", "--database-url", citus.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok:")


@pytest.mark.parametrize("tamper", ["altered", "deleted"])
def test_verify_names_a_tampered_no_clinic_row(
    citus: CitusSet,
    admin: psycopg.Connection[Any],
    audited_table: str,
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
    tamper: str,
) -> None:
    """A sealed no-clinic row changed or deleted on every node's copy (as a superuser, triggers off) is reported
    in the no-clinic chain and verify exits 1; put back, the trail verifies again."""
    _truncate(citus, audited_table, clinic_pair)
    (audit_id, *_), *_ = _records(admin, audited_table)
    _seal(citus)
    with _every_copy(citus, admin) as copies:
        for conn, shard in copies:
            conn.execute(f"create temp table kept as select * from {shard} where id = %s", (audit_id,))
            if tamper == "altered":
                conn.execute(f"update {shard} set app_user = 'someone else' where id = %s", (audit_id,))
            else:
                conn.execute(f"delete from {shard} where id = %s", (audit_id,))
        try:
            done = run_clinicdb("audit", "verify", "--database-url", citus.admin_url)
        finally:
            for conn, shard in copies:
                conn.execute(f"delete from {shard} where id = %s", (audit_id,))
                conn.execute(f"insert into {shard} select * from kept")
    assert done.returncode == 1, done.stdout + done.stderr
    if tamper == "altered":
        assert f"row altered: audit row {audit_id} (truncate {audited_table} " in done.stdout
        assert "differs from what block" in done.stdout and "of the no-clinic chain sealed" in done.stdout
    else:
        assert f"row deleted: audit row {audit_id} " in done.stdout
        assert "of the no-clinic chain) is missing" in done.stdout
    again = run_clinicdb("audit", "verify", "--database-url", citus.admin_url)
    assert again.returncode == 0, again.stdout + again.stderr


def test_no_clinic_rows_are_append_only_and_read_by_the_auditor_only(
    citus: CitusSet,
    admin: psycopg.Connection[Any],
    audited_table: str,
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
) -> None:
    """The app sees no no-clinic row and cannot write one; the owner's update is refused by the trail's guard;
    the auditor reads them."""
    _truncate(citus, audited_table, clinic_pair)
    with scoped(citus.app_url, clinic_pair[0]) as conn:
        assert conn.execute("select count(*) from clinicdb.audit_log_unscoped").fetchone() == (0,)
    with scoped(citus.app_url, clinic_pair[0]) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("insert into clinicdb.audit_log_unscoped (table_name, action) values ('x', 'truncate')")
    with psycopg.connect(citus.admin_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        conn.execute("set local role clinicdb_owner")
        conn.execute("update clinicdb.audit_log_unscoped set app_user = 'x' where table_name = %s", (audited_table,))
    assert "the audit trail is append-only" in str(refused.value)
    with psycopg.connect(citus.login_url("clinicdb_auditor_user")) as conn:
        rows = conn.execute(
            "select action from clinicdb.audit_log_unscoped where table_name = %s", (audited_table,)
        ).fetchall()
    assert rows == [("truncate",)]


def test_audit_tail_lists_the_no_clinic_rows(
    citus: CitusSet,
    admin: psycopg.Connection[Any],
    audited_table: str,
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
) -> None:
    """`clinicdb audit tail` on Citus shows a truncate record with the other rows; with --clinic it does not."""
    _truncate(citus, audited_table, clinic_pair)
    done = run_clinicdb("audit", "tail", "--table", audited_table, "--json", "--database-url", citus.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [(r["action"], r["clinic_id"], r["app_user"]) for r in json.loads(done.stdout)] == [
        ("truncate", None, "dba-truncate")
    ]
    scoped_tail = run_clinicdb(
        "audit", "tail", "--clinic", str(clinic_pair[0]), "--json", "--database-url", citus.admin_url
    )
    assert scoped_tail.returncode == 0, scoped_tail.stdout + scoped_tail.stderr
    assert all(r["action"] != "truncate" for r in json.loads(scoped_tail.stdout))


def test_prune_drops_a_month_with_its_no_clinic_rows_and_seals_its_record(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID], tmp_path: Path
) -> None:
    """`clinicdb audit archive` exports a month past retention with its no-clinic rows, and `clinicdb audit prune
    --require-archive` then drops it on Citus (its distributed partition and its no-clinic rows), seals a prune
    record in each chain that held rows of it, writes its `prune` row without a clinic, which the next seal puts
    into the no-clinic chain; verify passes throughout."""
    a, _ = clinic_pair
    partition = "clinicdb.audit_log_y2001m03"
    admin.execute(
        f"create table {partition} partition of clinicdb.audit_log"
        " for values from ('2001-03-01 00:00+00') to ('2001-04-01 00:00+00')"
    )
    admin.execute(f"alter table {partition} owner to clinicdb_owner")
    admin.execute(
        "insert into clinicdb.audit_log (clinic_id, table_name, row_id, action, logged_at, statement_at)"
        " values (%s, 'public.patients', 'old-1', 'insert', '2001-03-10', '2001-03-10'),"
        " (%s, 'public.patients', 'old-2', 'insert', '2001-03-11', '2001-03-11')",
        (a, a),
    )
    admin.execute(
        "insert into clinicdb.audit_log_unscoped (table_name, action, logged_at, statement_at)"
        " values ('public.patients', 'truncate', '2001-03-12', '2001-03-12')"
    )
    _seal(citus)

    archived = run_clinicdb(
        "audit", "archive", "--to", str(tmp_path), "--retention-days", "2555", "--database-url", citus.admin_url
    )
    assert archived.returncode == 0, archived.stdout + archived.stderr
    with gzip.open(tmp_path / f"{partition}.csv.gz", "rt") as csv_file:
        assert [r["action"] for r in csv.DictReader(csv_file)] == ["insert", "insert", "truncate"]
    done = run_clinicdb(
        "audit", "prune", "--retention-days", "2555", "--require-archive", str(tmp_path),
        "--database-url", citus.admin_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dropped 1 partition(s), 3 rows" in done.stdout
    assert admin.execute("select to_regclass(%s)", (partition,)).fetchone() == (None,)
    assert admin.execute(
        "select count(*) from clinicdb.audit_log_unscoped where logged_at < '2001-04-01 00:00+00'"
    ).fetchone() == (0,)
    prune_records = admin.execute(
        "select clinic_id, month_rows from clinicdb.audit_seals"
        " where kind = 'prune' and months = array[clinicdb.audit_month('2001-03-01 00:00+00')] order by clinic_id"
    ).fetchall()
    assert prune_records == [(NIL, [1]), (a, [2])]
    prune_row = admin.execute(
        "select id, clinic_id, (new_values ->> 'rows')::int from clinicdb.audit_log_unscoped"
        " where action = 'prune' and table_name = %s",
        (partition,),
    ).fetchone()
    assert prune_row and prune_row[1:] == (None, 3)
    verified = run_clinicdb("audit", "verify", "--database-url", citus.admin_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    _seal(citus)
    assert _sealed_in_no_clinic_chain(admin, prune_row[0])
    verified = run_clinicdb("audit", "verify", "--database-url", citus.admin_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_undoing_the_profile_refuses_while_no_clinic_rows_exist(
    citus: CitusSet,
    admin: psycopg.Connection[Any],
    audited_table: str,
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
) -> None:
    """Rolling 0046 back (its undo) cannot put no-clinic rows back into the distributed trail: it refuses in one
    message and changes nothing; applying the profile again is idempotent."""
    _truncate(citus, audited_table, clinic_pair)
    rewritten = (
        "select string_agg(pg_get_functiondef(r.fn), '' order by r.fn::text) from"
        " (select distinct fn from clinicdb._citus_unscoped_rewrites()) r"
    )
    before = admin.execute(rewritten).fetchone()
    assert before and "clinicdb.audit_log_unscoped" in before[0]
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
        admin.execute("call clinicdb.citus_unscoped_audit(true)")
    assert "cannot go back into the distributed trail" in str(refused.value)
    admin.execute("call clinicdb.citus_unscoped_audit()")
    assert admin.execute(rewritten).fetchone() == before
    assert admin.execute("select to_regclass('clinicdb.audit_log_unscoped')").fetchone() is not None


def test_undo_on_an_empty_table_restores_the_single_node_bodies(admin: psycopg.Connection[Any]) -> None:
    """With no row without a clinic, the undo (what rolling back 0046 runs) puts back every rewritten body and
    drops the table; applying the profile again brings both back (checked in a transaction that is undone)."""
    with admin.transaction(force_rollback=True):
        admin.execute("set local citus.propagate_set_commands = 'local'")
        admin.execute("set local clinicdb.audit_maintenance = 'on'")  # the guard on every copy
        admin.execute("delete from clinicdb.audit_log_unscoped")
        admin.execute("call clinicdb.citus_unscoped_audit(true)")
        assert admin.execute("select to_regclass('clinicdb.audit_log_unscoped')").fetchone() == (None,)
        left = admin.execute(
            "select r.fn::text, r.on_citus from clinicdb._citus_unscoped_rewrites() r"
            " where strpos(pg_get_functiondef(r.fn), r.on_citus) > 0"
            " or strpos(pg_get_functiondef(r.fn), r.single_node) = 0"
        ).fetchall()
        assert left == []
        admin.execute("call clinicdb.citus_unscoped_audit()")
        assert admin.execute(
            "select count(*) from clinicdb._citus_unscoped_rewrites() r"
            " where strpos(pg_get_functiondef(r.fn), r.on_citus) = 0"
        ).fetchone() == (0,)
        assert admin.execute("select to_regclass('clinicdb.audit_log_unscoped')::text").fetchone() == (
            "clinicdb.audit_log_unscoped",
        )
