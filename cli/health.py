"""``clinicdb health``: every server up or down, its latency and replica lag."""

from __future__ import annotations

import json

import click

from clinicdb._config import DriverConfig
from clinicdb.health import check_server, summarize
from clinicdb.settings import env

from ._common import checked_url, env_replica_urls, friendly_errors, output_options, print_table


@click.command()
@click.option("--database-url", "database_url", metavar="URL", help="Primary (default: CLINICDB_DATABASE_URL).")
@click.option(
    "--replica-url",
    "replica_urls",
    metavar="URL",
    multiple=True,
    help="A replica (repeatable; default: CLINICDB_REPLICA_URLS).",
)
@click.option("--fail-on-degraded", is_flag=True, help="Exit 1 when degraded too, not only when down.")
@output_options
@friendly_errors
def health(database_url: str | None, replica_urls: tuple[str, ...], fail_on_degraded: bool, as_json: bool) -> None:
    """Check each server the driver uses: up/down, latency, replica lag; exit 1 when down.

    The same checks as db.health() in the driver, on fresh connections with a
    timeout of CLINICDB_HEALTH_TIMEOUT_MS. Overall status: down (primary
    unreachable), degraded (a replica down or over CLINICDB_MAX_REPLICA_LAG_BYTES),
    or healthy.

    Example:

        eval "$(clinicdb dev env)" && clinicdb health
        clinicdb health --json --fail-on-degraded
    """
    primary = database_url or env("CLINICDB_DATABASE_URL")
    if not primary:
        raise click.ClickException('no database given: pass --database-url, or run eval "$(clinicdb dev env)" first')
    # A malformed URL is a mistake to fix, not a server that is down (nor, for a replica, "degraded" with exit 0).
    primary = checked_url(primary, "--database-url" if database_url else "CLINICDB_DATABASE_URL")
    replicas = [checked_url(url, "--replica-url") for url in replica_urls] or env_replica_urls()
    config = DriverConfig.from_env()
    servers = [check_server("primary", "primary", primary, config.health_timeout)]
    servers += [check_server(f"replica{i}", "replica", url, config.health_timeout) for i, url in enumerate(replicas, 1)]
    report = summarize(servers, max_lag=config.max_replica_lag)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        rows = [
            [
                s["name"],
                s["server"],
                "up" if s["up"] else "DOWN",
                "" if s["latency_ms"] is None else f"{s['latency_ms']:.1f}",
                "" if s["lag_bytes"] is None else s["lag_bytes"],
                s["error"] or "",
            ]
            for s in report["servers"]
        ]
        print_table(["server", "address", "state", "latency_ms", "lag_bytes", "error"], rows)
        click.echo(f"\noverall: {report['status']}")
    if report["status"] == "down" or (fail_on_degraded and report["status"] == "degraded"):
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(health)
