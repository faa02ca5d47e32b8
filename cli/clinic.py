"""``clinicdb clinic``: create and list clinics (tenants)."""

from __future__ import annotations

import uuid

import click
import psycopg

from ._common import (
    admin_url_option,
    friendly_errors,
    output_options,
    print_rows,
    require_unrestricted_login,
    resolve_admin_url,
)


@click.group()
def clinic() -> None:
    """Create and list clinics.

    Example:

        clinicdb clinic add "Northside Family Practice"
    """


@clinic.command("add")
@click.argument("name")
@click.option("--id", "clinic_id", type=click.UUID, help="Use this id instead of a random one.")
@click.option("--timezone", default="UTC", show_default=True, help="The clinic's time zone.")
@admin_url_option
@friendly_errors
def add(name: str, clinic_id: uuid.UUID | None, timezone: str, database_url: str | None) -> None:
    """Create a clinic and print its id.

    Example:

        clinicdb clinic add "Northside Family Practice" --timezone Europe/Berlin
    """
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        row = conn.execute("select clinicdb.create_clinic(%s, %s, %s)", (name, clinic_id, timezone)).fetchone()
    assert row is not None
    click.echo(str(row[0]))


@clinic.command("list")
@admin_url_option
@output_options
@friendly_errors
def list_(database_url: str | None, as_json: bool) -> None:
    """List every clinic (needs an admin login; the app sees only its own).

    Example:

        clinicdb clinic list --json
    """
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        rows = conn.execute(
            "select id, name, timezone, created_at from clinicdb.clinics where deleted_at is null order by name"
        ).fetchall()
        if not rows:
            require_unrestricted_login(conn, "clinic")
    print_rows(["id", "name", "timezone", "created_at"], rows, as_json)


def register(cli: click.Group) -> None:
    cli.add_command(clinic)
