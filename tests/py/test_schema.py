"""Migrations (python/clinicdb/schema.py and migrations/)."""

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
from clinicdb.devcluster.testing import ServerSet


@pytest.fixture
def empty_db(servers: ServerSet) -> Iterator[str]:
    """A new, empty database on the test server."""
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    yield replace_url(servers.admin_url, database=name)
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname in ('public', 'clinicdb') and c.relkind in ('r', 'p')"
            "   and c.relname not like '%yoyo%'"
        ).fetchall()
    return {r[0] for r in rows}


def test_migrate_rollback_to_zero_then_migrate_again(empty_db: str) -> None:
    """Every migration rolls back cleanly, and the schema comes back identical."""
    applied = schema.apply(empty_db)
    assert applied == [s.id for s in schema.status(empty_db)]
    first = _tables(empty_db)
    assert {"patients", "appointments", "clinicdb.protected_tables"} <= first
    undone = schema.rollback(empty_db, to_zero=True)
    assert undone == list(reversed(applied))
    assert _tables(empty_db) == set()
    assert not any(s.applied for s in schema.status(empty_db))
    assert schema.apply(empty_db) == applied
    assert _tables(empty_db) == first


def test_migrate_twice_applies_nothing_the_second_time(empty_db: str) -> None:
    """A second `clinicdb migrate` is a no-op that says so."""
    runner = CliRunner()
    first = runner.invoke(cli, ["migrate", "--database-url", empty_db])
    assert first.exit_code == 0, first.output
    second = runner.invoke(cli, ["migrate", "--database-url", empty_db])
    assert second.exit_code == 0 and second.output.strip() == "nothing to apply"
    listed = runner.invoke(cli, ["migrations", "--database-url", empty_db, "--json"])
    assert '"applied": "no"' not in listed.output


def test_migrate_against_unreachable_server_is_one_line() -> None:
    """A server that is not there gives one error line, not a traceback."""
    result = CliRunner().invoke(
        cli,
        ["migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/nope?connect_timeout=2"],
    )
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
