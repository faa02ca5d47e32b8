"""Protecting a table on a Citus coordinator that is already distributed (issue #16): the table a DBA adds to a
running database is distributed, isolated and audited exactly like the ones distributed at migrate time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from citus_helpers import run_clinicdb, scoped
from psycopg import sql

from clinicdb.devcluster.citus import CitusSet


def _drop(admin: psycopg.Connection[Any], name: str) -> None:
    """What a `clinicdb new table` rollback does: unregister, detach, drop (the audit rows stay). Citus drops a
    distributed table's triggers only with citus.enable_unsafe_triggers on, one connection per node."""
    if admin.execute("select to_regclass(%s)", (name,)).fetchone() == (None,):
        return
    admin.execute("set citus.enable_unsafe_triggers = on")
    admin.execute("set citus.multi_shard_modify_mode = sequential")
    admin.execute("select clinicdb.detach_audit(%s::regclass)", (name,))
    admin.execute("delete from clinicdb.audit_settings where table_name = %s::regclass", (name,))
    admin.execute("delete from clinicdb.protected_tables where table_name = %s::regclass", (name,))
    admin.execute(sql.SQL("drop table {}").format(sql.Identifier(*name.split("."))))


def _create(admin: psycopg.Connection[Any], name: str, key: str = "primary key (clinic_id, id)") -> None:
    """A tenant table as `clinicdb new table` writes it (a foreign key to clinics, which makes Citus keep it as a
    Citus-local table), created through the coordinator by the superuser with DDL propagation on."""
    table = sql.Identifier(*name.split("."))
    admin.execute(
        sql.SQL(
            "create table {} (id uuid not null default gen_random_uuid(),"
            " clinic_id uuid not null references clinicdb.clinics (id), reason text,"
            " updated_at timestamptz not null default now(), {})"
        ).format(table, sql.SQL(key))
    )
    admin.execute(sql.SQL("alter table {} owner to clinicdb_owner").format(table))
    admin.execute(sql.SQL("grant select, insert, update, delete on {} to clinicdb_app, clinicdb_staff").format(table))
    admin.execute(sql.SQL("grant select on {} to clinicdb_readonly").format(table))


@pytest.fixture
def new_table(admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh tenant table on the distributed coordinator, not protected yet; dropped afterwards."""
    name = f"public.visits_{uuid.uuid4().hex[:8]}"
    _create(admin, name)
    yield name
    _drop(admin, name)


@pytest.fixture
def protected(admin: psycopg.Connection[Any], new_table: str) -> str:
    """``new_table`` after ``select clinicdb.protect_table(...)``."""
    admin.execute("select clinicdb.protect_table(%s)", (new_table,))
    return new_table


def test_a_table_protected_after_distribution_is_distributed_and_colocated(
    admin: psycopg.Connection[Any], citus: CitusSet, protected: str
) -> None:
    """protect_table() on a distributed coordinator distributes the table by clinic_id in the co-location group of
    the audit trail (shards on both workers), registers it and gives it the policies of the one definition."""
    rows = dict(
        admin.execute(
            "select table_name::text, (citus_table_type, distribution_column, colocation_id) from citus_tables"
            " where table_name in (%s::regclass, 'clinicdb.audit_log'::regclass, 'public.patients'::regclass)",
            (protected,),
        ).fetchall()
    )
    name = protected.removeprefix("public.")
    assert rows[name][0] == "distributed" and rows[name][1] == "clinic_id"
    assert rows[name][2] == rows["clinicdb.audit_log"][2] == rows["patients"][2]
    nodes = admin.execute(
        "select count(distinct (nodename, nodeport)) from citus_shards where table_name = %s::regclass", (protected,)
    ).fetchone()
    assert nodes == (len(citus.worker_admin_urls),)
    assert admin.execute(
        "select count(*) from clinicdb.protected_tables where table_name = %s::regclass", (protected,)
    ).fetchone() == (1,)
    policies = admin.execute(
        "select p.policyname::text, coalesce(p.qual, ''), coalesce(p.with_check, '') from pg_policies p"
        " where p.schemaname = 'public' and p.tablename = %s order by 1",
        (name,),
    ).fetchall()
    expected = admin.execute(
        "select p.policyname::text, coalesce(p.qual, ''), coalesce(p.with_check, '') from pg_policies p"
        " where p.schemaname = 'public' and p.tablename = 'patients' and p.policyname like 'clinicdb_tenant_%'"
        " order by 1"
    ).fetchall()
    assert policies == expected and len(policies) == 4


def test_app_sees_only_its_clinic_on_every_shard_of_a_table_protected_after_distribution(
    citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], protected: str
) -> None:
    """With clinic A in force, a query over every shard of the new table returns A's rows and none of B's; naming
    B in the filter returns nothing."""
    a, b = clinic_pair
    table = sql.Identifier(*protected.split("."))
    for clinic, reason in ((a, "A-1"), (b, "B-1")):
        with scoped(citus.app_url, clinic) as conn:
            conn.execute(sql.SQL("insert into {} (reason) values (%s)").format(table), (reason,))
    with scoped(citus.app_url, a) as conn:
        assert conn.execute(sql.SQL("select reason, clinic_id from {}").format(table)).fetchall() == [("A-1", a)]
        assert conn.execute(sql.SQL("select reason from {} where clinic_id = %s").format(table), (b,)).fetchall() == []
        updated = conn.execute(sql.SQL("update {} set reason = 'changed'").format(table)).rowcount
    assert updated == 1
    with scoped(citus.app_url, b) as conn:
        assert conn.execute(sql.SQL("select reason from {}").format(table)).fetchall() == [("B-1",)]


def test_no_clinic_fails_closed_on_a_table_protected_after_distribution(
    admin: psycopg.Connection[Any], citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], protected: str
) -> None:
    """With no clinic in force, reads of the new table return no row and writes raise 'no clinic is in force'."""
    a, _ = clinic_pair
    table = sql.Identifier(*protected.split("."))
    with scoped(citus.app_url, a) as conn:
        conn.execute(sql.SQL("insert into {} (reason) values ('A-2')").format(table))
    with scoped(citus.app_url, None) as conn:
        assert conn.execute(sql.SQL("select count(*) from {}").format(table)).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no clinic is in force"):
            conn.execute(sql.SQL("insert into {} (reason) values ('X')").format(table))
    assert admin.execute(sql.SQL("select count(*) from {}").format(table)).fetchone() == (1,)


def test_writes_to_a_table_protected_after_distribution_are_audited_once_with_their_clinic(
    admin: psycopg.Connection[Any], citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], protected: str
) -> None:
    """An insert, an update and a delete through the coordinator leave one audit row each, with the clinic, the
    row's id and the app user; a rolled-back insert leaves none."""
    a, _ = clinic_pair
    table = sql.Identifier(*protected.split("."))
    with scoped(citus.app_url, a, user_id="nurse-7") as conn:
        (row_id,) = conn.execute(sql.SQL("insert into {} (reason) values ('r') returning id").format(table)).fetchall()[
            0
        ]
    with scoped(citus.app_url, a, user_id="nurse-7") as conn:
        conn.execute(sql.SQL("update {} set reason = 'r2' where clinic_id = %s and id = %s").format(table), (a, row_id))
    with scoped(citus.app_url, a, user_id="nurse-7") as conn:
        conn.execute(sql.SQL("delete from {} where clinic_id = %s and id = %s").format(table), (a, row_id))
    with scoped(citus.app_url, a, user_id="nurse-7") as conn:
        conn.execute(sql.SQL("insert into {} (reason) values ('undone')").format(table))
        conn.rollback()
    rows = admin.execute(
        "select action, clinic_id, row_id, app_user from clinicdb.audit_log where table_name = %s order by id",
        (protected,),
    ).fetchall()
    assert rows == [
        ("insert", a, str(row_id), "nurse-7"),
        ("update", a, str(row_id), "nurse-7"),
        ("delete", a, str(row_id), "nurse-7"),
    ]


def test_check_passes_after_protecting_a_table_after_distribution(citus: CitusSet, protected: str) -> None:
    """`clinicdb check` finds nothing on the coordinator once the new table is protected (policies, audit
    triggers, registry, every node)."""
    done = run_clinicdb("check", "--database-url", citus.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok:" in done.stdout


def test_protecting_again_changes_nothing(admin: psycopg.Connection[Any], protected: str) -> None:
    """protect_table() stays idempotent on the distributed table: a second call succeeds and leaves it distributed
    with the row-level audit capture."""
    before = admin.execute("select %s::regclass::oid", (protected,)).fetchone()
    admin.execute("select clinicdb.protect_table(%s)", (protected,))
    assert admin.execute("select %s::regclass::oid", (protected,)).fetchone() == before
    triggers = admin.execute(
        "select tgname::text, tgfoid::regproc::text from pg_trigger where tgrelid = %s::regclass"
        " and tgname in ('clinicdb_audit_insert', 'clinicdb_audit_delete') order by 1",
        (protected,),
    ).fetchall()
    assert triggers == [
        ("clinicdb_audit_delete", "clinicdb.audit_capture_row"),
        ("clinicdb_audit_insert", "clinicdb.audit_capture_row"),
    ]


def test_cli_protect_works_on_a_distributed_coordinator(
    admin: psycopg.Connection[Any], citus: CitusSet, new_table: str
) -> None:
    """`clinicdb protect TABLE` adopts a new table on the distributed coordinator: exit 0, distributed by
    clinic_id, and its own check finds nothing."""
    done = run_clinicdb("protect", new_table, "--database-url", citus.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"protected {new_table}" in done.stdout
    assert admin.execute(
        "select citus_table_type, distribution_column from citus_tables where table_name = %s::regclass",
        (new_table,),
    ).fetchone() == ("distributed", "clinic_id")


def test_a_key_without_clinic_id_is_refused_and_nothing_changes(admin: psycopg.Connection[Any]) -> None:
    """On Citus a primary key without clinic_id is refused in one message that says what to do; the table is left
    as it was (not distributed, not registered, no policy)."""
    name = f"public.visits_{uuid.uuid4().hex[:8]}"
    _create(admin, name, key="primary key (id)")
    try:
        with pytest.raises(psycopg.errors.InvalidTableDefinition) as raised:
            admin.execute("select clinicdb.protect_table(%s)", (name,))
        assert "every primary and unique key must include clinic_id" in raised.value.diag.message_primary
        assert "primary key (clinic_id, id)" in (raised.value.diag.message_hint or "")
        assert admin.execute(
            "select count(*) from citus_tables where table_name = %s::regclass and citus_table_type = 'distributed'",
            (name,),
        ).fetchone() == (0,)
        assert admin.execute(
            "select count(*) from clinicdb.protected_tables where table_name = %s::regclass", (name,)
        ).fetchone() == (0,)
        assert admin.execute("select count(*) from pg_policy where polrelid = %s::regclass", (name,)).fetchone() == (0,)
    finally:
        admin.execute(sql.SQL("drop table {}").format(sql.Identifier(*name.split("."))))


def test_a_new_table_migration_is_distributed_and_audited(
    admin: psycopg.Connection[Any], citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], tmp_path: Path
) -> None:
    """A `clinicdb new table` migration applied by `clinicdb migrate --source` on the distributed coordinator (DDL
    propagation off, as every migration there) leaves the table distributed, isolated and audited; its rollback
    removes it."""
    name = f"visits_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "migrations"
    written = run_clinicdb("new", "table", name, "--column", "reason:text", "--source", str(folder))
    assert written.returncode == 0, written.stdout + written.stderr
    try:
        done = run_clinicdb("migrate", "--database-url", citus.admin_url, "--source", str(folder))
        assert done.returncode == 0, done.stdout + done.stderr
        assert admin.execute(
            "select citus_table_type, distribution_column from citus_tables where table_name = %s::regclass",
            (f"public.{name}",),
        ).fetchone() == ("distributed", "clinic_id")
        a, b = clinic_pair
        table = sql.Identifier(name)
        for clinic in (a, b):
            with scoped(citus.app_url, clinic, user_id="u-1") as conn:
                conn.execute(sql.SQL("insert into {} (reason) values ('x')").format(table))
        with scoped(citus.app_url, a) as conn:
            assert conn.execute(sql.SQL("select clinic_id from {}").format(table)).fetchall() == [(a,)]
        # One row per insert, each with its clinic (audit ids come from each worker's own sequence range: no order).
        assert sorted(
            admin.execute(
                "select clinic_id::text, action from clinicdb.audit_log where table_name = %s", (f"public.{name}",)
            ).fetchall()
        ) == sorted([(str(a), "insert"), (str(b), "insert")])
        checked = run_clinicdb("check", "--database-url", citus.admin_url)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        if admin.execute("select to_regclass(%s)", (f"public.{name}",)).fetchone() != (None,):
            admin.execute(sql.SQL("delete from {}").format(sql.Identifier(name)))
        # The rollback drops the table's audit triggers and capture functions: on a distributed table Citus
        # wants unsafe triggers on and one connection per node.
        back = run_clinicdb(
            "rollback",
            "--database-url",
            citus.admin_url,
            "--source",
            str(folder),
            env={"PGOPTIONS": "-c citus.enable_unsafe_triggers=on -c citus.multi_shard_modify_mode=sequential"},
        )
        assert back.returncode == 0, back.stdout + back.stderr
    assert admin.execute("select to_regclass(%s)", (f"public.{name}",)).fetchone() == (None,)


def test_cli_protect_refuses_a_key_without_clinic_id_in_one_line(
    admin: psycopg.Connection[Any], citus: CitusSet
) -> None:
    """`clinicdb protect` on a table whose primary key leaves clinic_id out exits 1 with one line saying what to
    do (no traceback), and changes nothing."""
    name = f"public.visits_{uuid.uuid4().hex[:8]}"
    _create(admin, name, key="primary key (id)")
    try:
        done = run_clinicdb("protect", name, "--database-url", citus.admin_url)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "every primary and unique key must include clinic_id" in errors[0]
        assert "primary key (clinic_id, id)" in errors[0]
        assert admin.execute(
            "select count(*) from clinicdb.protected_tables where table_name = %s::regclass", (name,)
        ).fetchone() == (0,)
    finally:
        admin.execute(sql.SQL("drop table {}").format(sql.Identifier(*name.split("."))))
