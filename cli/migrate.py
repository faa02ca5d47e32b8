"""``clinicdb migrate``, ``rollback`` and ``migrations``: the yoyo migrations."""

from __future__ import annotations

import click

from clinicdb import schema

from ._common import (
    admin_url_option,
    friendly_errors,
    output_options,
    print_rows,
    resolve_admin_url,
)


@click.command()
@admin_url_option
@friendly_errors
def migrate(database_url: str | None) -> None:
    """Apply every pending migration.

    Example:

        clinicdb migrate --database-url postgresql://postgres@127.0.0.1:5432/clinicdb
    """
    applied = schema.apply(resolve_admin_url(database_url))
    click.echo(f"applied: {', '.join(applied)}" if applied else "nothing to apply")


@click.command()
@admin_url_option
@click.option("--count", default=1, show_default=True, help="How many migrations to roll back.")
@click.option("--all", "to_zero", is_flag=True, help="Roll back every migration.")
@friendly_errors
def rollback(database_url: str | None, count: int, to_zero: bool) -> None:
    """Roll back the newest migration(s).

    Example:

        clinicdb rollback --count 2
    """
    undone = schema.rollback(resolve_admin_url(database_url), count=count, to_zero=to_zero)
    click.echo(f"rolled back: {', '.join(undone)}" if undone else "nothing to roll back")


@click.command()
@admin_url_option
@output_options
@friendly_errors
def migrations(database_url: str | None, as_json: bool) -> None:
    """List migrations and whether each is applied.

    Example:

        clinicdb migrations
    """
    states = schema.status(resolve_admin_url(database_url))
    print_rows(["migration", "applied"], [[s.id, "yes" if s.applied else "no"] for s in states], as_json)


def register(cli: click.Group) -> None:
    cli.add_command(migrate)
    cli.add_command(rollback)
    cli.add_command(migrations)
