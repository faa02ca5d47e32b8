"""``clinicdb dev``: the embedded local primary + streaming replica."""

from __future__ import annotations

import json
import shlex

import click

from clinicdb.devcluster.bootstrap import APP_LOGIN, bootstrap, dev_cluster, dev_dir_choice

from ._common import friendly_errors, print_table


@click.group()
def dev() -> None:
    """Run a local PostgreSQL primary and streaming replica for development.

    Example:

        clinicdb dev up && eval "$(clinicdb dev env)"
    """


@dev.command()
@click.option("--no-migrate", is_flag=True, help="Start the servers only; do not apply migrations.")
@friendly_errors
def up(no_migrate: bool) -> None:
    """Start (creating if needed) the primary and replica, then migrate. Idempotent.

    Example:

        clinicdb dev up
    """
    choice = dev_dir_choice()
    cluster = dev_cluster()
    click.echo(f"clinicdb dev: servers under {cluster.root}")
    if choice.note:
        click.echo(f"clinicdb dev: {choice.note}")
    cluster.up()
    if not no_migrate:
        applied = bootstrap(cluster)
        click.echo(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")
    click.echo(f"primary: {cluster.url('primary', user=APP_LOGIN)}")
    for url in cluster.replica_urls(user=APP_LOGIN):
        click.echo(f"replica: {url}")
    click.echo(f"admin:   {cluster.url('primary')}")


@dev.command()
@friendly_errors
def down() -> None:
    """Stop the local servers by their own PIDs (data is kept).

    Example:

        clinicdb dev down
    """
    stopped = dev_cluster().down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@dev.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly_errors
def status(as_json: bool) -> None:
    """Show both servers, their PIDs and the replica's replay lag.

    Example:

        clinicdb dev status
    """
    result = dev_cluster().status()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(f"root: {result.root}")
    print_table(
        ["server", "role", "port", "state", "pid", "lag_bytes"],
        [[s.name, s.role, s.port, "running" if s.running else "stopped", s.pid, s.lag_bytes] for s in result.servers],
    )


@dev.command()
@friendly_errors
def env() -> None:
    """Print export lines for the local servers.

    Example:

        eval "$(clinicdb dev env)"
    """
    cluster = dev_cluster()
    click.echo(f"export CLINICDB_DATABASE_URL={shlex.quote(cluster.url('primary', user=APP_LOGIN))}")
    replicas = ",".join(cluster.replica_urls(user=APP_LOGIN))
    click.echo(f"export CLINICDB_REPLICA_URLS={shlex.quote(replicas)}")
    click.echo(f"export CLINICDB_ADMIN_URL={shlex.quote(cluster.url('primary'))}")


def register(cli: click.Group) -> None:
    cli.add_command(dev)
