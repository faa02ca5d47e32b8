"""Scaffolding: new migrations for your own folder, rendered from the package's jinja2 templates.

``clinicdb new table`` and ``clinicdb new migration`` call ``table_spec`` /
``new_table`` and ``new_migration``. Every name is checked before anything is
written -- lowercase snake_case, no word PostgreSQL reserves, no duplicate, a
type PostgreSQL knows -- and a wrong one raises ``ScaffoldError`` (one line
saying what to do) with nothing written.

The files follow yoyo's documented naming: ``NNNN.slug.sql`` and
``NNNN.slug.rollback.sql``, numbered on from the highest number in the folder,
with a ``-- depends:`` line naming the folder's previous migration (or, for the
first, the newest of clinicdb's core migrations, read from the package). They
are meant to be read before they are applied with ``clinicdb migrate
--source DIR``; once applied, a migration is frozen like clinicdb's own.

The templates (``clinicdb/templates/*.sql.j2``) hold the conventions of the
reference schema: a uuid ``id``, ``clinic_id`` referencing
``clinicdb.clinics``, the composite key ``(clinic_id, id)`` (every foreign key
to a tenant table carries ``clinic_id``, so a row can only point into its own
clinic and the table can later be distributed by clinic on Citus),
``created_at`` / ``updated_at`` / ``deleted_at``, owner ``clinicdb_owner``,
``clinicdb.protect_table()`` and ``clinicdb.encrypt_column()``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from yoyo import read_migrations  # type: ignore[import-untyped]

from clinicdb import __version__, schema
from clinicdb._pg_names import MAX_IDENTIFIER, RESERVED, literal, quote_ident, type_spelling

# Schemas that are not the application's to add tables to.
_LAYER_SCHEMAS = frozenset({"clinicdb", schema.HISTORY_SCHEMA, "clinicdb_tap", "information_schema"})
# Columns every tenant table gets from the template.
_TEMPLATE_COLUMNS = ("id", "clinic_id", "created_at", "updated_at", "deleted_at")

# Serial types draw from one sequence shared by every clinic: its values tell a
# clinic how many rows the others insert.
_SERIAL = frozenset({"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"})
# What clinicdb.encrypt_column() accepts.
_ENCRYPTABLE = frozenset({"text", "varchar"})

_SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_MIGRATION_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_NUMBERED = re.compile(r"(?P<number>[0-9]+)\.")
_SUFFIXES = ("_ciphertext", "_blind_index")


class ScaffoldError(ValueError):
    """A name, type or option `clinicdb new` cannot use; the message says what to do instead. Nothing was written."""


def _one_line(text: str) -> str:
    """Free text (a command line, a folder) made safe for a ``--`` comment: one line."""
    return " ".join(str(text).split())


def _identifier(name: str, what: str, example: str) -> str:
    """A lowercase snake_case name PostgreSQL does not reserve, that fits in an identifier."""
    if not _SNAKE.fullmatch(name):
        raise ScaffoldError(f"{what} {name!r} is not lowercase snake_case: use letters, digits and _ (e.g. {example})")
    if name in RESERVED:
        raise ScaffoldError(f"{what} {name!r} is a word PostgreSQL reserves: pick another name (e.g. {example})")
    if len(name) > MAX_IDENTIFIER:
        raise ScaffoldError(f"{what} {name!r} is longer than {MAX_IDENTIFIER} characters: shorten it")
    return name


def _table_name(text: str, what: str) -> tuple[str, str]:
    """``table`` or ``schema.table``, checked; the schema defaults to public."""
    schema_name, _, table = text.rpartition(".")
    schema_name = schema_name or "public"
    _identifier(schema_name, f"{what} schema", "billing")
    _identifier(table, what, "visits")
    if schema_name in _LAYER_SCHEMAS or schema_name.startswith("pg_"):
        raise ScaffoldError(f"{what} {text!r}: schema {schema_name} is clinicdb's or PostgreSQL's: use one of yours")
    return schema_name, table


def _type(column: str, text: str) -> str:
    """The PostgreSQL type of ``--column column:text``, spelled the way the migration writes it."""
    base = text.split("(")[0].split("[")[0].strip().lower()
    if base in _SERIAL:
        raise ScaffoldError(
            f"column {column!r}: {base} draws from one sequence shared by every clinic (its values tell a clinic how "
            f"many rows the others add): use uuid, or bigint filled by your application"
        )
    try:
        return type_spelling(text)
    except ValueError as exc:
        raise ScaffoldError(f"column {column!r}: {exc}") from None


@dataclass(frozen=True)
class Column:
    """One of the user's columns: its name and PostgreSQL type."""

    name: str
    type: str

    @property
    def ident(self) -> str:
        return quote_ident(self.name)


@dataclass(frozen=True)
class ForeignKey:
    """``(clinic_id, column) references table (clinic_id, id)``: a reference that stays inside one clinic."""

    column: str
    schema: str
    table: str

    @property
    def ident(self) -> str:
        return quote_ident(self.column)

    @property
    def target(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"


@dataclass(frozen=True)
class TableSpec:
    """A new tenant table, checked: what ``new_table`` renders."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    encrypted: tuple[tuple[str, bool], ...] = ()
    references: tuple[ForeignKey, ...] = ()
    comment: str | None = None
    command: str = field(default="", compare=False)

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def slug(self) -> str:
        return "create-" + (self.name if self.schema == "public" else f"{self.schema}-{self.name}").replace("_", "-")


def _pair(text: str, option: str, form: str, example: str) -> tuple[str, str]:
    first, sep, second = text.partition(":")
    if not sep or not first.strip() or not second.strip():
        raise ScaffoldError(f"{option} {text!r} is not {form}: write it like {option} {example}")
    return first.strip(), second.strip()


def _encrypted(
    table: str, columns: dict[str, Column], encrypt: Sequence[str], blind_index: Sequence[str]
) -> tuple[tuple[str, bool], ...]:
    """The ``--encrypt`` columns, each with whether it gets a blind index, checked against what
    ``clinicdb.encrypt_column()`` accepts and the names it adds."""
    sealed: list[tuple[str, bool]] = []
    for column in dict.fromkeys([*encrypt, *blind_index]):
        if column not in columns:
            raise ScaffoldError(f"--encrypt / --blind-index {column!r}: no such column; add --column {column}:text")
        if column not in encrypt:
            raise ScaffoldError(f"--blind-index {column} needs the column encrypted too: add --encrypt {column}")
        if columns[column].type.split("(")[0] not in _ENCRYPTABLE:
            raise ScaffoldError(
                f"column {column!r} is {columns[column].type}; only text columns can be encrypted: "
                f"declare it --column {column}:text"
            )
        for suffix in _SUFFIXES:
            if column + suffix in columns:
                raise ScaffoldError(f"column {column + suffix!r} is the name encrypting {column} adds: rename it")
            if len(column + suffix) > MAX_IDENTIFIER:
                raise ScaffoldError(f"encrypted column {column!r} is too long for {column}{suffix}: shorten it")
        sealed.append((column, column in blind_index))
    if sealed and len(table + "_decrypted") > MAX_IDENTIFIER:
        raise ScaffoldError(f"table {table!r} is too long for its {table}_decrypted view: shorten it")
    return tuple(sealed)


def table_spec(
    name: str,
    columns: Sequence[str] = (),
    *,
    encrypt: Sequence[str] = (),
    blind_index: Sequence[str] = (),
    references: Sequence[str] = (),
    comment: str | None = None,
) -> TableSpec:
    """Check ``clinicdb new table`` arguments (``name:type`` columns, ``column:table`` references) and return the
    table they describe; raise ``ScaffoldError`` on the first problem."""
    schema_name, table = _table_name(name, "table name")
    parsed: dict[str, Column] = {}
    for text in columns:
        column, type_text = _pair(text, "--column", "NAME:TYPE", "reason:text")
        _identifier(column, "column name", "visit_reason")
        if column in _TEMPLATE_COLUMNS:
            raise ScaffoldError(f"column {column!r} is one every tenant table gets from the template: leave it out")
        if column in parsed:
            raise ScaffoldError(f"column {column!r} is given twice: keep one --column {column}:TYPE")
        parsed[column] = Column(column, _type(column, type_text))

    keys: list[ForeignKey] = []
    for text in references:
        column, target = _pair(text, "--references", "COLUMN:TABLE", "patient_id:patients")
        _identifier(column, "column name", "patient_id")
        if column in _TEMPLATE_COLUMNS:
            raise ScaffoldError(f"--references {text!r}: {column} is the template's; name the column of yours")
        if any(k.column == column for k in keys):
            raise ScaffoldError(f"column {column!r} references twice: keep one --references {column}:TABLE")
        target_schema, target_table = _table_name(target, "referenced table")
        declared = parsed.get(column)
        if declared is None:
            parsed[column] = Column(column, "uuid")
        elif declared.type != "uuid":
            raise ScaffoldError(
                f"column {column!r} references {target_table} by its uuid id but is {declared.type}: "
                f"declare it --column {column}:uuid (or leave the --column out)"
            )
        keys.append(ForeignKey(column, target_schema, target_table))

    sealed = _encrypted(table, parsed, encrypt, blind_index)
    words = ["clinicdb", "new", "table", name]
    for option, values in (
        ("--column", columns),
        ("--references", references),
        ("--encrypt", encrypt),
        ("--blind-index", blind_index),
        ("--comment", [comment] if comment else []),
    ):
        for value in values:
            words += [option, value]
    return TableSpec(
        schema_name,
        table,
        tuple(parsed.values()),
        sealed,
        tuple(keys),
        comment,
        command=shlex.join(words),
    )


@dataclass(frozen=True)
class Written:
    """What ``new_table`` / ``new_migration`` wrote: the migration, its rollback, and whether the folder is new."""

    id: str
    depends: str
    migration: Path
    rollback: Path
    created_folder: bool


def _migration_ids(folder: Path) -> list[str]:
    """Ids of the migrations in one of clinicdb's sets (as yoyo reads them), oldest first."""
    if not folder.is_dir():
        return []
    return sorted((str(m.id) for m in read_migrations(str(folder))), key=_order)


def _order(migration_id: str) -> tuple[int, str]:
    found = _NUMBERED.match(migration_id)
    return (int(found["number"]) if found else -1, migration_id)


def newest_core_id() -> str:
    """The newest of clinicdb's core migrations in this package: what a first migration of yours depends on."""
    ids = _migration_ids(schema.set_folder(schema.CORE))
    if not ids:
        raise FileNotFoundError(f"no clinicdb core migrations in {schema.set_folder(schema.CORE)}: reinstall clinicdb")
    return ids[-1]


def _folder_ids(folder: Path) -> list[str]:
    """Numbered migration ids of the user's folder (NNNN.slug.sql / .py), oldest first."""
    if not folder.is_dir():
        return []
    found = {
        p.name.removesuffix(p.suffix)
        for p in folder.iterdir()
        if p.is_file() and p.suffix in (".sql", ".py") and not p.name.endswith(".rollback.sql")
    }
    return sorted((i for i in found if _NUMBERED.match(i)), key=_order)


def _next_id(folder: Path, slug: str) -> tuple[str, str]:
    """The next id in ``folder`` for ``slug`` and what it depends on; refuse a name already used."""
    ids = _folder_ids(folder)
    for existing in ids:
        if existing.split(".", 1)[1] == slug:
            raise ScaffoldError(f"{folder / existing}.sql already has the name {slug!r}: pick another name")
    numbers = [_NUMBERED.match(i) for i in ids]
    width = max([4, *(len(n["number"]) for n in numbers if n)])
    number = max([0, *(int(n["number"]) for n in numbers if n)]) + 1
    new_id = f"{number:0{width}d}.{slug}"
    theirs = {*_migration_ids(schema.set_folder(schema.CORE)), *_migration_ids(schema.set_folder(schema.REFERENCE))}
    if new_id in theirs:
        raise ScaffoldError(f"{new_id} is the id of one of clinicdb's own migrations: pick another name")
    return new_id, ids[-1] if ids else newest_core_id()


def _creates(folder: Path, spec: TableSpec) -> Path | None:
    """A migration of the folder that already creates this table, if any."""
    names = [re.escape(spec.qualified)] + ([re.escape(quote_ident(spec.name))] if spec.schema == "public" else [])
    pattern = re.compile(rf"\bcreate\s+table\s+(?:if\s+not\s+exists\s+)?(?:{'|'.join(names)})\s*\(", re.IGNORECASE)
    for path in sorted(folder.glob("*.sql")) if folder.is_dir() else []:
        if not path.name.endswith(".rollback.sql") and pattern.search(path.read_text(encoding="utf-8")):
            return path
    return None


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("clinicdb", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        # SQL, not HTML: nothing is escaped; identifiers arrive quoted (quote_ident), text through `literal`.
        autoescape=False,  # noqa: S701
    )


def _render(template: str, **context: object) -> str:
    env = _environment()
    env.filters["literal"] = literal
    env.filters["one_line"] = _one_line
    return env.get_template(template).render(version=__version__, **context)


def _write(folder: Path, template: str, new_id: str, depends: str, **context: object) -> Written:
    """``template``.sql.j2 and ``template``.rollback.sql.j2 rendered into the migration ``new_id`` and its rollback:
    both files, or neither; an existing file is never overwritten."""
    context.update(id=new_id, depends=depends, folder=str(folder))
    migration = _render(f"{template}.sql.j2", **context)
    rollback = _render(f"{template}.rollback.sql.j2", **context)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    forward, backward = folder / f"{new_id}.sql", folder / f"{new_id}.rollback.sql"
    written: list[Path] = []
    try:
        for path, text in ((forward, migration), (backward, rollback)):
            with path.open("x", encoding="utf-8") as out:
                written.append(path)
                out.write(text)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return Written(new_id, depends, forward, backward, created)


def new_table(spec: TableSpec, folder: Path | str = "migrations") -> Written:
    """Write the migration creating ``spec``'s tenant table, and its rollback, into ``folder`` (created if missing).

    Raises ``ScaffoldError`` (nothing written) when the folder already creates the table or the id is taken.
    """
    where = Path(folder)
    found = _creates(where, spec)
    if found is not None:
        raise ScaffoldError(f"{found} already creates {spec.qualified}: pick another table name")
    return _write(where, "new_table", *_next_id(where, spec.slug), t=spec, command=spec.command)


def new_migration(name: str, folder: Path | str = "migrations") -> Written:
    """Write an empty (commented) migration and its rollback into ``folder`` (created if missing).

    ``name`` is lowercase words joined by ``-`` or ``_``; it becomes the slug (``add_index`` -> ``NNNN.add-index``).
    """
    if not _MIGRATION_NAME.fullmatch(name):
        raise ScaffoldError(
            f"migration name {name!r} is not lowercase words joined by - or _: write it like add-visit-reason-index"
        )
    where = Path(folder)
    slug = name.replace("_", "-")
    command = shlex.join(["clinicdb", "new", "migration", name])
    return _write(where, "new_migration", *_next_id(where, slug), command=command)
