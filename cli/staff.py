"""``clinicdb staff``: map psql logins to the clinic they may act for."""

from __future__ import annotations

import uuid

import click
import psycopg

from ._common import (
    admin_url_option,
    friendly_errors,
    output_options,
    print_rows,
    resolve_admin_url,
)


@click.group()
def staff() -> None:
    """Grant, revoke and list staff logins (humans in psql).

    Example:

        clinicdb staff grant dr_alice 6f1c...-...
    """


@staff.command()
@click.argument("role")
@click.argument("clinic_id", type=click.UUID)
@admin_url_option
@friendly_errors
def grant(role: str, clinic_id: uuid.UUID, database_url: str | None) -> None:
    """Let login ROLE act for CLINIC_ID only (adds it to clinicdb_staff).

    Example:

        clinicdb staff grant dr_alice 0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b11
    """
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        conn.execute("select clinicdb.grant_staff(%s, %s)", (role, clinic_id))
    click.echo(f"{role} may now act for clinic {clinic_id}")


@staff.command()
@click.argument("role")
@click.argument("clinic_id", type=click.UUID, required=False)
@admin_url_option
@friendly_errors
def revoke(role: str, clinic_id: uuid.UUID | None, database_url: str | None) -> None:
    """Remove ROLE's mapping to CLINIC_ID (or to every clinic when omitted).

    Example:

        clinicdb staff revoke dr_alice
    """
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        row = conn.execute("select clinicdb.revoke_staff(%s, %s)", (role, clinic_id)).fetchone()
    removed = row[0] if row else 0
    if not removed:
        where = f" to clinic {clinic_id}" if clinic_id else ""
        raise click.ClickException(f"{role} has no staff mapping{where}: nothing removed (see clinicdb staff list)")
    click.echo(f"removed {removed} mapping(s) of {role}")


@staff.command("list")
@admin_url_option
@output_options
@friendly_errors
def list_(database_url: str | None, as_json: bool) -> None:
    """List staff logins and their clinics.

    Example:

        clinicdb staff list
    """
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        rows = conn.execute(
            "select sm.role_name, sm.clinic_id, c.name, sm.granted_at, sm.granted_by"
            "  from clinicdb.staff_members sm left join clinicdb.clinics c on c.id = sm.clinic_id"
            " order by sm.role_name, c.name"
        ).fetchall()
    print_rows(["role", "clinic_id", "clinic", "granted_at", "granted_by"], rows, as_json)


def register(cli: click.Group) -> None:
    cli.add_command(staff)
