"""What every command shares: database options, one-line errors, tables."""

from __future__ import annotations

import functools
import json
import subprocess
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import psycopg

from clinicdb import ClinicDBError
from clinicdb.devcluster import ClusterError, PostgresNotFound
from clinicdb.schema import MigrationError, conninfo_of
from clinicdb.settings import env

F = TypeVar("F", bound=Callable[..., Any])

# Failures a user can act on become one line, never a traceback.
_EXPECTED: tuple[type[BaseException], ...] = (
    psycopg.Error,
    ClusterError,
    PostgresNotFound,
    OSError,
    subprocess.CalledProcessError,
    ValueError,
    MigrationError,
    ClinicDBError,
)

_ADMIN_LOGIN = "pass --database-url of an administrator's login, or set CLINICDB_ADMIN_URL"
_NOT_MIGRATED = "is clinicdb installed and up to date in this database? `clinicdb migrations` lists what is applied"


def one_line(text: str) -> str:
    """``text`` on one line: libpq and others add a second line (often the advice), which is kept."""
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _database_advice(exc: psycopg.Error) -> str | None:
    """What to do about a server error that does not carry its own hint."""
    message = exc.diag.message_primary or ""
    if exc.sqlstate == "42501":
        return f"this needs more rights than the login has: {_ADMIN_LOGIN}"
    if exc.sqlstate == "3F000" and '"clinicdb"' in message:
        return "clinicdb is not installed in this database: run clinicdb migrate (or pick another --database-url)"
    if exc.sqlstate in ("42P01", "42883") and ('"clinicdb.' in message or "function clinicdb." in message):
        return _NOT_MIGRATED
    return None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        # Connection failures have no diagnostics: libpq's text, whose second line says what to check.
        text = diag.message_primary or str(exc)
        hint = diag.message_hint or _database_advice(exc)
        return one_line(text + (f" (hint: {hint})" if hint else ""))
    if isinstance(exc, subprocess.CalledProcessError):
        return one_line(f"{exc.cmd[0] if exc.cmd else 'command'} failed: {exc.stderr}")
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return one_line(f"{exc.strerror}{where}")
    return one_line(str(exc)) or type(exc).__name__


def friendly_errors(func: F) -> F:
    """Turn expected failures into a one-line ``click.ClickException``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _EXPECTED as exc:
            raise click.ClickException(_one_line(exc)) from exc

    return wrapper  # type: ignore[return-value]


def admin_url_option(func: F) -> F:
    """``--database-url`` for commands that administer the database."""
    return click.option(
        "--database-url",
        "database_url",
        metavar="URL",
        help="Server to act on (default: CLINICDB_ADMIN_URL, then CLINICDB_DATABASE_URL).",
    )(func)


def checked_url(url: str, source: str) -> str:
    """``url`` if it is a PostgreSQL URL or connection string; else one line naming where it came from
    (``--database-url``, ``CLINICDB_ADMIN_URL``, ...) and what is wrong, before anything connects."""
    try:
        return conninfo_of(url)
    except ValueError as exc:
        raise click.ClickException(f"{source}: {one_line(str(exc))}") from exc


def env_replica_urls() -> list[str]:
    """``CLINICDB_REPLICA_URLS``, split as the driver's ``ClinicDB.from_env()`` splits it, each checked."""
    listed = [u.strip() for u in (env("CLINICDB_REPLICA_URLS") or "").split(",") if u.strip()]
    return [checked_url(url, "CLINICDB_REPLICA_URLS") for url in listed]


def resolve_admin_url(database_url: str | None) -> str:
    """The admin URL to act on (the option, else CLINICDB_ADMIN_URL, else CLINICDB_DATABASE_URL), checked."""
    for source, url in (
        ("--database-url", database_url),
        ("CLINICDB_ADMIN_URL", env("CLINICDB_ADMIN_URL")),
        ("CLINICDB_DATABASE_URL", env("CLINICDB_DATABASE_URL")),
    ):
        if url:
            return checked_url(url, source)
    raise click.ClickException('no database given: pass --database-url, or run eval "$(clinicdb dev env)" first')


def require_clinic(conn: psycopg.Connection[Any], clinic_id: uuid.UUID | None) -> None:
    """An error naming ``clinic_id`` when no such clinic exists (a typo must not read as "no rows")."""
    if clinic_id is None:
        return
    if conn.execute("select 1 from clinicdb.clinics where id = %s", (clinic_id,)).fetchone() is None:
        raise click.ClickException(f"clinic {clinic_id} does not exist: see clinicdb clinic list")


def require_unrestricted_login(conn: psycopg.Connection[Any], what: str) -> None:
    """For a listing that came back empty: an error when the login is under row level security (the app's or a
    staff login, e.g. CLINICDB_DATABASE_URL used as the admin URL), whose empty answer would hide every row."""
    row = conn.execute("select current_user, rolsuper or rolbypassrls from pg_roles where rolname = current_user")
    found = row.fetchone()
    if found is not None and not found[1]:
        raise click.ClickException(
            f"login {found[0]} sees no {what}: row level security hides other clinics' rows from it; {_ADMIN_LOGIN}"
        )


def output_options(func: F) -> F:
    """``--json`` for machines; tables for people."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(func)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_rows(headers: Sequence[str], rows: Sequence[Sequence[Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([dict(zip(headers, r, strict=True)) for r in rows], default=str, indent=2))
    else:
        print_table(headers, rows)
