"""The ``clinicdb`` command: entry point and group registration."""

from __future__ import annotations

import click

from clinicdb import __version__

from . import audit, check, clinic, demo, dev, health, keys, migrate, new, protect, psql, sql, staff


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clinicdb")
def cli() -> None:
    """clinicdb: tenant isolation, audit and encryption inside PostgreSQL.

    Example:

        make demo                      # local primary + replica, migrated, seeded
        eval "$(clinicdb dev env)"     # point commands and apps at it
        clinicdb check                 # prove every clinic_id table is protected
    """


for module in (dev, migrate, new, check, protect, clinic, staff, sql, psql, audit, health, keys, demo):
    module.register(cli)
