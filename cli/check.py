"""``clinicdb check``: prove in a live database that tenant isolation holds."""

from __future__ import annotations

import click
import psycopg

from ._common import (
    admin_url_option,
    friendly_errors,
    output_options,
    print_rows,
    resolve_admin_url,
)


@click.command()
@admin_url_option
@click.option(
    "--schema",
    "schemas",
    multiple=True,
    help="Application schema to sweep (repeatable; default: all).",
)
@output_options
@friendly_errors
def check(database_url: str | None, schemas: tuple[str, ...], as_json: bool) -> None:
    """Prove every table with a clinic_id column is protected and audited; exit 1 on any finding.

    Runs clinicdb.check_isolation(): forced RLS, the four standard policies
    unchanged, clinic_id not null, no widening policy, view or materialized
    view, no TRUNCATE/REFERENCES grants, no application role bypassing RLS.
    Then clinicdb.audit_findings() (once the audit migration is applied):
    audit triggers missing or disabled, capture functions out of date. On a
    Citus coordinator, clinicdb.citus_findings() too, asked of every node:
    Citus's internal functions open to PUBLIC, logging settings that keep
    PHI and keys out of the logs missing, write rights on the layer's
    reference tables, temporary `clinicdb psql` logins left behind.

    Example:

        clinicdb check && echo "isolation holds"
    """
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        if schemas:
            known = {
                r[0]
                for r in conn.execute("select nspname from pg_namespace where nspname = any (%s)", (list(schemas),))
            }
            missing = [s for s in schemas if s not in known]
            if missing:
                raise click.ClickException(
                    f"no schema named {', '.join(missing)} in this database: nothing to check (psql lists them: \\dn)"
                )
        rows = conn.execute(
            "select table_name, finding from clinicdb.check_isolation(%s)", (list(schemas) or None,)
        ).fetchall()
        audited = conn.execute("select to_regprocedure('clinicdb.audit_findings()') is not null").fetchone()
        if audited and audited[0]:
            rows += conn.execute("select table_name, finding from clinicdb.audit_findings()").fetchall()
        on_citus = conn.execute("select to_regprocedure('clinicdb.citus_findings()') is not null").fetchone()
        if on_citus and on_citus[0]:
            rows += conn.execute("select object, finding from clinicdb.citus_findings()").fetchall()
        protected = conn.execute("select count(*) from clinicdb.protected_tables").fetchone()
    if rows:
        print_rows(["object", "finding"], rows, as_json)
        raise SystemExit(1)
    if as_json:
        click.echo("[]")
    else:
        count = protected[0] if protected else 0
        click.echo(f"ok: every clinic_id table is protected and audited ({count} registered tables)")


def register(cli: click.Group) -> None:
    cli.add_command(check)
