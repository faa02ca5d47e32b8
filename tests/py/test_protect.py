"""`clinicdb protect` (cli/protect.py) and clinicdb.protect_report(): adopting a clinic's existing tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from click.testing import CliRunner
from clinicdb_cli.main import cli
from psycopg import sql

from clinicdb._url import replace_url
from clinicdb.devcluster.testing import ServerSet, scratch_database


@dataclass
class OwnDatabase:
    """A database as a clinic runs it: clinicdb's core layer only, two clinics."""

    url: str
    clinic_a: uuid.UUID
    clinic_b: uuid.UUID


@pytest.fixture(scope="module")
def own_db(servers: ServerSet) -> Iterator[OwnDatabase]:
    with scratch_database(servers.admin_url, "own", migrate=True, logins=True) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            a = conn.execute("select clinicdb.create_clinic('Own A')").fetchone()
            b = conn.execute("select clinicdb.create_clinic('Own B')").fetchone()
        assert a and b
        yield OwnDatabase(url, a[0], b[0])


@pytest.fixture
def table_name(own_db: OwnDatabase) -> Iterator[str]:
    """A fresh table name in public; whatever the test created under it is dropped afterwards."""
    name = f"visits_{uuid.uuid4().hex[:6]}"
    yield name
    with psycopg.connect(own_db.url, autocommit=True) as conn:
        conn.execute(f"drop view if exists public.{name}_view")
        conn.execute(f"drop table if exists public.{name}, public.{name}_parent cascade")
        conn.execute("delete from clinicdb.protected_tables where table_name::text like %s", (f"%{name}%",))


def _run(own_db: OwnDatabase, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["protect", *args, "--database-url", own_db.url])
    return result.exit_code, result.output


def _state(own_db: OwnDatabase, table: str) -> tuple[object, ...]:
    """What protecting would change: RLS flags, policies, triggers, owner, grants, registry."""
    with psycopg.connect(own_db.url) as conn:
        row = conn.execute(
            "select c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner), c.relacl::text,"
            " (select count(*) from pg_policy where polrelid = c.oid),"
            " (select count(*) from pg_trigger where tgrelid = c.oid and not tgisinternal),"
            " (select count(*) from clinicdb.protected_tables where table_name = c.oid)"
            " from pg_class c where c.oid = %s::regclass",
            (f"public.{table}",),
        ).fetchone()
    assert row is not None
    return tuple(row)


# One table per blocker: the DDL (and rows) that create it, and words the report must use.
BLOCKERS = {
    "no clinic_id column": ("create table public.{t} (id uuid primary key, note text)", "add column clinic_id"),
    "clinic_id not a uuid": (
        "create table public.{t} (id uuid primary key, clinic_id text not null)",
        "type uuid using clinic_id::uuid",
    ),
    "rows without a clinic": (
        "create table public.{t} (id uuid primary key default gen_random_uuid(), clinic_id uuid);"
        " insert into public.{t} (clinic_id) values (null), (null)",
        "2 rows of public.{t} have no clinic_id",
    ),
    "rows of unknown clinics": (
        "create table public.{t} (id uuid primary key default gen_random_uuid(), clinic_id uuid);"
        " insert into public.{t} (clinic_id) values (gen_random_uuid())",
        "clinicdb clinic add",
    ),
    "no primary key": ("create table public.{t} (id uuid, clinic_id uuid not null)", "add primary key (clinic_id, id)"),
    "unique key without clinic_id": (
        "create table public.{t} (id uuid primary key, clinic_id uuid not null, mrn text unique)",
        "unique (clinic_id, mrn)",
    ),
    "foreign key without clinic_id": (
        "create table public.{t}_parent (id uuid primary key, clinic_id uuid not null, unique (clinic_id, id));"
        " create table public.{t} (id uuid primary key, clinic_id uuid not null,"
        " parent_id uuid references public.{t}_parent (id))",
        "foreign key (clinic_id, parent_id) references public.{t}_parent (clinic_id, id)",
    ),
    "permissive policy": (
        "create table public.{t} (id uuid primary key, clinic_id uuid not null);"
        " create policy everyone on public.{t} for select using (true)",
        "drop policy everyone",
    ),
    "view without security_invoker": (
        "create table public.{t} (id uuid primary key, clinic_id uuid not null);"
        " create view public.{t}_view as select * from public.{t}",
        "security_invoker = on",
    ),
    "conflicting trigger": (
        "create table public.{t} (id uuid primary key, clinic_id uuid not null);"
        " create function public.{t}_fn() returns trigger language plpgsql as $$begin return new; end$$;"
        " create trigger clinicdb_touch_row before update on public.{t} for each row execute function public.{t}_fn()",
        "rename to",
    ),
}


@pytest.mark.parametrize("blocker", sorted(BLOCKERS))
def test_dry_run_lists_each_blocker_with_its_fix_and_changes_nothing(
    own_db: OwnDatabase, table_name: str, blocker: str
) -> None:
    """`protect --dry-run` on a table with one blocker names it with its fix, exits 1 and leaves the table as it
    was; without --dry-run it refuses the same way."""
    ddl, words = BLOCKERS[blocker]
    with psycopg.connect(own_db.url, autocommit=True) as conn:
        conn.execute(ddl.format(t=table_name))
    before = _state(own_db, table_name)
    code, output = _run(own_db, f"public.{table_name}", "--dry-run")
    assert code == 1, output
    assert "blockers (" in output and words.format(t=table_name) in output, output
    assert "nothing changed" in output and "Traceback" not in output
    assert _state(own_db, table_name) == before
    code, output = _run(own_db, f"public.{table_name}")
    assert code == 1 and "nothing changed" in output
    assert _state(own_db, table_name) == before


def test_protect_adopts_a_clean_table_that_check_then_passes_and_isolates(own_db: OwnDatabase, table_name: str) -> None:
    """A table with clinic_id, owned by someone else and holding both clinics' rows, is adopted: owner, grants,
    policies, audit; `clinicdb check` passes and the app in clinic A reads none of clinic B's rows."""
    owner = f"legacy_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(own_db.url, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {}").format(sql.Identifier(owner)))
        conn.execute(
            f"create table public.{table_name} (id uuid primary key default gen_random_uuid(),"
            f" clinic_id uuid not null references clinicdb.clinics (id), note text, updated_at timestamptz)"
        )
        conn.execute(sql.SQL("alter table {} owner to {}").format(sql.Identifier(table_name), sql.Identifier(owner)))
        conn.execute(
            f"insert into public.{table_name} (clinic_id, note) values (%s, 'a1'), (%s, 'b1'), (%s, 'b2')",
            (own_db.clinic_a, own_db.clinic_b, own_db.clinic_b),
        )
    dry_code, dry = _run(own_db, f"public.{table_name}", "--dry-run")
    assert dry_code == 0, dry
    assert f"alter table public.{table_name} owner to clinicdb_owner;" in dry
    assert f"select clinicdb.protect_table('public.{table_name}');" in dry
    assert "enable row level security" in dry and "blockers" not in dry

    code, output = _run(own_db, f"public.{table_name}")
    assert code == 0, output
    assert "clinicdb check finds nothing" in output
    rls, forced, new_owner, _, policies, _, registered = _state(own_db, table_name)
    assert (rls, forced, new_owner, policies, registered) == (True, True, "clinicdb_owner", 4, 1)
    check = CliRunner().invoke(cli, ["check", "--database-url", own_db.url])
    assert check.exit_code == 0, check.output
    with psycopg.connect(replace_url(own_db.url, user="clinicdb_app_user")) as conn, conn.transaction():
        conn.execute("select set_config('app.clinic_id', %s, true)", (str(own_db.clinic_a),))
        notes = [r[0] for r in conn.execute(f"select note from public.{table_name} order by note")]
        conn.execute(f"update public.{table_name} set note = 'a1 changed'")
    assert notes == ["a1"]
    with psycopg.connect(own_db.url) as conn:
        audited = conn.execute(
            "select count(*) from clinicdb.audit_log where table_name = %s and action = 'update'",
            (f"public.{table_name}",),
        ).fetchone()
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(owner)))
    assert audited == (1,), "the adopted table's changes are audited"


def test_the_report_is_there_for_a_dba_without_python(own_db: OwnDatabase, table_name: str) -> None:
    """clinicdb.protect_report() gives the same blockers in psql: a clean table has only non-blocking notes."""
    with psycopg.connect(own_db.url, autocommit=True) as conn:
        conn.execute(
            f"create table public.{table_name} (id uuid primary key, clinic_id uuid not null, mrn text unique)"
        )
        rows = conn.execute("select blocker, blocking from clinicdb.protect_report(%s)", (f"public.{table_name}",))
        report = {(str(b), bool(f)) for b, f in rows.fetchall()}
        conn.execute(f"alter table public.{table_name} drop constraint {table_name}_mrn_key")
        conn.execute(f"alter table public.{table_name} add unique (clinic_id, mrn)")
        after = conn.execute("select blocking from clinicdb.protect_report(%s)", (f"public.{table_name}",)).fetchall()
    assert ("unique key without clinic_id", True) in report
    assert after and not any(r[0] for r in after)


def test_protect_of_a_missing_table_is_one_line(own_db: OwnDatabase) -> None:
    """A table that does not exist is one error line."""
    code, output = _run(own_db, "public.no_such_table")
    assert code == 1 and output.count("\n") == 1 and "does not exist" in output
