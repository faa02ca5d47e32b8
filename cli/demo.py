"""``clinicdb demo``: the story on the local servers, told through the driver."""

from __future__ import annotations

import time
import uuid

import click
import psycopg

from clinicdb import ClinicDB, NoClinicScope
from clinicdb.devcluster.bootstrap import APP_LOGIN, dev_cluster
from clinicdb.keys import master_key_settings
from clinicdb.settings import env

from ._common import friendly_errors, print_table
from .audit import demo_audit_history
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
INSERT = (
    "insert into patients (mrn, given_name, family_name, ssn) values (%s, %s, %s, %s)"
    " on conflict (clinic_id, mrn) do nothing"
)


def _step(text: str) -> None:
    click.echo(click.style(f"\n> {text}", bold=True))


def _server(in_recovery: bool) -> str:
    return "replica" if in_recovery else "primary"


def seed(admin_url: str, db: ClinicDB) -> str:
    """Two demo clinics (as an operator) and their patients (through the driver, one clinic per transaction).

    Returns the local dev master key (``.clinicdb/master.key``, 0600, never in the database): SSNs are
    encrypted on insert, so the seeding transactions carry it as a transaction-local setting.
    """
    with psycopg.connect(admin_url) as conn:
        for clinic_id, name in DEMO_CLINICS.items():
            # The demo runs again on the same servers: its clinics may exist already.
            exists = conn.execute("select 1 from clinicdb.clinics where id = %s", (clinic_id,)).fetchone()
            if not exists:
                conn.execute("select clinicdb.create_clinic(%s, %s)", (name, clinic_id))
    key = demo_master_key(admin_url, DEMO_CLINICS)
    for clinic_id, name in DEMO_CLINICS.items():
        with db.write(clinic_id, user_id="demo-seed", settings=master_key_settings(key)) as cur:
            cur.executemany(INSERT, DEMO_PATIENTS[name])
    return key


def _urls() -> tuple[str, str, list[str]]:
    """Admin, app primary and app replica URLs: from the environment when set, else the dev cluster's."""
    admin, app = env("CLINICDB_ADMIN_URL"), env("CLINICDB_DATABASE_URL")
    if admin and app:
        replicas = [u.strip() for u in (env("CLINICDB_REPLICA_URLS") or "").split(",") if u.strip()]
        return admin, app, replicas
    cluster = dev_cluster()
    return cluster.url("primary"), cluster.url("primary", user=APP_LOGIN), cluster.replica_urls(user=APP_LOGIN)


@click.command()
@friendly_errors
def demo() -> None:
    """Seed two demo clinics and show isolation, replica routing and read-your-writes through the driver.

    Runs against the local servers of `clinicdb dev up` (or CLINICDB_ADMIN_URL,
    CLINICDB_DATABASE_URL and CLINICDB_REPLICA_URLS when all are set).

    Example:

        clinicdb dev up && clinicdb demo
    """
    admin_url, app_url, replica_urls = _urls()
    with ClinicDB(app_url, replica_urls) as db:
        _step("Seeding two clinics (the operator) and their patients (the app, through clinicdb.ClinicDB)")
        key = seed(admin_url, db)
        for clinic_id, name in DEMO_CLINICS.items():
            click.echo(f"  {name}: {clinic_id}")

        for clinic_id, name in DEMO_CLINICS.items():
            _step(f"db.read({name}): select mrn, given_name, family_name from patients")
            with db.read(clinic_id) as cur:
                rows = cur.execute("select mrn, given_name, family_name from patients order by mrn").fetchall()
                where = cur.execute("select pg_is_in_recovery()").fetchone()
            print_table(["mrn", "given_name", "family_name"], rows)
            served = _server(bool(where and where[0]))
            why = " (this caller just wrote: until the replica replays that, reads stay on the primary)"
            click.echo(f"  served by: {served}{why if served == 'primary' and replica_urls else ''}")

        _step("db.read() with no clinic given and no clinic_scope active")
        try:
            with db.read():
                pass
        except NoClinicScope as exc:
            click.echo(f"  refused by the driver, nothing sent: {str(exc).split(':')[0]}")

        _step("The database itself, when an app connection forgets the clinic (a missing set_config)")
        with psycopg.connect(app_url) as conn:
            count = conn.execute("select count(*) from patients").fetchone()
            click.echo(f"  rows visible: {count[0] if count else 0}  (fails closed)")
            conn.rollback()
            try:
                conn.execute("insert into patients (mrn, given_name, family_name) values ('X', 'No', 'Clinic')")
            except psycopg.Error as exc:
                click.echo(f"  a write is refused: {exc.diag.message_primary}")
            conn.rollback()

        northside = next(iter(DEMO_CLINICS))
        _step("Read-your-writes: db.write updates an address, the next db.read must see it")
        address = time.strftime("%H%M%S Main Street")
        with db.write(northside, user_id="demo-frontdesk") as cur:
            cur.execute("update patients set address = %s where mrn = 'N-001'", (address,))
        token = db.last_write_token()
        with db.read(northside) as cur:
            row = cur.execute("select address, pg_is_in_recovery() from patients where mrn = 'N-001'").fetchone()
        assert row is not None
        click.echo(
            f"  causal token {token}: read sees address {row[0]!r} (wrote {address!r}), served by {_server(row[1])}"
        )
        click.echo("  (a replica serves it only once it has replayed past the token; otherwise the primary does)")

        if replica_urls:
            _step("Replica routing: once the replica has replayed the write, reads go back to it")
            deadline = time.monotonic() + 5
            served = "primary"
            while time.monotonic() < deadline:
                with db.read(northside) as cur:
                    row = cur.execute(
                        "select address, pg_is_in_recovery() from patients where mrn = 'N-001'"
                    ).fetchone()
                assert row is not None
                served = _server(row[1])
                if served == "replica":
                    break
                time.sleep(0.2)
            click.echo(f"  read sees address {row[0]!r}, served by {served}")
        metrics = db.metrics()
        routes = metrics["routes"]
        click.echo(
            f"  db.metrics(): primary {routes['primary']['transactions']} transactions,"
            f" replica {routes['replica']['transactions']}; failovers {metrics['failovers'] or 'none'}"
        )

    _step("PHI encryption: an SSN as stored (operator) and as the app reads it (with the master key)")
    demo_encryption(admin_url, app_url, northside, key)

    _step(f"The audit trail of {DEMO_CLINICS[northside]} (clinicdb audit tail), written by the same transactions")
    demo_audit_history(admin_url, northside)

    with psycopg.connect(admin_url) as conn:
        findings = conn.execute("select count(*) from clinicdb.check_isolation()").fetchone()
    _step("clinicdb check")
    click.echo(f"  findings: {findings[0] if findings else '?'}  (0 means every clinic_id table is protected)")


def register(cli: click.Group) -> None:
    cli.add_command(demo)
