"""Applying and rolling back clinicdb's migrations (yoyo) from Python.

The migrations ship inside the package (``clinicdb.migrations``, read with
``importlib.resources``), so an installed wheel migrates any database without
a checkout. They come in sets:

* ``core`` -- roles, the ``clinicdb`` schema, tenancy, audit, encryption,
  staff. ``clinicdb migrate`` installs these and nothing in ``public``.
* ``reference`` -- the reference healthcare tables (patients, appointments,
  ...), opt-in with ``reference=True`` (``--reference-schema``); once any of
  them is applied they stay part of every later migrate and rollback.
* the user's own folders (``sources``), applied after the sets above, in the
  same history table.

Each migration carries the SQL it runs (frozen, see ``migration_lock``);
nothing is read from ``sql/`` at run time. Objects are created as
``clinicdb_owner`` (``set local role``), so the connecting role only needs to
be able to create roles and grant them: a superuser on a fresh database.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
from psycopg import conninfo
from yoyo import read_migrations  # type: ignore[import-untyped]
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend  # type: ignore[import-untyped]
from yoyo.connections import DatabaseURI  # type: ignore[import-untyped]
from yoyo.migrations import default_migration_table  # type: ignore[import-untyped]

from clinicdb import migration_lock, rollback_guard
from clinicdb.settings import env

CORE = "core"
REFERENCE = "reference"
# yoyo's own tables (history, log, lock) live here rather than in public, so
# installing clinicdb adds no table to the application's schemas, and rolling
# back the clinicdb schema never drops the history that records it.
HISTORY_SCHEMA = "clinicdb_migrations"
_YOYO_TABLES = ("_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock")
# clinicdb 0.1 applied the reference schema as part of the core chain under
# this id; a database that ran it uses the reference set.
LEGACY_REFERENCE_ID = "0003.reference-schema"


class MigrationError(RuntimeError):
    """A migration request that cannot be carried out as asked; the message says what to do."""


def migrations_root() -> Path:
    """The folder holding the migration sets: the installed package's, or ``$CLINICDB_HOME/migrations``."""
    home = env("CLINICDB_HOME")
    if home:
        root = Path(home) / "migrations"
        if not (root / CORE).is_dir():
            raise FileNotFoundError(
                f"CLINICDB_HOME={home} has no migrations/{CORE}/ folder: unset CLINICDB_HOME to use the installed "
                "package's migrations, or point it at a clinicdb checkout"
            )
        return root
    # A regular (or editable) install keeps package data as plain files.
    return Path(str(resources.files("clinicdb.migrations")))


def set_folder(name: str) -> Path:
    """One migration set's folder (``core`` or ``reference``)."""
    return migrations_root() / name


def check_lock() -> None:
    """Refuse to run when a published migration file differs from migrations.lock."""
    report = migration_lock.check(migrations_root())
    if report.broken:
        raise MigrationError(report.describe())


def conninfo_of(url: str) -> str:
    """A libpq URL or key=value string, checked; multi-host URLs (h1:5432,h2:5432) are fine."""
    text = url.strip()
    if "://" in text and not text.startswith(("postgresql://", "postgres://")):
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"'{scheme}://' is not a PostgreSQL URL: use postgresql://user@host:port/dbname (several hosts may be "
            "listed as host1:port1,host2:port2)"
        )
    try:
        conninfo.conninfo_to_dict(text)
    except psycopg.ProgrammingError as exc:
        raise ValueError(
            f"not a PostgreSQL URL or connection string ({exc}): use postgresql://user@host/dbname"
        ) from exc
    return text


def _lock_timeout_ms() -> int:
    raw = env("CLINICDB_MIGRATION_LOCK_TIMEOUT_MS", "10000") or "10000"
    if not raw.isdigit():
        raise ValueError(f"CLINICDB_MIGRATION_LOCK_TIMEOUT_MS must be a whole number of milliseconds, not {raw!r}")
    return int(raw)


class _MigrationBackend(PostgresqlPsycopgBackend):  # type: ignore[misc]
    """yoyo's psycopg 3 backend, connecting with libpq's own parser instead of yoyo's URL parser,
    which cannot read multi-host URLs (``target_session_attrs=read-write`` behind a failover pair).
    Migrations run on connections of this class, with the database's own search_path."""

    def connect(self, dburi: Any) -> psycopg.Connection[Any]:
        self.schema = None
        conn = psycopg.connect(dburi.args["conninfo"], autocommit=True)
        # DDL queues behind the application's open transactions, and every new
        # query then queues behind the DDL: fail clearly instead of stalling.
        conn.execute(psycopg.sql.SQL("set lock_timeout = {}").format(psycopg.sql.Literal(f"{_lock_timeout_ms()}ms")))
        return conn


class _HistoryBackend(_MigrationBackend):
    """The bookkeeping connection: yoyo's tables resolve in HISTORY_SCHEMA. Each migration runs on a
    copy, which is a plain _MigrationBackend."""

    def init_connection(self, connection: psycopg.Connection[Any]) -> None:
        connection.execute(f"set search_path = {HISTORY_SCHEMA}")

    def copy(self) -> _MigrationBackend:
        return _MigrationBackend(self.uri, self.migration_table)


class _DryRunBackend(_MigrationBackend):
    """Runs migrations' steps inside one transaction its caller opens and rolls back: yoyo's own transaction
    handling becomes a no-op, so nothing a step does is ever committed."""

    def transaction(self, rollback_on_exit: bool = False) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def disable_transactions(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def _dry_run_dropped(uri: Any, migrations: Sequence[Any]) -> list[tuple[str, str, str]]:
    """Run the rollbacks of ``migrations`` (newest first) in a transaction that is rolled back; return the tables
    they dropped as (name, schema, relname). An error a rollback would raise is raised here, before anything changes."""
    dry = _DryRunBackend(uri, default_migration_table)
    conn = dry.connection
    try:
        conn.execute("begin")
        before = conn.execute(rollback_guard.TABLES_QUERY).fetchall()
        for migration in migrations:
            migration.process_steps(dry, "rollback")
        left = conn.execute("select oid::bigint from pg_class where oid = any (%s::oid[])", ([r[0] for r in before],))
        still = {r[0] for r in left.fetchall()}
        return [(str(name), str(schema), str(rel)) for oid, name, schema, rel in before if oid not in still]
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute("rollback")
        conn.close()


def _prepare_history(url: str) -> None:
    """Create the history schema; move a clinicdb 0.1 history (kept in public) into it, once."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(f"create schema if not exists {HISTORY_SCHEMA}")
        conn.execute(f"revoke all on schema {HISTORY_SCHEMA} from public")
        for table in _YOYO_TABLES:
            row = conn.execute(
                "select to_regclass(%s) is not null and to_regclass(%s) is null",
                (f"public.{table}", f"{HISTORY_SCHEMA}.{table}"),
            ).fetchone()
            if row and row[0]:
                conn.execute(f"alter table public.{table} set schema {HISTORY_SCHEMA}")


@contextlib.contextmanager
def _backend(url: str) -> Iterator[Any]:
    """A yoyo backend on ``url`` whose connection is closed afterwards (yoyo leaves it open)."""
    text = conninfo_of(url)
    _prepare_history(text)
    uri = DatabaseURI("postgresql+psycopg", None, None, None, None, None, {"conninfo": text})
    backend = _HistoryBackend(uri, default_migration_table)
    try:
        backend.init_database()
        yield backend
    finally:
        backend.connection.close()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """yoyo prints the rows of every SELECT a SQL migration runs; callers report what was applied instead."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _applied_ids(backend: Any) -> list[str]:
    """Ids in the history table, oldest first, including ids no folder knows (0.1's, other sources')."""
    backend.ensure_internal_schema_updated()
    rows = backend.execute(
        f"select migration_id from {backend.migration_table_quoted} order by applied_at_utc, migration_id"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _read(folders: Sequence[Path]) -> Any:
    """Migrations of the given folders, in id order within the whole (yoyo keeps that order where deps allow)."""
    found = read_migrations(*(str(f) for f in folders)) if folders else read_migrations()
    return found.__class__(sorted(found, key=lambda m: m.id), found.post_apply)


def _layer_folders(applied: Sequence[str], *, reference: bool) -> list[Path]:
    """Core, plus reference when asked for or already in use."""
    folders = [set_folder(CORE)]
    ref = set_folder(REFERENCE)
    ref_ids = {p.stem for p in ref.glob("*.py")} | {p.stem for p in ref.glob("*.sql")} if ref.is_dir() else set()
    in_use = LEGACY_REFERENCE_ID in applied or any(i in ref_ids for i in applied)
    if ref.is_dir() and (reference or in_use):
        folders.append(ref)
    return folders


def _user_folders(sources: Sequence[Path | str]) -> list[Path]:
    folders = [Path(s) for s in sources]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"migration source {folder} is not a folder")
    return folders


def apply(
    url: str, *, reference: bool = False, sources: Sequence[Path | str] = (), notes: list[str] | None = None
) -> list[str]:
    """Apply every pending migration (core, reference when asked or in use, then ``sources``); return ids applied.

    Memberships and staff mappings a rollback kept are restored afterwards; what was restored (and what still
    waits) is appended to ``notes``."""
    check_lock()
    users = _user_folders(sources)
    done: list[str] = []
    with _backend(url) as backend, backend.lock(), _quiet():
        applied = _applied_ids(backend)
        layers = _read(_layer_folders(applied, reference=reference))
        pending = backend.to_apply(layers)
        backend.apply_migrations(pending)
        done += [m.id for m in pending]
        if users:
            own = _read(users)
            clash = {m.id for m in own} & {m.id for m in layers}
            if clash:
                raise MigrationError(f"migration ids {sorted(clash)} are clinicdb's own: rename yours")
            pending = backend.to_apply(own)
            backend.apply_migrations(pending)
            done += [m.id for m in pending]
    with psycopg.connect(conninfo_of(url), autocommit=True) as conn, conn.transaction():
        restored = rollback_guard.restore(conn)
    if notes is not None:
        notes += restored
    return done


def rollback(
    url: str,
    *,
    count: int | None = 1,
    to_zero: bool = False,
    sources: Sequence[Path | str] = (),
    destroy_data: bool = False,
    notes: list[str] | None = None,
) -> list[str]:
    """Roll back the newest ``count`` migrations (or all of them), newest first; return their ids.

    Nothing is rolled back when a table the rollbacks would drop holds rows, unless ``destroy_data``; even then
    the audit trail is copied into the history schema first. Logins' memberships in the group roles and staff
    mappings are kept for the next migrate. What was kept is appended to ``notes``."""
    if not to_zero and (count is None or count < 1):
        raise ValueError(f"--count must be 1 or more (got {count}); use --all to roll back everything")
    users = _user_folders(sources)
    with _backend(url) as backend, backend.lock(), _quiet():
        applied = _applied_ids(backend)
        known = _read([*_layer_folders(applied, reference=True), *users])
        known_ids = {m.id for m in known}
        strangers = [i for i in applied if i not in known_ids and i != LEGACY_REFERENCE_ID]
        if strangers:
            raise MigrationError(
                f"migrations from another source are applied ({', '.join(strangers)}): pass --source with their "
                "folder so they are rolled back first"
            )
        order = {mid: n for n, mid in enumerate(applied)}
        by_age = known.__class__(sorted((m for m in known if m.id in order), key=lambda m: order[m.id]))
        newest_first = list(backend.to_rollback(by_age))
        chosen = newest_first if to_zero else newest_first[:count]
        if not chosen:
            return []
        rollback_guard.require_superuser(backend.connection)
        dropped = rollback_guard.count_rows(backend.connection, _dry_run_dropped(backend.uri, chosen))
        if rollback_guard.at_risk(dropped) and not destroy_data:
            raise MigrationError(rollback_guard.refusal(dropped))
        kept = rollback_guard.keep_audit_trail(backend.connection, dropped)
        kept += rollback_guard.keep_memberships(backend.connection, [m.id for m in chosen])
        backend.rollback_migrations(known.__class__(chosen))
    if notes is not None:
        notes += kept
    return [m.id for m in chosen]


def _layer_of(path: Path, layers: Sequence[str]) -> str:
    """The set a migration file belongs to: the name of its folder when that is a known set."""
    return path.parent.name if path.parent.name in layers else layers[-1]


@dataclass(frozen=True)
class MigrationState:
    """One migration, the set it belongs to and whether it is applied to the database."""

    id: str
    applied: bool
    layer: str = CORE


def status(url: str, *, sources: Sequence[Path | str] = ()) -> list[MigrationState]:
    """Every known migration with its applied state, then applied ids no folder knows (e.g. 0.1's)."""
    users = _user_folders(sources)
    with _backend(url) as backend:
        applied = _applied_ids(backend)
        states: list[MigrationState] = []
        # clinicdb's sets in the order they apply (by id), then the user's folders.
        for layers, folders in (((CORE, REFERENCE), [set_folder(CORE), set_folder(REFERENCE)]), (("source",), users)):
            present = [f for f in folders if f.is_dir()]
            if present:
                states += [
                    MigrationState(m.id, m.id in applied, _layer_of(Path(m.path), layers)) for m in _read(present)
                ]
        listed = {s.id for s in states}
        states += [
            MigrationState(i, True, "0.1 (history)" if i == LEGACY_REFERENCE_ID else "unknown")
            for i in applied
            if i not in listed
        ]
    return states
