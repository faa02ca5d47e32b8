"""The ``clinicdb`` command: entry point and group registration."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from clinicdb import __version__

from . import audit, check, clinic, demo, dev, health, keys, migrate, new, protect, psql, sql, staff


class _OneLineErrors(click.Group):
    """Every error is one line on stderr, usage mistakes included (click would print the usage block first):
    `Error: <what is wrong> (see: clinicdb <command> --help)`."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted: nothing was changed.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
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
