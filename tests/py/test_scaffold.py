"""`clinicdb new table` / `clinicdb new migration` (python/clinicdb/scaffold.py, cli/new.py): what they write
migrates, isolates, encrypts and rolls back; bad names and types write nothing."""

from __future__ import annotations

import contextlib
import fnmatch
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from clinicdb_cli.main import cli

from clinicdb import _pg_names, encryption, scaffold, schema
from clinicdb._url import replace_url
from clinicdb.devcluster.bootstrap import APP_LOGIN, ensure_logins
from clinicdb.devcluster.testing import ServerSet, scratch_database
from clinicdb.keys import generate_master_key, set_master_key


def _clinicdb(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _ok(*args: str) -> str:
    code, output = _clinicdb(*args)
    assert code == 0, f"clinicdb {' '.join(args)}: {output}"
    return output


@pytest.fixture
def empty_db(servers: ServerSet) -> Iterator[str]:
    """A new, empty database on the test server."""
    with scratch_database(servers.admin_url, "scaffold") as url:
        yield url


@dataclass
class Project:
    """A database migrated with a folder `clinicdb new table` wrote: visits (ssn encrypted with a blind index,
    note encrypted) and visit_notes (a foreign key to visits), two clinics, their keys, the app login."""

    url: str
    folder: Path
    migrated: str
    clinic_a: uuid.UUID
    clinic_b: uuid.UUID
    master_key: str

    @contextlib.contextmanager
    def app(self, clinic: uuid.UUID) -> Iterator[psycopg.Connection]:
        """One transaction as the application login, with the clinic and the master key in force."""
        with psycopg.connect(replace_url(self.url, user=APP_LOGIN)) as conn, conn.transaction():
            conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
            set_master_key(conn, self.master_key)
            yield conn


@pytest.fixture(scope="module")
def project(servers: ServerSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """Two tables written by `clinicdb new table` into a new folder, migrated into a new database (see Project)."""
    folder = tmp_path_factory.mktemp("project") / "migrations"
    with scratch_database(servers.admin_url, "scaffolded") as url:
        _ok(
            "new",
            "table",
            "visits",
            "--column",
            "reason:text",
            "--column",
            "starts_at:timestamptz",
            "--column",
            "ssn:text",
            "--column",
            "note:varchar(200)",
            "--encrypt",
            "ssn",
            "--blind-index",
            "ssn",
            "--encrypt",
            "note",
            "--source",
            str(folder),
        )
        _ok(
            "new",
            "table",
            "visit_notes",
            "--column",
            "body:text",
            "--references",
            "visit_id:visits",
            "--source",
            str(folder),
        )
        migrated = _ok("migrate", "--database-url", url, "--source", str(folder))
        ensure_logins(url)
        key = generate_master_key()
        with psycopg.connect(url, autocommit=True) as conn:
            clinics = [conn.execute("select clinicdb.create_clinic(%s)", (n,)).fetchone()[0] for n in "AB"]  # type: ignore[index]
        for clinic in clinics:
            encryption.rotate(url, clinic, key)
        yield Project(url, folder, migrated, clinics[0], clinics[1], key)


def _visit(project: Project, clinic: uuid.UUID, reason: str, ssn: str | None = None) -> uuid.UUID:
    with project.app(clinic) as conn:
        row = conn.execute("insert into visits (reason, ssn) values (%s, %s) returning id", (reason, ssn)).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def test_new_table_output_migrates_after_the_core_and_passes_check(project: Project) -> None:
    """`clinicdb migrate --source` applies the written migrations after the core ones, and `clinicdb check` finds
    the tables protected: owner clinicdb_owner, forced row level security, key (clinic_id, id)."""
    applied = project.migrated.strip().removeprefix("applied: ").split(", ")
    assert applied[-2:] == ["0001.create-visits", "0002.create-visit-notes"]
    assert applied.index(scaffold.newest_core_id()) < applied.index("0001.create-visits")
    check = _clinicdb("check", "--database-url", project.url)
    assert check[0] == 0, check[1]
    with psycopg.connect(project.url) as conn:
        rows = conn.execute(
            "select c.relname, pg_get_userbyid(c.relowner), c.relrowsecurity, c.relforcerowsecurity,"
            " (select pg_get_constraintdef(p.oid) from pg_constraint p where p.conrelid = c.oid and p.contype = 'p')"
            " from pg_class c where c.oid in ('public.visits'::regclass, 'public.visit_notes'::regclass)"
            " order by 1"
        ).fetchall()
    assert rows == [
        ("visit_notes", "clinicdb_owner", True, True, "PRIMARY KEY (clinic_id, id)"),
        ("visits", "clinicdb_owner", True, True, "PRIMARY KEY (clinic_id, id)"),
    ]


def test_a_new_table_shows_the_app_only_the_rows_of_its_clinic(project: Project) -> None:
    """The app login in clinic A reads none of clinic B's rows, and its inserts land in clinic A unnamed."""
    mine = _visit(project, project.clinic_a, "checkup A")
    theirs = _visit(project, project.clinic_b, "checkup B")
    with project.app(project.clinic_a) as conn:
        seen = {r[0]: r[1] for r in conn.execute("select id, clinic_id from visits")}
    assert mine in seen and theirs not in seen
    assert set(seen.values()) == {project.clinic_a}


def test_a_foreign_key_of_a_new_table_stays_inside_its_clinic(project: Project) -> None:
    """A row may point at a row of its own clinic; pointing at another clinic's row is a foreign key violation."""
    mine = _visit(project, project.clinic_a, "follow-up A")
    theirs = _visit(project, project.clinic_b, "follow-up B")
    with project.app(project.clinic_a) as conn:
        conn.execute("insert into visit_notes (visit_id, body) values (%s, 'fine')", (mine,))
    with pytest.raises(psycopg.errors.ForeignKeyViolation), project.app(project.clinic_a) as conn:
        conn.execute("insert into visit_notes (visit_id, body) values (%s, 'across clinics')", (theirs,))


def test_updated_at_of_a_new_table_is_set_by_the_database(project: Project) -> None:
    """An update gets the database's time in updated_at (clinicdb.touch_row), whatever the client writes there."""
    visit = _visit(project, project.clinic_a, "touch")
    with project.app(project.clinic_a) as conn:
        row = conn.execute(
            "update visits set reason = 'touched', updated_at = '2001-01-01' where id = %s"
            " returning updated_at > created_at",
            (visit,),
        ).fetchone()
    assert row == (True,)


def test_encrypted_columns_of_a_new_table_hold_ciphertext_and_no_plaintext(project: Project) -> None:
    """--encrypt columns store ciphertext at rest and NULL in the column the app writes; --blind-index adds an
    index; the app reads the plaintext back through the _decrypted view."""
    visit = _visit(project, project.clinic_a, "secret", ssn="900-12-3456")
    with project.app(project.clinic_a) as conn:
        conn.execute("update visits set note = 'private note' where id = %s", (visit,))
    with psycopg.connect(project.url) as conn:
        stored = conn.execute(
            "select ssn, ssn_ciphertext, ssn_blind_index, note, note_ciphertext from visits where id = %s", (visit,)
        ).fetchone()
    assert stored is not None
    ssn, ssn_ciphertext, blind, note, note_ciphertext = stored
    assert ssn is None and note is None, "no plaintext at rest"
    assert b"900-12-3456" not in bytes(ssn_ciphertext) and b"private note" not in bytes(note_ciphertext)
    assert blind is not None
    with project.app(project.clinic_a) as conn:
        found = conn.execute(
            "select ssn, note from visits_decrypted"
            " where ssn_blind_index = any (clinicdb.blind_index('public.visits', 'ssn', '900-12-3456'))"
        ).fetchall()
    assert found == [("900-12-3456", "private note")]


def test_rollback_removes_a_new_table_and_what_the_layer_registered(empty_db: str, tmp_path: Path) -> None:
    """`clinicdb rollback --source` drops the table, its _decrypted view and generated function, and its registry
    rows; `check` stays green and the same migration applies again."""
    folder = tmp_path / "migrations"
    _ok("new", "table", "billing_items", "--column", "iban:text", "--encrypt", "iban", "--source", str(folder))
    _ok("migrate", "--database-url", empty_db, "--source", str(folder))
    assert _ok("rollback", "--database-url", empty_db, "--source", str(folder)).strip() == (
        "rolled back: 0001.create-billing-items"
    )
    with psycopg.connect(empty_db) as conn:
        left = conn.execute(
            "select (select count(*) from pg_class where relname like 'billing_items%%'),"
            " (select count(*) from pg_proc where proname like '%%billing_items%%'),"
            " (select count(*) from clinicdb.protected_tables where table_name::text like '%%billing_items%%'),"
            " (select count(*) from clinicdb.encrypted_columns where label like '%%billing_items%%'),"
            " (select count(*) from clinicdb.audit_settings where table_name::text like '%%billing_items%%')"
        ).fetchone()
    assert left == (0, 0, 0, 0, 0)
    assert _clinicdb("check", "--database-url", empty_db)[0] == 0
    again = _ok("migrate", "--database-url", empty_db, "--source", str(folder))
    assert again.strip() == "applied: 0001.create-billing-items"


def test_new_migration_writes_files_yoyo_applies_and_numbering_continues(empty_db: str, tmp_path: Path) -> None:
    """The first migration of a folder depends on clinicdb's newest core migration; the next takes the following
    number and depends on it, after a hand-written one too; yoyo applies and rolls back what was written."""
    folder = tmp_path / "db"
    output = _ok("new", "migration", "add_visit_index", "--source", str(folder))
    assert f"created {folder}/" in output
    (folder / "0007.by-hand.sql").write_text("-- depends: 0001.add-visit-index\ncreate table public.plain (n int);\n")
    (folder / "0007.by-hand.rollback.sql").write_text("drop table public.plain;\n")
    assert "created" not in _ok("new", "migration", "backfill", "--source", str(folder))
    assert sorted(p.name for p in folder.iterdir()) == [
        "0001.add-visit-index.rollback.sql",
        "0001.add-visit-index.sql",
        "0007.by-hand.rollback.sql",
        "0007.by-hand.sql",
        "0008.backfill.rollback.sql",
        "0008.backfill.sql",
    ]
    assert "-- depends: 0007.by-hand\n" in (folder / "0008.backfill.sql").read_text()

    applied = _ok("migrate", "--database-url", empty_db, "--source", str(folder))
    assert applied.strip().endswith("0001.add-visit-index, 0007.by-hand, 0008.backfill")
    core = [s.id for s in schema.status(empty_db) if s.layer == schema.CORE]
    assert f"-- depends: {core[-1]}\n" in (folder / "0001.add-visit-index.sql").read_text()
    undone = _ok("rollback", "--database-url", empty_db, "--source", str(folder), "--count", "3")
    assert undone.strip() == "rolled back: 0008.backfill, 0007.by-hand, 0001.add-visit-index"


# One-line refusals: (arguments after `clinicdb new`, words the error must use).
REFUSED = {
    "table name not snake_case": (["table", "Visits"], "lowercase snake_case"),
    "reserved table name": (["table", "user"], "reserves"),
    "reserved column name": (["table", "visits", "--column", "order:int"], "reserves"),
    "template column": (["table", "visits", "--column", "updated_at:timestamptz"], "leave it out"),
    "column twice": (["table", "visits", "--column", "a:text", "--column", "a:int"], "twice"),
    "column without a type": (["table", "visits", "--column", "reason"], "NAME:TYPE"),
    "unknown type": (["table", "visits", "--column", "photo:blob"], "not a PostgreSQL type"),
    "type with a bad modifier": (["table", "visits", "--column", "n:integer(4)"], "takes no modifier"),
    "serial type": (["table", "visits", "--column", "n:bigserial"], "shared by every clinic"),
    "encrypted non-text column": (["table", "visits", "--column", "n:int", "--encrypt", "n"], "only text columns"),
    "encrypted array column": (["table", "visits", "--column", "n:text[]", "--encrypt", "n"], "only text columns"),
    "encrypted unknown column": (["table", "visits", "--encrypt", "ssn"], "--column ssn:text"),
    "blind index without encryption": (
        ["table", "visits", "--column", "ssn:text", "--blind-index", "ssn"],
        "add --encrypt ssn",
    ),
    "name encryption adds": (
        ["table", "visits", "--column", "ssn:text", "--column", "ssn_ciphertext:bytea", "--encrypt", "ssn"],
        "rename it",
    ),
    "reference through a non-uuid column": (
        ["table", "visits", "--column", "patient_id:int", "--references", "patient_id:patients"],
        "--column patient_id:uuid",
    ),
    "table in clinicdb's schema": (["table", "clinicdb.visits"], "use one of yours"),
    "migration name with spaces": (["migration", "Add index"], "lowercase words"),
    "migration id of clinicdb's own": (["migration", "roles"], "clinicdb's own"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_names_and_types_are_one_line_errors_that_write_nothing(tmp_path: Path, case: str) -> None:
    """Each bad name, type or option combination exits 1 with one line saying what to do, and creates no file or
    folder."""
    args, words = REFUSED[case]
    folder = tmp_path / "migrations"
    code, output = _clinicdb("new", *args, "--source", str(folder))
    assert code == 1 and output.startswith("Error: ") and output.count("\n") == 1, output
    assert words in output, output
    assert not folder.exists()


def test_a_table_or_name_already_in_the_folder_is_refused(tmp_path: Path) -> None:
    """`new table` for a table the folder already creates, or `new migration` with a name it already has, is
    refused in one line and adds no file."""
    folder = tmp_path / "migrations"
    _ok("new", "table", "visits", "--source", str(folder))
    _ok("new", "migration", "tidy", "--source", str(folder))
    before = sorted(folder.iterdir())
    for args, words in ((["table", "public.visits"], "already creates"), (["migration", "tidy"], "already has")):
        code, output = _clinicdb("new", *args, "--source", str(folder))
        assert code == 1 and output.count("\n") == 1 and words in output, output
    assert sorted(folder.iterdir()) == before


def test_every_word_the_server_reserves_is_refused_and_column_keywords_are_quoted(admin: psycopg.Connection) -> None:
    """The scaffold's keyword lists cover the running server's: reserved words are refused as names, column-name
    keywords are double-quoted in the SQL, other words stay bare unless a later version reserves them."""
    words = admin.execute("select word, catcode from pg_get_keywords()").fetchall()
    for word, category in words:
        if category in ("R", "T"):
            with pytest.raises(scaffold.ScaffoldError, match="reserves"):
                scaffold.table_spec(word)
        elif category == "C":
            assert _pg_names.quote_ident(word) == f'"{word}"'
        elif _pg_names.quote_ident(word) != word:
            # The lists cover PostgreSQL 15-18: a word only a later version made a column-name keyword
            # (json on 16) is quoted on every version, which is always valid.
            assert word in _pg_names.COLUMN_KEYWORDS, word


def test_every_type_spelling_the_scaffold_accepts_is_a_postgresql_type(admin: psycopg.Connection) -> None:
    """Every type name and alias `--column` accepts, with and without a modifier and as an array, is written as a
    type PostgreSQL creates a column of."""
    spellings: list[str] = []
    for name, (_, modifiers) in _pg_names.TYPES.items():
        spellings += [name, f"{name}[]"] + ([f"{name}(5)"] if modifiers else [])
    columns = [c.type for c in scaffold.table_spec("t", [f"c{i}:{s}" for i, s in enumerate(spellings)]).columns]
    with admin.transaction():
        listed = ", ".join(f"c{i} {t}" for i, t in enumerate(columns))
        admin.execute(f"create temporary table scaffold_types ({listed}) on commit drop")


def test_every_template_is_package_data() -> None:
    """Each template under python/clinicdb/templates/ matches pyproject's package-data, so the wheel carries it."""
    root = Path(__file__).resolve().parents[2]
    shipped = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["clinicdb"]
    package = root / "python" / "clinicdb"
    templates = [p.relative_to(package).as_posix() for p in (package / "templates").rglob("*") if p.is_file()]
    assert templates
    assert [t for t in templates if not any(fnmatch.fnmatch(t, glob) for glob in shipped)] == []
