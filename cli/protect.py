"""``clinicdb protect``: adopt an existing table -- blockers with their fixes, the SQL, then the proof."""

from __future__ import annotations

from typing import Any

import click
import psycopg

from ._common import admin_url_option, friendly_errors, resolve_admin_url


def _qualified(conn: psycopg.Connection[Any], table: str) -> str:
    row = conn.execute(
        "select format('%%I.%%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.oid = %s::regclass",
        (table,),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _print_report(rows: list[tuple[str, str, str, bool]]) -> None:
    blocking = [r for r in rows if r[3]]
    other = [r for r in rows if not r[3]]
    if blocking:
        click.echo(f"blockers ({len(blocking)}): protect cannot run until each is fixed")
        for blocker, detail, fix, _ in blocking:
            click.echo(f"  - {blocker}: {detail}\n      fix: {fix}")
    for blocker, detail, fix, _ in other:
        click.echo(f"  note: {blocker}: {detail}\n      {fix}")


def _findings(conn: psycopg.Connection[Any], name: str) -> list[tuple[str, str]]:
    """What `clinicdb check` reports about this one table."""
    schema = name.split(".", 1)[0].strip('"')
    rows = conn.execute(
        "select table_name, finding from clinicdb.check_isolation(%s) where table_name = %s", ([schema], name)
    ).fetchall()
    rows += conn.execute(
        "select table_name, finding from clinicdb.audit_findings() where table_name = %s", (name,)
    ).fetchall()
    return [(str(t), str(f)) for t, f in rows]


@click.command()
@click.argument("table")
@click.option("--dry-run", is_flag=True, help="Print the blockers and the SQL; change nothing.")
@admin_url_option
@friendly_errors
def protect(table: str, dry_run: bool, database_url: str | None) -> None:
    """Adopt an existing table with a clinic_id column: isolation, audit, registry.

    Lists every blocker with its fix (rows without a clinic, keys or
    foreign keys without clinic_id, permissive policies, views with their
    owner's rights, conflicting triggers). Without blockers it runs the SQL
    (owner, grants, clinicdb.protect_table) in one transaction and proves the
    table with the same test `clinicdb check` uses; on a finding nothing is
    kept. From psql: select * from clinicdb.protect_report('TABLE').

    Example:

        clinicdb protect public.visits --dry-run     # review
        clinicdb protect public.visits               # adopt, then prove
    """
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        name = _qualified(conn, table)
        report = [
            (str(a), str(b), str(c), bool(d))
            for a, b, c, d in conn.execute("select * from clinicdb.protect_report(%s::regclass)", (name,)).fetchall()
        ]
        blocked = any(r[3] for r in report)
        _print_report(report)
        if dry_run:
            if blocked:
                raise click.ClickException(f"{name} cannot be protected yet: fix the blockers above (nothing changed)")
            statements = [str(r[0]) for r in conn.execute("select clinicdb.adopt_table_sql(%s::regclass)", (name,))]
            inner = [str(r[0]) for r in conn.execute("select clinicdb.protect_table_sql(%s::regclass)", (name,))]
            click.echo(f"-- clinicdb protect {name} would run, in one transaction:")
            for statement in statements:
                click.echo(f"{statement};")
            click.echo(
                "-- where clinicdb.protect_table() runs these, then attaches the audit triggers and registers it:"
            )
            for statement in inner:
                click.echo(f"--   {statement};")
            return
        if blocked:
            raise click.ClickException(f"{name} cannot be protected yet: fix the blockers above (nothing changed)")
        findings: list[tuple[str, str]] = []
        with conn.transaction() as tx:
            for (statement,) in conn.execute("select clinicdb.adopt_table_sql(%s::regclass)", (name,)).fetchall():
                conn.execute(statement)
            findings = _findings(conn, name)
            if findings:
                raise psycopg.Rollback(tx)
    if findings:
        detail = "; ".join(f for _, f in findings)
        raise click.ClickException(f"{name} was not protected (rolled back): clinicdb check finds: {detail}")
    click.echo(f"protected {name}: row level security forced, audited, registered; clinicdb check finds nothing")


def register(cli: click.Group) -> None:
    cli.add_command(protect)
