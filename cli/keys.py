"""``clinicdb keys``: per-clinic data keys, the master key, re-encryption and shredding.

The master key never appears on a command line (where ``ps`` would show it):
commands read it from ``--master-key-file``, ``CLINICDB_MASTER_KEY_FILE`` or
``CLINICDB_MASTER_KEY``. See docs/encryption.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

import click
import psycopg

from clinicdb import encryption, set_scope
from clinicdb.devcluster.bootstrap import dev_dir
from clinicdb.keys import (
    dev_master_key,
    generate_master_key,
    load_master_key,
    master_key_settings,
    read_key_file,
    set_master_key,
    write_key_file,
)

from ._common import (
    admin_url_option,
    friendly_errors,
    output_options,
    print_rows,
    print_table,
    require_clinic,
    require_unrestricted_login,
    resolve_admin_url,
)


def _master_key(path: Path | None) -> str:
    key = read_key_file(path) if path else load_master_key(required=True)
    assert key is not None
    return key


def _master_key_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--master-key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File (mode 0600) holding the master key (default: CLINICDB_MASTER_KEY_FILE, then CLINICDB_MASTER_KEY).",
    )(func)


def _known_clinic(url: str, clinic_id: uuid.UUID | None) -> None:
    """A --clinic that names no clinic is an error, not an empty answer."""
    if clinic_id is not None:
        with psycopg.connect(url) as conn:
            require_clinic(conn, clinic_id)


@click.group()
def keys() -> None:
    """Manage the per-clinic encryption keys and the master key.

    Example:

        export CLINICDB_MASTER_KEY_FILE=/etc/clinicdb/master.key
        clinicdb keys rotate --clinic 0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b11
    """


@keys.command("generate-master")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="New file for the key.")
@friendly_errors
def generate_master(out: Path) -> None:
    """Write a new random master key to a new file with mode 0600 (never overwrites).

    Keep the file outside the database server and its backups; lose it and
    every encrypted value is lost with it.

    Example:

        clinicdb keys generate-master --out /etc/clinicdb/master.key
    """
    if out.exists():
        raise click.ClickException(f"{out} exists; refusing to overwrite a master key")
    write_key_file(out, generate_master_key())
    click.echo(f"wrote a new master key to {out} (mode 0600)")


@keys.command()
@click.option("--clinic", "clinic_id", type=click.UUID, help="Only this clinic.")
@click.option("--values", "values", is_flag=True, help="Instead: stored values per column, clinic and key version.")
@admin_url_option
@output_options
@friendly_errors
def status(clinic_id: uuid.UUID | None, values: bool, database_url: str | None, as_json: bool) -> None:
    """List every clinic's key versions, their state and master key fingerprint.

    With --values, count the stored values per encrypted column, clinic and
    key version instead (no key needed): after `clinicdb keys reencrypt`
    every value of a clinic is on its active version.

    Example:

        clinicdb keys status --clinic 0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b11 --values
    """
    url = resolve_admin_url(database_url)
    _known_clinic(url, clinic_id)
    if values:
        usage = encryption.key_usage(url, clinic_id)
        print_rows(["table", "column", "clinic_id", "key_version", "values"], usage, as_json)
        return
    rows = encryption.status(url, clinic_id)
    if not rows and clinic_id is None:
        with psycopg.connect(url) as conn:
            require_unrestricted_login(conn, "clinic key")
    print_rows(
        ["clinic_id", "clinic", "version", "state", "master_key_id", "created_at", "shredded_at"],
        [[r.clinic_id, r.clinic, r.version, r.state, r.master_key_id, r.created_at, r.shredded_at] for r in rows],
        as_json,
    )


@keys.command()
@click.option("--clinic", "clinic_id", type=click.UUID, required=True, help="The clinic whose key to rotate.")
@_master_key_option
@admin_url_option
@friendly_errors
def rotate(clinic_id: uuid.UUID, master_key_file: Path | None, database_url: str | None) -> None:
    """Create a clinic's next key version (its first one if it has none); new writes use it.

    Values written before keep their version until `clinicdb keys reencrypt`.

    Example:

        clinicdb keys rotate --clinic 0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b11
    """
    version = encryption.rotate(resolve_admin_url(database_url), clinic_id, _master_key(master_key_file))
    click.echo(f"clinic {clinic_id}: key version {version} is active")


@keys.command()
@click.option("--clinic", "clinic_id", type=click.UUID, help="Only this clinic (default: every clinic that rotated).")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000), help="Rows per batch.")
@_master_key_option
@admin_url_option
@friendly_errors
def reencrypt(
    clinic_id: uuid.UUID | None, batch_size: int, master_key_file: Path | None, database_url: str | None
) -> None:
    """Move every value to its clinic's active key version, in batches, online; resumable.

    Each batch commits with its checkpoint: run the command again after an
    interruption and it continues where it stopped.

    Example:

        clinicdb keys reencrypt --batch-size 1000
    """
    url = resolve_admin_url(database_url)
    key = _master_key(master_key_file)
    _known_clinic(url, clinic_id)
    plans = encryption.reencrypt_plan(url, clinic_id)
    if not plans:
        click.echo("nothing to re-encrypt: no clinic has an older key version")
        return
    resumed = sum(1 for p in plans if p.resume_after is not None)
    if resumed:
        click.echo(f"resuming {resumed} interrupted table(s) from their last checkpoint")
    total = sum(max(p.total_rows - p.done_rows, 0) for p in plans)
    with click.progressbar(length=total, label="re-encrypting", show_pos=True) as bar:
        result = encryption.reencrypt(url, key, batch_size=batch_size, plans=plans,
                                      on_batch=lambda _plan, scanned: bar.update(scanned))  # fmt: skip
    click.echo(f"re-encrypted {result.rows_rewritten} of {result.rows_scanned} rows scanned in {len(plans)} table(s)")
    if result.rows_skipped:
        click.echo(f"{result.rows_skipped} row(s) written meanwhile by the application were left as written")


@keys.command()
@click.option("--clinic", "clinic_id", type=click.UUID, required=True, help="The clinic whose keys to destroy.")
@click.option("--reason", help="Why (kept in clinicdb.key_events).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@admin_url_option
@friendly_errors
def shred(clinic_id: uuid.UUID, reason: str | None, yes: bool, database_url: str | None) -> None:
    """Destroy a clinic's keys: its encrypted values become unrecoverable (crypto-shredding).

    Asks for confirmation. Records the event in clinicdb.key_events (and in
    the audit trail when the audit layer is installed). Older backups still
    hold the wrapped keys: rotate the master key afterwards and destroy the old
    one (docs/encryption.md).

    Example:

        clinicdb keys shred --clinic 5d2e8c1a-3f64-4b7d-8e02-9c4a6b1f7d33 --reason "contract ended"
    """
    url = resolve_admin_url(database_url)
    if not yes:
        click.confirm(
            f"Destroy every key of clinic {clinic_id}? Its encrypted values can never be read again", abort=True
        )
    count = encryption.shred(url, clinic_id, reason)
    click.echo(f"clinic {clinic_id}: {count} key version(s) shredded")


@keys.command("rotate-master")
@click.option(
    "--new-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File (mode 0600) holding the new master key (make one with generate-master).",
)
@_master_key_option
@admin_url_option
@friendly_errors
def rotate_master(new_key_file: Path, master_key_file: Path | None, database_url: str | None) -> None:
    """Re-wrap every data key under a new master key, in one transaction; no row is touched.

    Then point CLINICDB_MASTER_KEY_FILE at the new file everywhere and destroy the old key.

    Example:

        clinicdb keys rotate-master --new-key-file /etc/clinicdb/master.key.new
    """
    url = resolve_admin_url(database_url)
    count = encryption.rewrap(url, _master_key(master_key_file), read_key_file(new_key_file))
    click.echo(f"re-wrapped {count} data key version(s); the old master key no longer opens them")


@keys.command("encrypt-column")
@click.argument("table")
@click.argument("column")
@click.option("--blind-index", is_flag=True, help="Also keep a keyed blind index for equality lookups.")
@_master_key_option
@admin_url_option
@friendly_errors
def encrypt_column(
    table: str, column: str, blind_index: bool, master_key_file: Path | None, database_url: str | None
) -> None:
    """Store a text column of a protected table encrypted (existing values are encrypted now).

    Example:

        clinicdb keys encrypt-column public.appointments reason
    """
    key = load_master_key(required=False) if master_key_file is None else read_key_file(master_key_file)
    with psycopg.connect(resolve_admin_url(database_url)) as conn, conn.transaction():
        conn.execute("set local log_parameter_max_length = 0")
        if key:
            set_master_key(conn, key)
        conn.execute("select clinicdb.encrypt_column(%s::regclass, %s, %s)", (table, column, blind_index))
    click.echo(f"{table}.{column} is encrypted; read it from the {table.split('.')[-1]}_decrypted view")


@keys.command("sql")
@click.argument("table")
@admin_url_option
@friendly_errors
def sql_(table: str, database_url: str | None) -> None:
    """Print the trigger and view clinicdb generates for a table's encrypted columns, for review.

    Example:

        clinicdb keys sql public.patients
    """
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        rows = conn.execute("select clinicdb.encryption_sql(%s::regclass)", (table,)).fetchall()
    for (statement,) in rows:
        click.echo(f"{statement};\n")


def demo_master_key(admin_url: str, clinic_ids: Iterable[uuid.UUID]) -> str:
    """The local dev master key (``.clinicdb/master.key``, 0600, created on first use; never in the database),
    after making sure every clinic has a data key. For `clinicdb demo`: seed PHI with
    ``set_master_key(conn, key)`` in the seeding transaction, then call :func:`demo_encryption`.
    """
    key = dev_master_key(dev_dir())
    for clinic_id in clinic_ids:
        encryption.ensure_key(admin_url, clinic_id, key)
    return key


def demo_encryption(admin_url: str, app_url: str, clinic_id: uuid.UUID, master_key: str) -> None:
    """Show an SSN stored as ciphertext (raw, as the operator) and read back as plaintext (the app, with the key).

    Creates the clinic's first key if it has none and an idempotent demo
    patient (MRN E-001). The master key travels only as a bind parameter.
    """
    encryption.ensure_key(admin_url, clinic_id, master_key)
    with psycopg.connect(app_url) as app:
        with app.transaction():
            set_scope(app, clinic_id, settings=master_key_settings(master_key))
            app.execute(
                "insert into patients (mrn, given_name, family_name, ssn, phone)"
                " values ('E-001', 'Eve', 'Example', %s, %s) on conflict (clinic_id, mrn) do nothing",
                ("078-05-1120", "+1 555 0100"),
            )
        with psycopg.connect(admin_url) as admin:
            raw = admin.execute(
                "select mrn, ssn, clinicdb.key_version(ssn_ciphertext),"
                " encode(substring(ssn_ciphertext from 1 for 16), 'hex') || '...',"
                " encode(substring(ssn_blind_index from 1 for 8), 'hex') || '...'"
                " from public.patients where clinic_id = %s and mrn = 'E-001'",
                (clinic_id,),
            ).fetchall()
        click.echo("  stored (the operator reads the raw table): ssn is NULL, only ciphertext rests")
        print_table(["mrn", "ssn", "key_version", "ssn_ciphertext", "ssn_blind_index"], raw)
        with app.transaction():
            set_scope(app, clinic_id, settings=master_key_settings(master_key))
            rows = app.execute(
                "select mrn, ssn, phone from patients_decrypted"
                " where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', %s))",
                ("078-05-1120",),
            ).fetchall()
        click.echo("\n  read by the app with the key, found by SSN through the blind index (no table scan):")
        print_table(["mrn", "ssn", "phone"], rows)
        try:
            with app.transaction():
                set_scope(app, clinic_id)
                app.execute("select ssn from patients_decrypted where mrn = 'E-001'").fetchall()
        except psycopg.Error as exc:
            click.echo(f"\n  the same read without the master key: refused: {exc.diag.message_primary}")


def register(cli: click.Group) -> None:
    cli.add_command(keys)
