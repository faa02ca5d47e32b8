"""Every command fed bad input says what is wrong in one line, exits non-zero and changes nothing (#13)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner
from clinicdb_cli.main import cli

from clinicdb import encryption
from clinicdb._url import replace_url
from clinicdb.devcluster.testing import ServerSet

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
NOBODY = "00000000-0000-4000-8000-000000000000"
A_MASTER_KEY = "0c" * 32
# Every clinic's key versions, their state and wrapped key: what the keys commands could change.
KEYS = (
    "select count(*), string_agg(format('%s/%s/%s/%s', clinic_id, version, state, md5(coalesce(wrapped_key, ''))),"
    " ',' order by clinic_id, version) from clinicdb.clinic_keys"
)


@dataclass(frozen=True)
class Case:
    """One bad invocation: its arguments and environment (``{clinic}`` is an existing clinic, ``{file}`` a plain
    file, ``{admin}`` the admin URL), words the error must use, a query whose answer must not change, and the
    database it is pointed at with --database-url: "admin", "app" (the application's login), "bare" (a database
    without clinicdb) or None (the arguments say)."""

    args: tuple[str, ...]
    says: str
    unchanged: str | None = None
    url: str | None = "admin"
    env: dict[str, str] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "check of a schema that does not exist": Case(("check", "--schema", "typo"), "no schema named typo"),
    "check as the application's login": Case(("check",), "administrator's login", url="app"),
    "check in a database without clinicdb": Case(("check",), "run clinicdb migrate", url="bare"),
    "check with CLINICDB_ADMIN_URL of another database kind": Case(
        ("check",),
        "CLINICDB_ADMIN_URL: 'mysql://' is not a PostgreSQL URL",
        url=None,
        env={"CLINICDB_ADMIN_URL": "mysql://root@db/x"},
    ),
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
    "clinic list as the application's login": Case(
        ("clinic", "list"), "login clinicdb_app_user sees no clinic", url="app"
    ),
    "clinic list against a server that is not there": Case(
        ("clinic", "list", "--database-url", UNREACHABLE), "Is the server running", url=None
    ),
    "clinic list with a connection string that does not parse": Case(
        ("clinic", "list", "--database-url", "garbage"), "--database-url: not a PostgreSQL URL or connection", url=None
    ),
    "audit tail of an unknown table": Case(("audit", "tail", "--table", "nosuch"), "no table public.nosuch exists"),
    "audit tail of a table that is not audited": Case(
        ("audit", "tail", "--table", "clinicdb.audit_seals"), "clinicdb.audit_seals is not audited"
    ),
    "audit tail of an unknown clinic": Case(("audit", "tail", "--clinic", NOBODY), f"clinic {NOBODY} does not exist"),
    "audit tail in a database without clinicdb": Case(("audit", "tail"), "clinicdb migrations", url="bare"),
    "audit history of an unknown table": Case(("audit", "history", "nosuch", "1"), "no table public.nosuch exists"),
    "audit partitions as the application's login": Case(("audit", "partitions"), "administrator's login", url="app"),
    "audit prune keeping less than a day": Case(("audit", "prune", "--retention-days", "0"), "--retention-days"),
    "audit archive into a folder below a file": Case(
        ("audit", "archive", "--all", "--to", "{file}/x"), "Not a directory"
    ),
    "audit seal with empty blocks": Case(("audit", "seal", "--block-rows", "0"), "--block-rows"),
    "audit verify with a malformed head": Case(("audit", "verify", "--expect", "garbage"), "--expect"),
    "staff grant to a role that does not exist": Case(
        ("staff", "grant", "nosuchrole", "{clinic}"),
        "role nosuchrole does not exist",
        "select count(*) from clinicdb.staff_members",
    ),
    "staff revoke of a role with no mapping": Case(("staff", "revoke", "nosuchrole"), "has no staff mapping"),
    "staff list as the application's login": Case(("staff", "list"), "administrator's login", url="app"),
    "sql policies of an unknown table": Case(("sql", "policies", "nosuch"), 'relation "nosuch" does not exist'),
    "protect of an unknown table": Case(("protect", "public.nosuch"), 'relation "public.nosuch" does not exist'),
    "keys sql of an unknown table": Case(("keys", "sql", "nosuch"), 'relation "nosuch" does not exist'),
    "keys status with a malformed clinic": Case(("keys", "status", "--clinic", "nope"), "not a valid UUID"),
    "keys status of an unknown clinic": Case(("keys", "status", "--clinic", NOBODY), f"clinic {NOBODY} does not exist"),
    "keys status as the application's login": Case(("keys", "status"), "sees no clinic key", url="app"),
    "keys reencrypt of an unknown clinic": Case(
        ("keys", "reencrypt", "--clinic", NOBODY),
        f"clinic {NOBODY} does not exist",
        KEYS,
        env={"CLINICDB_MASTER_KEY": A_MASTER_KEY},
    ),
    "keys shred of a clinic without keys": Case(
        ("keys", "shred", "--clinic", NOBODY, "--yes"), "has no keys to shred", KEYS
    ),
    "keys rotate without a master key": Case(
        ("keys", "rotate", "--clinic", "{clinic}"),
        "no master key",
        KEYS,
        env={"CLINICDB_MASTER_KEY": "", "CLINICDB_MASTER_KEY_FILE": ""},
    ),
    "keys rotate with a key file below a file": Case(
        ("keys", "rotate", "--clinic", "{clinic}", "--master-key-file", "{file}/key"), "Not a directory", KEYS
    ),
    "keys rotate-master to a key file that does not exist": Case(
        ("keys", "rotate-master", "--new-key-file", "{file}.missing"),
        "does not exist",
        KEYS,
        env={"CLINICDB_MASTER_KEY": A_MASTER_KEY},
    ),
    "keys encrypt-column of a column that does not exist": Case(
        ("keys", "encrypt-column", "patients", "nosuch"),
        "has no column nosuch",
        "select count(*) from clinicdb.encrypted_columns",
    ),
    "keys generate-master over an existing file": Case(
        ("keys", "generate-master", "--out", "{file}"), "refusing to overwrite", url=None
    ),
    "citus fanout on a database without Citus": Case(("citus", "fanout"), "not a Citus database"),
    "citus fanout of a file that does not exist": Case(("citus", "fanout", "no-such.sql"), "does not exist"),
    "psql for a clinic that does not exist": Case(("psql", "--clinic", NOBODY), "does not exist"),
    "rollback with a count of zero": Case(("rollback", "--count", "0"), "--count must be 1 or more"),
    "rollback with a negative count": Case(("rollback", "--count", "-1"), "--count must be 1 or more"),
    "migrate against another database kind": Case(
        ("migrate", "--database-url", "mysql://root@db/x"), "not a PostgreSQL URL", url=None
    ),
    "check against another database kind": Case(
        ("check", "--database-url", "mysql://root@db/x"), "not a PostgreSQL URL", url=None
    ),
    "migrations against another database kind": Case(
        ("migrations", "--database-url", "postgres-ish://x"), "not a PostgreSQL URL", url=None
    ),
    "health against another database kind": Case(
        ("health", "--database-url", "mysql://root@db/x"),
        "--database-url: 'mysql://' is not a PostgreSQL URL",
        url=None,
    ),
    "health with a replica URL that does not parse": Case(
        ("health", "--replica-url", "garbage"), "--replica-url: not a PostgreSQL URL or connection"
    ),
    "demo with CLINICDB_DATABASE_URL of another database kind": Case(
        ("demo",),
        "CLINICDB_DATABASE_URL: 'mysql://' is not a PostgreSQL URL",
        url=None,
        env={"CLINICDB_ADMIN_URL": "{admin}", "CLINICDB_DATABASE_URL": "mysql://root@db/x"},
    ),
    "new table with a name that is not snake_case": Case(
        ("new", "table", "Bad Name"), "not lowercase snake_case", url=None
    ),
    "new migration into a folder below a file": Case(
        ("new", "migration", "add-index", "--source", "{file}/migrations"), "Not a directory", url=None
    ),
    "an option that does not exist": Case(("check", "--no-such-option"), "No such option", url=None),
}


def _answer(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()


def _url(servers: ServerSet, which: str) -> str:
    if which == "app":
        return servers.app_url
    if which == "bare":
        return replace_url(servers.admin_url, database="postgres")
    return servers.admin_url


@pytest.mark.parametrize("name", sorted(CASES), ids=sorted(CASES))
def test_bad_input_is_one_line_with_a_non_zero_exit_and_changes_nothing(
    servers: ServerSet,
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command prints exactly one line, `Error: ...` naming the problem, exits non-zero, and the state it
    could have changed is unchanged."""
    case = CASES[name]
    monkeypatch.chdir(tmp_path)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    fill = {"clinic": str(clinic_pair[0]), "file": str(a_file), "admin": servers.admin_url}
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(**fill))
    args = [a.format(**fill) for a in case.args]
    if case.url:
        args += ["--database-url", _url(servers, case.url)]
    before = _answer(servers.admin_url, case.unchanged) if case.unchanged else None
    result = CliRunner().invoke(cli, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert case.says in lines[0], lines[0]
    assert "Traceback" not in result.output
    if case.unchanged:
        assert _answer(servers.admin_url, case.unchanged) == before


def _leaves(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found += _leaves(command, path) if isinstance(command, click.Group) else [path]
    return found


def test_every_command_is_exercised_with_bad_input() -> None:
    """The table above feeds every command bad input (so a new command gets a row); `dev` is left to its own
    tests (its commands take no input)."""
    covered = {
        case.args[: len(leaf)] for case in CASES.values() for leaf in _leaves(cli) if case.args[: len(leaf)] == leaf
    }
    missing = {" ".join(leaf) for leaf in _leaves(cli) if leaf not in covered and leaf[0] != "dev"}
    assert missing == set()


def test_a_group_without_a_command_shows_its_help() -> None:
    """`clinicdb clinic` asks what it can do: it gets the group's help, not an `Error: Usage: ...` block."""
    result = CliRunner().invoke(cli, ["clinic"])
    assert result.output.startswith("Usage: ") and " clinic [OPTIONS] COMMAND" in result.output, result.output
    assert "Error" not in result.output and "add" in result.output and "list" in result.output


def test_a_declined_confirmation_changes_nothing(servers: ServerSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """Answering no to `keys shred` says nothing was changed, exits 1, and the keys are still there."""
    clinic = clinic_pair[0]
    before = _answer(servers.admin_url, KEYS)
    result = CliRunner().invoke(
        cli, ["keys", "shred", "--clinic", str(clinic), "--database-url", servers.admin_url], input="n\n"
    )
    assert result.exit_code == 1
    assert result.output.rstrip().endswith("Aborted: nothing was changed."), result.output
    assert _answer(servers.admin_url, KEYS) == before


def test_an_unanswerable_confirmation_says_to_pass_yes(
    servers: ServerSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """`keys shred` with its input closed (a script) refuses with one line that names --yes."""
    result = CliRunner().invoke(
        cli, ["keys", "shred", "--clinic", str(clinic_pair[0]), "--database-url", servers.admin_url]
    )
    assert result.exit_code == 1
    assert "Error: no answer to the confirmation" in result.output and "--yes" in result.output, result.output
    assert "Traceback" not in result.output


def test_an_interrupt_does_not_claim_that_nothing_changed(servers: ServerSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while a command works exits 130 with one line saying committed steps stay and to run it again,
    never "nothing was changed" (re-encryption commits batch by batch)."""

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(encryption, "reencrypt_plan", interrupted)
    monkeypatch.setenv("CLINICDB_MASTER_KEY", A_MASTER_KEY)
    result = CliRunner().invoke(cli, ["keys", "reencrypt", "--database-url", servers.admin_url])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 130, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: interrupted"), result.output
    assert "run it again" in lines[0] and "nothing was changed" not in result.output
