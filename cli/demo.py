"""``clinicdb demo``: the story on the local servers, told in a few steps."""

from __future__ import annotations

import uuid

import click
import psycopg

from clinicdb.devcluster.bootstrap import APP_LOGIN, dev_cluster
from clinicdb.keys import set_master_key

from ._common import friendly_errors, print_table
from .keys import demo_encryption, demo_master_key

# Fixed ids so the demo is idempotent and its output comparable run to run.
DEMO_CLINICS = {
    uuid.UUID("0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b11"): "Northside Family Practice",
    uuid.UUID("5d2e8c1a-3f64-4b7d-8e02-9c4a6b1f7d33"): "Harbor Pediatrics",
}
DEMO_PATIENTS: dict[str, list[tuple[str, str, str, str | None]]] = {
    "Northside Family Practice": [("N-001", "Ada", "Lovelace", "111-22-3333"), ("N-002", "Alan", "Turing", None)],
    "Harbor Pediatrics": [("H-001", "Grace", "Hopper", "444-55-6666")],
}


def _step(text: str) -> None:
    click.echo(click.style(f"\n> {text}", bold=True))


def seed(admin_url: str, app_url: str) -> str:
    """Two demo clinics (as an operator) and their patients (as the app, one clinic at a time).

    Returns the local dev master key (``.clinicdb/master.key``, never in the database).
    """
    with psycopg.connect(admin_url) as conn:
        for clinic_id, name in DEMO_CLINICS.items():
            conn.execute("select clinicdb.create_clinic(%s, %s)", (name, clinic_id))
    key = demo_master_key(admin_url, DEMO_CLINICS)
    with psycopg.connect(app_url) as conn:
        for clinic_id, name in DEMO_CLINICS.items():
            with conn.transaction():
                conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic_id),))
                set_master_key(conn, key)
                for mrn, given, family, ssn in DEMO_PATIENTS[name]:
                    conn.execute(
                        "insert into patients (mrn, given_name, family_name, ssn) values (%s, %s, %s, %s)"
                        " on conflict (clinic_id, mrn) do nothing",
                        (mrn, given, family, ssn),
                    )
    return key


@click.command()
@friendly_errors
def demo() -> None:
    """Seed two demo clinics and show that each sees only its own patients.

    Runs against the local servers of `clinicdb dev up`.

    Example:

        clinicdb dev up && clinicdb demo
    """
    cluster = dev_cluster()
    admin_url, app_url = cluster.url("primary"), cluster.url("primary", user=APP_LOGIN)
    _step("Seeding two clinics and their patients (operator creates clinics; the app writes patients)")
    key = seed(admin_url, app_url)
    for clinic_id, name in DEMO_CLINICS.items():
        click.echo(f"  {name}: {clinic_id}")

    with psycopg.connect(app_url) as conn:
        for clinic_id, name in DEMO_CLINICS.items():
            _step(f"The app, scoped to {name}, runs: select mrn, given_name, family_name from patients")
            with conn.transaction():
                conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic_id),))
                rows = conn.execute("select mrn, given_name, family_name from patients order by mrn").fetchall()
            print_table(["mrn", "given_name", "family_name"], rows)

        _step("The same query with no clinic set (a forgotten filter, a missing set_config)")
        count = conn.execute("select count(*) from patients").fetchone()
        click.echo(f"  rows visible: {count[0] if count else 0}  (fails closed)")
        conn.rollback()

        _step("A write with no clinic set")
        try:
            conn.execute("insert into patients (mrn, given_name, family_name) values ('X', 'No', 'Clinic')")
        except psycopg.Error as exc:
            click.echo(f"  refused: {exc.diag.message_primary}")
        conn.rollback()

    _step("PHI encryption: an SSN as stored (operator) and as the app reads it (with the master key)")
    first = next(iter(DEMO_CLINICS))
    demo_encryption(admin_url, app_url, first, key)

    with psycopg.connect(admin_url) as conn:
        findings = conn.execute("select count(*) from clinicdb.check_isolation()").fetchone()
    _step("clinicdb check")
    click.echo(f"  findings: {findings[0] if findings else '?'}  (0 means every clinic_id table is protected)")


def register(cli: click.Group) -> None:
    cli.add_command(demo)
