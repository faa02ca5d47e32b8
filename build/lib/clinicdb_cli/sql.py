"""``clinicdb sql``: print the SQL the layer would run, for DBA review."""

from __future__ import annotations

import click
import psycopg

from ._common import admin_url_option, friendly_errors, resolve_admin_url


@click.group()
def sql() -> None:
    """Print SQL for review instead of running it.

    Example:

        clinicdb sql policies patients
    """


@sql.command()
@click.argument("table")
@admin_url_option
@friendly_errors
def policies(table: str, database_url: str | None) -> None:
    """Print the exact statements clinicdb.protect_table(TABLE) runs.

    Rendered by clinicdb.protect_table_sql() from the one policy definition
    in clinicdb.tenant_policies, so what you review is what runs.

    Example:

        clinicdb sql policies public.patients > review.sql
    """
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        rows = conn.execute("select clinicdb.protect_table_sql(%s::regclass)", (table,)).fetchall()
    click.echo(f"-- clinicdb.protect_table('{table}') runs, in order:")
    for (statement,) in rows:
        click.echo(f"{statement};")


def register(cli: click.Group) -> None:
    cli.add_command(sql)
