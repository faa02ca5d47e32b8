"""``clinicdb psql``: a psql session scoped to one clinic."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid

import click
import psycopg

from clinicdb._scope import make_scope, scope_script

from ._common import admin_url_option, friendly_errors, resolve_admin_url

ROLES = ("clinicdb_readonly", "clinicdb_app")


def psqlrc(clinic_id: uuid.UUID, role: str) -> str:
    """The start-up script: drop to an application role, set the clinic, show it in the prompt."""
    return (
        "\\set QUIET on\n"
        "\\set ON_ERROR_STOP on\n"
        f"set role {role};\n"
        f"{scope_script(make_scope(clinic_id), local=False)};\n"
        "\\set ON_ERROR_STOP off\n"
        f"\\set PROMPT1 '%/ [clinic {str(clinic_id)[:8]} as {role}]%R%# '\n"
        f"\\set PROMPT2 '%/ [clinic {str(clinic_id)[:8]}]%R%# '\n"
        "\\set QUIET off\n"
        f"\\echo 'clinicdb: scoped to clinic {clinic_id} as {role}; rows of other clinics are invisible.'\n"
    )


@click.command()
@click.option("--clinic", "clinic_id", required=True, type=click.UUID, help="The clinic to scope to.")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="clinicdb_readonly",
    show_default=True,
    help="Application role to act as (readonly cannot change rows).",
)
@admin_url_option
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@friendly_errors
def psql(clinic_id: uuid.UUID, role: str, database_url: str | None, psql_args: tuple[str, ...]) -> None:
    """Open psql as an operator, scoped to one clinic, with the clinic in the prompt.

    The session drops to an application role (readonly by default) with
    app.clinic_id set for the session, so the tenant policies apply. This is
    an operator's convenience: the operator's own login could RESET ROLE. For
    people who must not escape their clinic, create a login and map it with
    `clinicdb staff grant`.

    Example:

        clinicdb psql --clinic 0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b11 -- -c 'select count(*) from patients'
    """
    url = resolve_admin_url(database_url)
    binary = shutil.which("psql")
    if binary is None:
        raise click.ClickException("psql not found: install it with 'apt-get install postgresql-client'")
    with psycopg.connect(url) as conn:
        found = conn.execute("select 1 from clinicdb.clinics where id = %s", (clinic_id,)).fetchone()
    if not found:
        raise click.ClickException(f"clinic {clinic_id} does not exist: see 'clinicdb clinic list'")
    with tempfile.NamedTemporaryFile("w", prefix="clinicdb-psqlrc-", suffix=".sql", delete=False) as rc:
        rc.write(psqlrc(clinic_id, role))
    try:
        result = subprocess.run([binary, url, *psql_args], env={**os.environ, "PSQLRC": rc.name}, check=False)
    finally:
        os.unlink(rc.name)
    raise SystemExit(result.returncode)


def register(cli: click.Group) -> None:
    cli.add_command(psql)
