"""The ``clinicdb`` command: entry point and group registration."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from clinicdb import __version__

from . import audit, check, citus, clinic, demo, dev, health, keys, migrate, new, protect, psql, sql, staff
from ._common import one_line

try:  # click 8.2+: a group run without a command raises this (8.1 printed the help and exited 0)
    from click.exceptions import NoArgsIsHelpError
except ImportError:  # pragma: no cover

    class NoArgsIsHelpError(click.UsageError):  # type: ignore[no-redef]
        """Never raised by click 8.1."""


class _OneLineErrors(click.Group):
    """Every error is one line on stderr, usage mistakes included (click would print the usage block first):
    `Error: <what is wrong> (see: clinicdb <command> --help)`. A group given no command shows its help."""

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
        except NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"Error: {one_line(exc.format_message())}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            click.echo(_aborted(exc), err=True)
            sys.exit(130 if isinstance(exc.__cause__, KeyboardInterrupt) else 1)
        sys.exit(code if isinstance(code, int) else 0)


def _aborted(exc: click.Abort) -> str:
    """Why the command stopped. Click raises Abort *from* the interrupt when Ctrl-C lands while the command runs
    (steps it committed stay), and without a cause when a confirmation is declined or cannot be asked."""
    if isinstance(exc.__cause__, KeyboardInterrupt):
        return (
            "Error: interrupted: what the command had committed stays; run it again to finish "
            "(re-encryption, archiving and migrations continue where they stopped)"
        )
    if isinstance(exc.__context__, EOFError):
        return "Error: no answer to the confirmation (input is closed): nothing was changed; pass --yes to confirm"
    return "Aborted: nothing was changed."


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clinicdb")
def cli() -> None:
    """clinicdb: tenant isolation, audit and encryption inside PostgreSQL.

    Example:

        make demo                      # local primary + replica, migrated, seeded
        eval "$(clinicdb dev env)"     # point commands and apps at it
        clinicdb check                 # prove every clinic_id table is protected
    """


for module in (dev, migrate, new, check, protect, clinic, staff, sql, psql, audit, health, keys, citus, demo):
    module.register(cli)
