"""``clinicdb psql``: a psql session scoped to one clinic.

Three forms, chosen from the login and the database:

- an operator on a single node: psql drops to an application role and sets
  ``app.clinic_id`` for the session (``set_config(..., false)``);
- an operator on Citus: a session-level setting never reaches the workers
  (Citus propagates only ``SET LOCAL``, per transaction), so psql logs in as a
  temporary login, a member of the application role, whose own default
  ``app.clinic_id`` is the clinic. Every node reads that default for every
  connection of the login, the ones Citus opens to the workers included; the
  login is dropped when psql exits;
- a staff login (a member of ``clinicdb_staff``): psql runs as that login,
  whose mapping decides the clinic on every node.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import click
import psycopg
from psycopg import sql

from clinicdb import citus
from clinicdb._scope import make_scope, scope_script
from clinicdb._url import replace_url

from ._common import admin_url_option, friendly_errors, require_clinic, resolve_admin_url

ROLES = ("clinicdb_readonly", "clinicdb_app")
TEMPORARY_PREFIX = "clinicdb_psql_"


def _prompt(clinic_id: uuid.UUID, who: str) -> str:
    return (
        "\\set ON_ERROR_STOP off\n"
        f"\\set PROMPT1 '%/ [clinic {str(clinic_id)[:8]} as {who}]%R%# '\n"
        f"\\set PROMPT2 '%/ [clinic {str(clinic_id)[:8]}]%R%# '\n"
        "\\set QUIET off\n"
    )


def psqlrc(clinic_id: uuid.UUID, role: str) -> str:
    """The start-up script: drop to an application role, set the clinic, show it in the prompt."""
    return (
        "\\set QUIET on\n"
        "\\set ON_ERROR_STOP on\n"
        f"set role {role};\n"
        f"{scope_script(make_scope(clinic_id), local=False)};\n"
        + _prompt(clinic_id, role)
        + f"\\echo 'clinicdb: scoped to clinic {clinic_id} as {role}; rows of other clinics are invisible.'\n"
    )


def citus_psqlrc(clinic_id: uuid.UUID, role: str) -> str:
    """The start-up script on Citus: the temporary login already carries the clinic; only the prompt is set."""
    return (
        "\\set QUIET on\n"
        + _prompt(clinic_id, role)
        + f"\\echo 'clinicdb: scoped to clinic {clinic_id} as {role} on every Citus node (a temporary login,"
        " dropped on exit); rows of other clinics are invisible.'\n"
    )


def staff_psqlrc(clinic_id: uuid.UUID, login: str, *, pick: bool) -> str:
    """The start-up script for a staff login: its mapping decides; ``pick`` names the clinic among several."""
    chosen = f"{scope_script(make_scope(clinic_id), local=False)};\n" if pick else ""
    return (
        "\\set QUIET on\n\\set ON_ERROR_STOP on\n"
        + chosen
        + _prompt(clinic_id, login)
        + f"\\echo 'clinicdb: staff login {login}, clinic {clinic_id}; rows of other clinics are invisible.'\n"
    )


def _staff_clinics(conn: psycopg.Connection[Any]) -> list[uuid.UUID] | None:
    """The clinics the connected login is mapped to when it is staff (not a superuser), else None."""
    row = conn.execute(
        """select pg_has_role(current_user, 'clinicdb_staff', 'MEMBER') and not r.rolsuper
             from pg_roles r where r.rolname = current_user"""
    ).fetchone()
    if not (row and row[0]):
        return None
    rows = conn.execute("select clinic_id from clinicdb.staff_members where role_name = current_user")
    return [r[0] for r in rows.fetchall()]


@contextlib.contextmanager
def temporary_login(conn: psycopg.Connection[Any], clinic_id: uuid.UUID, role: str) -> Iterator[tuple[str, str]]:
    """A new login, member of ``role``, whose default ``app.clinic_id`` is ``clinic_id``; dropped on exit.

    Yields its name and a random password. The password reaches the server
    only as a SCRAM verifier computed here (never as text in a statement or a
    log); the clinic is a ``uuid.UUID`` written as hex digits and dashes.
    Citus propagates the login, its membership and its default setting to
    every node.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    name = TEMPORARY_PREFIX + secrets.token_hex(8)
    password = secrets.token_urlsafe(24)
    verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
    login = sql.Identifier(name)
    conn.execute(
        sql.SQL("create role {} login in role {} password {}").format(
            login, sql.Identifier(role), sql.Literal(verifier)
        )
    )
    try:
        conn.execute(sql.SQL("alter role {} set app.clinic_id = {}").format(login, sql.Literal(str(clinic_id))))
        yield name, password
    finally:
        try:
            conn.execute(sql.SQL("drop role if exists {}").format(login))
        except psycopg.Error as exc:
            click.echo(f"warning: the temporary login {name} was not dropped ({exc.diag.message_primary}):"
                       f" drop role {name};", err=True)  # fmt: skip


def _run_psql(binary: str, url: str, args: tuple[str, ...], rc_text: str, extra_env: dict[str, str]) -> int:
    """psql with ``rc_text`` as its start-up file; Ctrl-C belongs to psql (it cancels a query), not to us."""
    with tempfile.NamedTemporaryFile("w", prefix="clinicdb-psqlrc-", suffix=".sql", delete=False) as rc:
        rc.write(rc_text)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        env = {**os.environ, **extra_env, "PSQLRC": rc.name}
        return subprocess.run([binary, url, *args], env=env, check=False).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
        os.unlink(rc.name)


@click.command()
@click.option("--clinic", "clinic_id", required=True, type=click.UUID, help="The clinic to scope to.")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="clinicdb_readonly",
    show_default=True,
    help="Application role to act as (readonly cannot change rows); a staff login acts as itself.",
)
@admin_url_option
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@friendly_errors
def psql(clinic_id: uuid.UUID, role: str, database_url: str | None, psql_args: tuple[str, ...]) -> None:
    """Open psql scoped to one clinic, with the clinic in the prompt.

    As an operator, the session acts as an application role (readonly by
    default) with app.clinic_id set for the session, so the tenant policies
    apply. This is an operator's convenience: the operator's own login could
    RESET ROLE. For people who must not escape their clinic, create a login
    and map it with `clinicdb staff grant`: given that login's URL, psql runs
    as it and its mapping decides the clinic.

    On Citus (docs/citus.md) the operator's session logs in as a temporary
    login of the application role whose default app.clinic_id is the clinic
    (a session setting would not reach the workers); it is dropped on exit.
    The operator's login must be able to create roles, and the nodes must let
    Citus connect to the workers as a new login, as they do for the app's.

    Example:

        clinicdb psql --clinic 0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b11 -- -c 'select count(*) from patients'
    """
    url = resolve_admin_url(database_url)
    binary = shutil.which("psql")
    if binary is None:
        raise click.ClickException("psql not found: install it with 'apt-get install postgresql-client'")
    with psycopg.connect(url, autocommit=True) as conn:
        on_citus = citus.is_citus(conn)
        mapped = _staff_clinics(conn)
        if mapped is not None:
            login = str(conn.info.user)
            if clinic_id not in mapped:
                raise click.ClickException(
                    f"staff login {login} is not mapped to clinic {clinic_id}: see clinicdb staff list"
                )
            if on_citus and len(mapped) > 1:
                raise click.ClickException(
                    f"staff login {login} is mapped to {len(mapped)} clinics, and on Citus a psql session cannot"
                    " pick one (only SET LOCAL reaches the workers): map the login to one clinic, or start each"
                    f" transaction with: set local citus.propagate_set_commands = 'local';"
                    f" set local app.clinic_id = '{clinic_id}';"
                )
            code = _run_psql(binary, url, psql_args, staff_psqlrc(clinic_id, login, pick=len(mapped) > 1), {})
            raise SystemExit(code)
        require_clinic(conn, clinic_id)
        if not on_citus:
            raise SystemExit(_run_psql(binary, url, psql_args, psqlrc(clinic_id, role), {}))
        with temporary_login(conn, clinic_id, role) as (name, password):
            code = _run_psql(
                binary, replace_url(url, user=name), psql_args, citus_psqlrc(clinic_id, role), {"PGPASSWORD": password}
            )
    raise SystemExit(code)


def register(cli: click.Group) -> None:
    cli.add_command(psql)
