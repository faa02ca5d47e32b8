"""``clinicdb new table`` and ``clinicdb new migration``: migrations for your folder, from the package's templates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from clinicdb import scaffold

from ._common import friendly_errors

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_FOLDER = Path("migrations")


def folder_option(func: F) -> F:
    """``--source DIR``: the folder of your migrations, as ``clinicdb migrate --source`` reads it."""
    return click.option(
        "--source",
        "folder",
        default=DEFAULT_FOLDER,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Your migrations folder (created if missing); apply it with clinicdb migrate --source DIR.",
    )(func)


def _report(written: scaffold.Written, folder: Path) -> None:
    if written.created_folder:
        click.echo(f"created {folder}/ (it did not exist)")
    click.echo(f"wrote {written.migration} (depends on {written.depends})")
    click.echo(f"wrote {written.rollback}")
    click.echo(f"review them, then: clinicdb migrate --source {folder}")


@click.group()
def new() -> None:
    """Write a new migration and its rollback into your migrations folder.

    Files follow yoyo's naming (NNNN.slug.sql and NNNN.slug.rollback.sql),
    numbered on from the highest in the folder, each depending on the one
    before (the first on clinicdb's newest core migration). Nothing touches a
    database: review the files, then apply them with clinicdb migrate --source.

    Example:

    \b
        clinicdb new table visits --column reason:text --references patient_id:patients
        clinicdb new migration add-visit-reason-index
    """


@new.command("table")
@click.argument("name")
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="NAME:TYPE",
    help="A column of yours (repeatable): reason:text, amount:numeric(10,2), tags:text[], seen_at:timestamptz.",
)
@click.option(
    "--references",
    multiple=True,
    metavar="COLUMN:TABLE",
    help="A foreign key to another tenant table, carrying clinic_id: (clinic_id, COLUMN) references TABLE "
    "(clinic_id, id). COLUMN is added as uuid unless --column declares it (repeatable).",
)
@click.option("--encrypt", multiple=True, metavar="COLUMN", help="Store this text column encrypted (repeatable).")
@click.option(
    "--blind-index",
    multiple=True,
    metavar="COLUMN",
    help="Also keep a blind index of this encrypted column, for equality lookups (repeatable).",
)
@click.option("--comment", metavar="TEXT", help="What a row of the table is (comment on table, shown by \\d+).")
@folder_option
@friendly_errors
def new_table(
    name: str,
    columns: tuple[str, ...],
    references: tuple[str, ...],
    encrypt: tuple[str, ...],
    blind_index: tuple[str, ...],
    comment: str | None,
    folder: Path,
) -> None:
    """Write the migration creating a tenant table NAME (or SCHEMA.NAME), and its rollback.

    The table gets a uuid id, clinic_id (referencing clinicdb.clinics), the
    key (clinic_id, id), your columns, created_at / updated_at / deleted_at,
    owner clinicdb_owner and clinicdb.protect_table() (isolation, audit, the
    updated_at trigger); --encrypt columns get clinicdb.encrypt_column().
    Names must be lowercase snake_case and not words PostgreSQL reserves.

    Example:

    \b
        clinicdb new table visits --column reason:text --references patient_id:patients
        clinicdb new table billing.invoices --column total:numeric(10,2) --column iban:text --encrypt iban
        clinicdb migrate --source migrations
    """
    spec = scaffold.table_spec(
        name, columns, encrypt=encrypt, blind_index=blind_index, references=references, comment=comment
    )
    _report(scaffold.new_table(spec, folder), folder)


@new.command("migration")
@click.argument("name")
@folder_option
@friendly_errors
def new_migration(name: str, folder: Path) -> None:
    """Write an empty (commented) migration NAME and its rollback, for SQL of your own.

    Example:

    \b
        clinicdb new migration add-visit-reason-index
        clinicdb new migration backfill_visit_reasons --source db/migrations
    """
    _report(scaffold.new_migration(name, folder), folder)


def register(cli: click.Group) -> None:
    cli.add_command(new)
