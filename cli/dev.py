"""``clinicdb dev``: the embedded local primary + streaming replica, or (``--ha``) a pg_auto_failover formation."""

from __future__ import annotations

import json
import shlex

import click

from clinicdb.devcluster.bootstrap import (
    APP_LOGIN,
    bootstrap,
    bootstrap_url,
    dev_cluster,
    dev_dir_choice,
    dev_formation,
)
from clinicdb.devcluster.ha import HAFormation, find_ha_bindir

from ._common import friendly_errors, print_table

HA_HELP = "A pg_auto_failover formation (monitor + two synchronous nodes, docs/ha.md) instead of primary + replica."


def _say(message: str) -> None:
    click.echo(f"clinicdb dev: {message}")


def _use_ha(ha: bool) -> HAFormation | None:
    """The formation when asked for, or when it is all there is in the dev folder."""
    formation = dev_formation()
    if ha or (formation.exists() and not dev_cluster().data_dir("primary").exists()):
        return formation
    return None


@click.group()
def dev() -> None:
    """Run a local PostgreSQL primary and streaming replica (or, with --ha, a failover formation) for development.

    Example:

        clinicdb dev up && eval "$(clinicdb dev env)"
    """


@dev.command()
@click.option("--no-migrate", is_flag=True, help="Start the servers only; do not apply migrations.")
@click.option("--ha", is_flag=True, help=HA_HELP)
@friendly_errors
def up(no_migrate: bool, ha: bool) -> None:
    """Start (creating if needed) the primary and replica, then migrate. Idempotent.

    Example:

        clinicdb dev up            # primary + streaming replica (make demo)

        clinicdb dev up --ha       # pg_auto_failover: monitor + two nodes, synchronous
    """
    choice = dev_dir_choice()
    if ha:
        _up_ha(no_migrate, choice.note)
        return
    cluster = dev_cluster()
    _say(f"servers under {cluster.root}")
    if choice.note:
        _say(choice.note)
    cluster.up()
    if not no_migrate:
        applied = bootstrap(cluster)
        click.echo(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")
    click.echo(f"primary: {cluster.url('primary', user=APP_LOGIN)}")
    for url in cluster.replica_urls(user=APP_LOGIN):
        click.echo(f"replica: {url}")
    click.echo(f"admin:   {cluster.url('primary')}")


def _up_ha(no_migrate: bool, note: str | None) -> None:
    find_ha_bindir()  # missing packages: one line, before anything else
    formation = dev_formation()
    _say(f"pg_auto_failover formation under {formation.root}")
    if note:
        _say(note)
    status = formation.up(_say)
    _say(f"{status.primary} is the primary, the other node its synchronous standby")
    admin = formation.primary_url()
    if not no_migrate:
        _say("migrating through the formation's multi-host URL")
        applied = bootstrap_url(admin)
        click.echo(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")
    click.echo(f"primary: {formation.primary_url(user=APP_LOGIN)}")
    click.echo(f"replica: {formation.replica_url(user=APP_LOGIN)}")
    click.echo(f"admin:   {admin}")


@dev.command()
@click.option("--ha", is_flag=True, help="Stop only the pg_auto_failover formation.")
@friendly_errors
def down(ha: bool) -> None:
    """Stop the local servers by their own PIDs (data is kept): the primary + replica and the formation.

    Example:

        clinicdb dev down
    """
    stopped = [] if ha else dev_cluster().down()
    formation = dev_formation()
    if formation.exists():
        stopped += [f"ha {name}" for name in formation.down()]
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@dev.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--ha", is_flag=True, help="Show the pg_auto_failover formation (the default when it is all there is).")
@friendly_errors
def status(as_json: bool, ha: bool) -> None:
    """Show the servers, their PIDs and the standby's replay lag (with --ha: states and sync state too).

    Example:

        clinicdb dev status
    """
    formation = _use_ha(ha)
    if formation is not None:
        found = formation.status()
        if as_json:
            click.echo(json.dumps(found.as_dict(), indent=2))
            return
        click.echo(f"root: {found.root}")
        click.echo(f"primary: {found.primary or 'none (failing over, or down)'}")
        headers = ["node", "state", "assigned", "port", "keeper", "pid", "sync", "lag_bytes"]
        rows = [
            [n.name, n.reported_state, n.assigned_state, n.port, _keeper(n.running), n.pid, n.sync_state, n.lag_bytes]
            for n in found.nodes
        ]
        print_table(headers, rows)
        return
    result = dev_cluster().status()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(f"root: {result.root}")
    print_table(
        ["server", "role", "port", "state", "pid", "lag_bytes"],
        [[s.name, s.role, s.port, "running" if s.running else "stopped", s.pid, s.lag_bytes] for s in result.servers],
    )


def _keeper(running: bool) -> str:
    return "running" if running else "stopped"


@dev.command()
@click.option("--ha", is_flag=True, help="The formation's URLs (the default when it is all there is).")
@friendly_errors
def env(ha: bool) -> None:
    """Print export lines for the local servers (with --ha: the multi-host primary URL and the standby URL).

    Example:

        eval "$(clinicdb dev env)"
    """
    formation = _use_ha(ha)
    if formation is not None:
        primary, replicas, admin = (
            formation.primary_url(user=APP_LOGIN),
            formation.replica_url(user=APP_LOGIN),
            formation.primary_url(),
        )
    else:
        cluster = dev_cluster()
        primary = cluster.url("primary", user=APP_LOGIN)
        replicas = " ".join(cluster.replica_urls(user=APP_LOGIN))
        admin = cluster.url("primary")
    click.echo(f"export CLINICDB_DATABASE_URL={shlex.quote(primary)}")
    click.echo(f"export CLINICDB_REPLICA_URLS={shlex.quote(replicas)}")
    click.echo(f"export CLINICDB_ADMIN_URL={shlex.quote(admin)}")


def register(cli: click.Group) -> None:
    cli.add_command(dev)
