"""Rollbacks never destroy data or evidence unasked (python/clinicdb/rollback_guard.py, `clinicdb rollback`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner
from clinicdb_cli.main import cli
from psycopg import sql

from clinicdb import schema
from clinicdb._url import replace_url
from clinicdb.devcluster.testing import ServerSet, scratch_database


@pytest.fixture
def db(servers: ServerSet) -> Iterator[str]:
    """A new database migrated with the reference schema, with the dev logins."""
    with scratch_database(servers.admin_url, "guard", reference=True, logins=True) as url:
        yield url


def _rollback(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["rollback", "--database-url", url, *args])
    return result.exit_code, result.output


def _seed(url: str) -> uuid.UUID:
    """A clinic with two staff rows (audited) through the app."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select clinicdb.create_clinic('Guarded')").fetchone()
    assert row is not None
    clinic: uuid.UUID = row[0]
    with psycopg.connect(replace_url(url, user="clinicdb_app_user")) as conn, conn.transaction():
        conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
        conn.execute("insert into staff (display_name, email) values ('A', 'a@x.test'), ('B', 'b@x.test')")
    return clinic


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_a_rollback_that_would_drop_rows_refuses_names_them_and_changes_nothing(db: str) -> None:
    """`rollback --all` on a database with clinics, staff rows and an audit trail lists each table with its rows,
    exits 1, and leaves every migration and every row in place."""
    _seed(db)
    before = [(s.id, s.applied) for s in schema.status(db)]
    audit_rows = _count(db, "select count(*) from clinicdb.audit_log")
    code, output = _rollback(db, "--all")
    assert code == 1 and output.count("\n") == 1, output
    assert "public.staff (2 rows)" in output and "clinicdb.clinics (1 rows)" in output
    assert f"clinicdb.audit_log ({audit_rows:,} audit trail rows)" in output
    assert "nothing was rolled back" in output and "--destroy-data" in output
    assert [(s.id, s.applied) for s in schema.status(db)] == before
    assert _count(db, "select count(*) from public.staff") == 2
    assert _count(db, "select count(*) from clinicdb.audit_log") == audit_rows


def test_rolling_back_the_reference_schema_with_patients_refuses(db: str) -> None:
    """Rolling back just far enough to drop the reference tables is refused when they hold rows."""
    _seed(db)
    applied = [s.id for s in schema.status(db) if s.applied]
    count = len(applied) - applied.index("0008.reference-schema")
    code, output = _rollback(db, "--count", str(count))
    assert code == 1 and "public.staff (2 rows)" in output, output
    assert "0008.reference-schema" in [s.id for s in schema.status(db) if s.applied]


def test_an_adopted_table_of_yours_that_drop_owned_by_would_take_is_named(db: str) -> None:
    """Rolling back the roles migration runs `drop owned by clinicdb_owner`, which would take your own tables
    handed to the owner by `clinicdb protect`: the dry run finds them and the rollback refuses."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "create table public.visits (id uuid primary key default gen_random_uuid(),"
            " clinic_id uuid not null references clinicdb.clinics (id), note text)"
        )
    assert CliRunner().invoke(cli, ["protect", "public.visits", "--database-url", db]).exit_code == 0
    clinic = _seed(db)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("insert into public.visits (clinic_id, note) values (%s, 'kept')", (clinic,))
    code, output = _rollback(db, "--all")
    assert code == 1 and "public.visits (1 rows)" in output, output


def test_destroy_data_proceeds_and_keeps_the_audit_trail(db: str) -> None:
    """With --destroy-data the rollback proceeds, after copying the audit trail (and the seals and key events)
    into the clinicdb_migrations schema, row for row."""
    _seed(db)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("select clinicdb.seal_audit(10000, 1, interval '0')")  # every row now, whatever the thresholds
    with psycopg.connect(db) as conn:
        ids = [r[0] for r in conn.execute("select id from clinicdb.audit_log order by id").fetchall()]
    code, output = _rollback(db, "--all", "--destroy-data")
    assert code == 0, output
    assert "kept audit trail in clinicdb_migrations.audit_log_kept_" in output
    with psycopg.connect(db) as conn:
        kept = conn.execute(
            "select c.relname from pg_class c where c.relnamespace = 'clinicdb_migrations'::regnamespace"
            " and c.relname like 'audit_log_kept_%'"
        ).fetchone()
        assert kept is not None
        copied = [r[0] for r in conn.execute(f"select id from clinicdb_migrations.{kept[0]} order by id").fetchall()]
        seals = conn.execute(
            "select count(*) from pg_class where relnamespace = 'clinicdb_migrations'::regnamespace"
            " and relname like 'audit_seals_kept_%'"
        ).fetchone()
        schemas = conn.execute("select count(*) from pg_namespace where nspname = 'clinicdb'").fetchone()
    assert copied == ids, "every audit row survives the rollback"
    assert seals == (1,) and schemas == (0,)


def test_memberships_and_staff_mappings_survive_rollback_all_and_migrate(db: str) -> None:
    """After `rollback --all --destroy-data` and `migrate`, logins are members of clinicdb's group roles again, and
    a staff mapping comes back as soon as its clinic exists again (the rollback says what it kept)."""
    login = f"dr_{uuid.uuid4().hex[:6]}"
    clinic = uuid.uuid4()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login").format(sql.Identifier(login)))
        conn.execute(sql.SQL("grant clinicdb_staff to {}").format(sql.Identifier(login)))
        conn.execute("select clinicdb.create_clinic('Mapped', %s)", (clinic,))
        conn.execute("select clinicdb.grant_staff(%s, %s)", (login, clinic))
    code, output = _rollback(db, "--all", "--destroy-data")
    assert code == 0, output
    assert "login membership(s)" in output and "kept 1 staff mapping(s)" in output
    members = "select count(*) from pg_auth_members a join pg_roles m on m.oid = a.member where m.rolname = %s"
    result = CliRunner().invoke(cli, ["migrate", "--database-url", db, "--reference-schema"])
    assert result.exit_code == 0, result.output
    assert "restored" in result.output and "wait for their clinic" in result.output
    with psycopg.connect(db, autocommit=True) as conn:
        memberships = conn.execute(sql.SQL(members.replace("%s", "{}")).format(sql.Literal(login))).fetchone()
        assert memberships == (1,), "the staff login is a member of clinicdb_staff again"
        app_member = conn.execute("select pg_has_role('clinicdb_app_user', 'clinicdb_app', 'MEMBER')").fetchone()
        assert app_member == (True,), "the app login is a member of clinicdb_app again"
        conn.execute("select clinicdb.create_clinic('Mapped', %s)", (clinic,))
    again = CliRunner().invoke(cli, ["migrate", "--database-url", db])
    assert again.exit_code == 0 and "restored 1 staff mapping(s)" in again.output, again.output
    with psycopg.connect(db, autocommit=True) as conn:
        mapped = conn.execute("select clinic_id from clinicdb.staff_members where role_name = %s", (login,)).fetchone()
        conn.execute("select clinicdb.revoke_staff(%s)", (login,))
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(login)))
    assert mapped == (clinic,)


def test_rollback_without_data_needs_no_flag(db: str) -> None:
    """A rollback that drops only empty tables and the layer's registries goes ahead without --destroy-data."""
    code, output = _rollback(db, "--all")
    assert code == 0, output
    assert output.startswith("rolled back: ") and "0001.roles" in output


def test_a_rollback_behind_an_open_transaction_fails_clearly_instead_of_stalling(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback whose DDL waits behind an application's open transaction gives up after the lock timeout with one
    line, rolls nothing back, and leaves no query queued behind it."""
    monkeypatch.setenv("CLINICDB_MIGRATION_LOCK_TIMEOUT_MS", "300")
    with psycopg.connect(db) as reader:
        reader.execute("select count(*) from public.staff").fetchone()  # holds a lock until it ends
        code, output = _rollback(db, "--all")
        reader.rollback()
    assert code == 1 and output.count("\n") == 1 and "lock timeout" in output, output
    assert all(s.applied for s in schema.status(db) if s.layer in (schema.CORE, schema.REFERENCE))
