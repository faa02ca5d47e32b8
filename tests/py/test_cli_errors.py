"""Every command fed bad input says what is wrong in one line, exits non-zero and changes nothing (#13)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg
import pytest
from click.testing import CliRunner
from clinicdb_cli.main import cli

from clinicdb.devcluster.testing import ServerSet

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
NOBODY = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Case:
    """One bad invocation: its arguments (``{clinic}`` is an existing clinic), words the error must use, and a
    query whose answer must not change."""

    args: tuple[str, ...]
    says: str
    unchanged: str | None = None
    admin: bool = True
    env: dict[str, str] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "check of a schema that does not exist": Case(("check", "--schema", "typo"), "no schema named typo"),
    "clinic add of an id that exists": Case(
        ("clinic", "add", "Twice", "--id", "{clinic}"), "exists already", "select count(*) from clinicdb.clinics"
    ),
    "clinic add with an unknown time zone": Case(
        ("clinic", "add", "Tz", "--timezone", "Mars/Olympus"),
        "unknown time zone Mars/Olympus",
        "select count(*) from clinicdb.clinics",
    ),
    "clinic add with a blank name": Case(("clinic", "add", "   "), "a clinic needs a name"),
    "clinic add with a malformed id": Case(("clinic", "add", "X", "--id", "nope"), "not a valid UUID"),
    "audit tail of an unknown table": Case(("audit", "tail", "--table", "nosuch"), "no table public.nosuch exists"),
    "audit history of an unknown table": Case(("audit", "history", "nosuch", "1"), "no table public.nosuch exists"),
    "staff grant to a role that does not exist": Case(
        ("staff", "grant", "nosuchrole", "{clinic}"),
        "role nosuchrole does not exist",
        "select count(*) from clinicdb.staff_members",
    ),
    "staff revoke of a role with no mapping": Case(("staff", "revoke", "nosuchrole"), "has no staff mapping"),
    "sql policies of an unknown table": Case(("sql", "policies", "nosuch"), 'relation "nosuch" does not exist'),
    "protect of an unknown table": Case(("protect", "public.nosuch"), 'relation "public.nosuch" does not exist'),
    "keys sql of an unknown table": Case(("keys", "sql", "nosuch"), 'relation "nosuch" does not exist'),
    "keys status with a malformed clinic": Case(("keys", "status", "--clinic", "nope"), "not a valid UUID"),
    "keys shred of a clinic without keys": Case(
        ("keys", "shred", "--clinic", NOBODY, "--yes"),
        "has no keys to shred",
        "select count(*) from clinicdb.clinic_keys",
    ),
    "keys rotate without a master key": Case(
        ("keys", "rotate", "--clinic", "{clinic}"),
        "no master key",
        "select count(*) from clinicdb.clinic_keys",
        env={"CLINICDB_MASTER_KEY": "", "CLINICDB_MASTER_KEY_FILE": ""},
    ),
    "psql for a clinic that does not exist": Case(("psql", "--clinic", NOBODY), "does not exist"),
    "rollback with a count of zero": Case(("rollback", "--count", "0"), "--count must be 1 or more"),
    "rollback with a negative count": Case(("rollback", "--count", "-1"), "--count must be 1 or more"),
    "migrate against another database kind": Case(
        ("migrate", "--database-url", "mysql://root@db/x"), "not a PostgreSQL URL", admin=False
    ),
    "check against another database kind": Case(
        ("check", "--database-url", "mysql://root@db/x"), "not a PostgreSQL URL", admin=False
    ),
    "clinic list against a server that is not there": Case(
        ("clinic", "list", "--database-url", UNREACHABLE), "connection", admin=False
    ),
    "audit verify with a malformed head": Case(("audit", "verify", "--expect", "garbage"), "--expect"),
    "new table with a name that is not snake_case": Case(
        ("new", "table", "Bad Name"), "not lowercase snake_case", admin=False
    ),
    "migrations against another database kind": Case(
        ("migrations", "--database-url", "postgres-ish://x"), "not a PostgreSQL URL", admin=False
    ),
    "an option that does not exist": Case(("check", "--no-such-option"), "No such option", admin=False),
}


def _count(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("name", sorted(CASES), ids=sorted(CASES))
def test_bad_input_is_one_line_with_a_non_zero_exit_and_changes_nothing(
    servers: ServerSet,
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
    name: str,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command prints exactly one line, `Error: ...` naming the problem, exits non-zero, and the state it
    could have changed is unchanged."""
    case = CASES[name]
    monkeypatch.chdir(str(tmp_path))
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    args = [a.format(clinic=clinic_pair[0]) for a in case.args]
    if case.admin:
        args += ["--database-url", servers.admin_url]
    before = _count(servers.admin_url, case.unchanged) if case.unchanged else None
    result = CliRunner().invoke(cli, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert case.says in lines[0], lines[0]
    assert "Traceback" not in result.output
    if case.unchanged:
        assert _count(servers.admin_url, case.unchanged) == before


def test_every_command_group_is_exercised_with_bad_input() -> None:
    """The table above covers every top-level command that takes input (so a new command gets a row)."""
    covered = {case.args[0] for case in CASES.values()}
    takes_no_input = {"dev", "demo", "health"}
    assert set(cli.commands) - covered - takes_no_input == set()
