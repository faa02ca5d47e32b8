"""``clinicdb migrate``, ``rollback`` and ``migrations``: the yoyo migrations shipped in the package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from clinicdb import citus, schema

from ._common import (
    admin_url_option,
    friendly_errors,
    output_options,
    print_rows,
    resolve_admin_url,
)

F = TypeVar("F", bound=Callable[..., Any])


def source_option(func: F) -> F:
    """``--source DIR`` (repeatable): the user's own migration folders, applied after clinicdb's."""
    return click.option(
        "--source",
        "sources",
        multiple=True,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="A folder of your own yoyo migrations, applied after clinicdb's (repeatable).",
    )(func)


@click.command()
@admin_url_option
@click.option(
    "--reference-schema",
    is_flag=True,
    help="Also install the reference healthcare tables (patients, appointments, ...) in public.",
)
@click.option(
    "--citus/--no-citus",
    "use_citus",
    default=None,
    help="Apply the Citus profile (distribute by clinic_id); default: when the citus extension is installed.",
)
@source_option
@friendly_errors
def migrate(
    database_url: str | None, reference_schema: bool, use_citus: bool | None, sources: tuple[Path, ...]
) -> None:
    """Apply every pending migration: clinicdb's core layer, then your own.

    The core layer is roles, the clinicdb schema, tenancy, audit, encryption
    and staff; it adds no table to your schemas. The reference schema is
    installed only with --reference-schema (and kept up to date afterwards).

    Example:

        clinicdb migrate --database-url postgresql://postgres@db1:5432,db2:5432/clinics?target_session_attrs=read-write
        clinicdb migrate --source ./migrations        # your tables, after the core
        clinicdb migrate --citus                      # on a Citus coordinator (docs/citus.md)
    """
    notes: list[str] = []
    url = resolve_admin_url(database_url)
    if use_citus is None:
        schema.check_lock()  # a changed published migration is refused before any connection
        use_citus = citus.detect(url)
    if use_citus:
        applied = citus.migrate(url, reference=reference_schema, sources=sources, notes=notes)
        notes.append("citus: the layer and every protected table are distributed by clinic_id (docs/citus.md)")
    else:
        applied = schema.apply(url, reference=reference_schema, sources=sources, notes=notes)
    click.echo(f"applied: {', '.join(applied)}" if applied else "nothing to apply")
    for note in notes:
        click.echo(note)


@click.command()
@admin_url_option
@click.option("--count", default=1, show_default=True, help="How many migrations to roll back (1 or more).")
@click.option("--all", "to_zero", is_flag=True, help="Roll back every migration.")
@click.option(
    "--destroy-data",
    is_flag=True,
    help="Proceed even though tables holding rows would be dropped (the audit trail is kept).",
)
@source_option
@friendly_errors
def rollback(
    database_url: str | None, count: int, to_zero: bool, destroy_data: bool, sources: tuple[Path, ...]
) -> None:
    """Roll back the newest migration(s), newest first.

    Your own migrations (--source) roll back before clinicdb's. The
    rollbacks are first tried in a transaction that is undone: if they
    would drop a table holding rows (patients, the audit trail, keys),
    nothing happens and the tables and row counts are listed; with
    --destroy-data it proceeds, after copying the audit trail into the
    clinicdb_migrations schema. Logins' memberships in clinicdb's group
    roles and staff mappings are kept there for the next migrate.

    Example:

        clinicdb rollback --count 2
        clinicdb rollback --all --destroy-data      # really everything; the audit trail is kept
    """
    notes: list[str] = []
    undone = schema.rollback(
        resolve_admin_url(database_url),
        count=count,
        to_zero=to_zero,
        sources=sources,
        destroy_data=destroy_data,
        notes=notes,
    )
    click.echo(f"rolled back: {', '.join(undone)}" if undone else "nothing to roll back")
    for note in notes:
        click.echo(note)


@click.command()
@admin_url_option
@source_option
@output_options
@friendly_errors
def migrations(database_url: str | None, sources: tuple[Path, ...], as_json: bool) -> None:
    """List migrations, the set each belongs to, and whether each is applied.

    Example:

        clinicdb migrations --source ./migrations
    """
    states = schema.status(resolve_admin_url(database_url), sources=sources)
    print_rows(
        ["migration", "set", "applied"],
        [[s.id, s.layer, "yes" if s.applied else "no"] for s in states],
        as_json,
    )


def register(cli: click.Group) -> None:
    cli.add_command(migrate)
    cli.add_command(rollback)
    cli.add_command(migrations)
