"""``clinicdb citus ...``: reports for a Citus coordinator (docs/citus.md)."""

from __future__ import annotations

from pathlib import Path

import click
import psycopg

from clinicdb import citus_fanout
from clinicdb.citus import CitusError

from ._common import admin_url_option, friendly_errors, output_options, print_rows, resolve_admin_url


@click.group()
def citus() -> None:
    """Reports for clinicdb on a Citus coordinator (docs/citus.md).

    Example:

        clinicdb citus fanout
    """


@citus.command()
@admin_url_option
@click.option(
    "--sql",
    "statements",
    multiple=True,
    metavar="STATEMENT",
    help="A statement to plan with EXPLAIN instead of reading the statistics (repeatable; never run).",
)
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--all", "show_all", is_flag=True, help="List every query with its verdict, not only the fan-outs.")
@output_options
@friendly_errors
def fanout(
    database_url: str | None, statements: tuple[str, ...], files: tuple[Path, ...], show_all: bool, as_json: bool
) -> None:
    """List the queries that went to more than one shard; exit 1 when there is one.

    Without arguments it reads Citus's statistics (citus_stat_statements, since
    the last `select citus_stat_statements_reset()`): a query with no
    `clinic_id = ...` filter is sent to every shard, even though the tenant
    policy keeps its answer to one clinic. That needs, on the coordinator,
    shared_preload_libraries = 'citus,pg_stat_statements',
    citus.stat_statements_track = 'all' and `create extension
    pg_stat_statements`; the error names what is missing. With --sql or
    FILES (statements ending with ';' at the end of a line) it plans each
    statement with EXPLAIN instead and counts the shards (write the clinic as
    a literal: parameters cannot be planned).

    Example:

        clinicdb citus fanout
        clinicdb citus fanout --all --json
        clinicdb citus fanout --sql "select * from patients where clinic_id = '0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b11'"
        clinicdb citus fanout queries/*.sql
    """
    given = list(statements)
    for path in files:
        given += citus_fanout.split_statements(path.read_text())
    try:
        with psycopg.connect(resolve_admin_url(database_url), autocommit=True) as conn:
            if given:
                found = [citus_fanout.explain(conn, statement) for statement in given]
            else:
                found = citus_fanout.from_statistics(conn)
    except CitusError as exc:
        raise click.ClickException(str(exc)) from exc
    fanned = [r for r in found if r.verdict == citus_fanout.FAN_OUT]
    shown = found if show_all else fanned
    if given:
        print_rows(["shards", "verdict", "query"], [[r.tasks, r.verdict, r.query] for r in shown], as_json)
    else:
        print_rows(
            ["calls", "user", "verdict", "query"], [[r.calls, r.user, r.verdict, r.query] for r in shown], as_json
        )
    if not as_json:
        if fanned:
            click.echo(
                f"fan-out: {len(fanned)} of {len(found)} queries went to more than one shard;"
                " add `where clinic_id = %s` (docs/citus.md, Cost)"
            )
        else:
            click.echo(f"ok: none of {len(found)} queries went to more than one shard")
    if fanned:
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(citus)
