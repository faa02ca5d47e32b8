"""What every command shares: database options, one-line errors, tables."""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import psycopg

from clinicdb.devcluster import ClusterError, PostgresNotFound
from clinicdb.schema import MigrationError, conninfo_of
from clinicdb.settings import env

F = TypeVar("F", bound=Callable[..., Any])

# Failures a user can act on become one line, never a traceback.
_EXPECTED: tuple[type[BaseException], ...] = (
    psycopg.Error,
    ClusterError,
    PostgresNotFound,
    FileNotFoundError,
    PermissionError,
    subprocess.CalledProcessError,
    ValueError,
    MigrationError,
)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        text = diag.message_primary or str(exc).strip().splitlines()[0]
        if diag.message_hint:
            text += f" (hint: {diag.message_hint})"
        return text
    if isinstance(exc, subprocess.CalledProcessError):
        return f"{exc.cmd[0] if exc.cmd else 'command'} failed: {exc.stderr}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def resolve_admin_url(database_url: str | None) -> str:
    """The admin URL to act on, checked: one line says what is wrong with it (another database's scheme, a
    malformed connection string) before anything connects."""
    url = database_url or env("CLINICDB_ADMIN_URL") or env("CLINICDB_DATABASE_URL")
    if not url:
        raise click.ClickException('no database given: pass --database-url, or run eval "$(clinicdb dev env)" first')
    try:
        return conninfo_of(url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


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
