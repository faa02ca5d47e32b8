"""Migrations (python/clinicdb/schema.py, migrations/): sets, frozen files, upgrades, orders, URLs."""

from __future__ import annotations

import os
import shutil
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from clinicdb_cli.main import cli
from psycopg import sql

import catalog
from clinicdb import encryption, migration_lock, schema
from clinicdb._url import replace_url
from clinicdb.devcluster.bootstrap import ensure_logins
from clinicdb.devcluster.testing import ServerSet, scratch_database
from clinicdb.keys import generate_master_key, set_master_key

ROOT = Path(__file__).resolve().parents[2]
LEGACY_ORDER = ["0001.roles", "0002.tenancy-core", "0003.reference-schema", "0004.audit", "0005.encryption"]


@pytest.fixture
def empty_db(servers: ServerSet) -> Iterator[str]:
    """A new, empty database on the test server."""
    with scratch_database(servers.admin_url, "migrate") as url:
        yield url


@pytest.fixture
def other_db(servers: ServerSet) -> Iterator[str]:
    """A second empty database, to compare with the first."""
    with scratch_database(servers.admin_url, "compare") as url:
        yield url


def _relations_outside_layer(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast', 'clinicdb',"
            "                         'clinicdb_migrations')"
            "   and n.nspname not like 'pg\\_%' and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')"
        ).fetchall()
    return {r[0] for r in rows}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname in ('public', 'clinicdb') and c.relkind in ('r', 'p')"
        ).fetchall()
    return {r[0] for r in rows}


def _install_from_sql(url: str, layers: list[str]) -> None:
    """Load sql/ files in the order sql/layers.toml gives, as the migrations would (owner unless admin:)."""
    order = tomllib.loads((ROOT / "sql" / "layers.toml").read_text())
    with psycopg.connect(url, autocommit=True) as conn:
        for layer in layers:
            for entry in order[layer]:
                name = entry.removeprefix("admin:")
                body = (ROOT / "sql" / name).read_text()
                with conn.transaction():
                    if not entry.startswith("admin:"):
                        conn.execute("set local role clinicdb_owner")
                    conn.execute(body.encode())


def test_core_migrate_adds_no_table_to_application_schemas(empty_db: str) -> None:
    """`clinicdb migrate` installs the core layer only: nothing appears outside the clinicdb schemas."""
    result = CliRunner().invoke(cli, ["migrate", "--database-url", empty_db])
    assert result.exit_code == 0, result.output
    assert _relations_outside_layer(empty_db) == set()
    assert {"clinicdb.clinics", "clinicdb.audit_log", "clinicdb.clinic_keys"} <= _tables(empty_db)
    states = {s.id: s for s in schema.status(empty_db)}
    assert all(s.applied for s in states.values() if s.layer == schema.CORE)
    assert not any(s.applied for s in states.values() if s.layer == schema.REFERENCE)


def test_reference_schema_is_opt_in_and_then_stays_in_use(empty_db: str) -> None:
    """--reference-schema adds the healthcare tables; later migrates and rollbacks keep treating them as installed."""
    core = schema.apply(empty_db)
    assert "public.patients" not in _tables(empty_db)
    added = schema.apply(empty_db, reference=True)
    assert added == ["0008.reference-schema", "0009.reference-encryption", "0013.reference-composite-keys"] and core
    assert {"public.patients", "public.appointments"} <= _tables(empty_db)
    assert schema.apply(empty_db) == []
    assert schema.rollback(empty_db) == ["0013.reference-composite-keys"]
    assert schema.apply(empty_db) == ["0013.reference-composite-keys"], "a plain migrate finishes the reference set"


def test_every_migration_declares_what_it_depends_on() -> None:
    """Each migration but the first names the migrations it builds on, so yoyo can never run it before them."""
    with schema._quiet():
        found = schema._read([schema.set_folder(schema.CORE), schema.set_folder(schema.REFERENCE)])
    for migration in found:
        ids = {d.id for d in migration.depends}
        if migration.id == "0001.roles":
            assert ids == set()
        else:
            assert ids, f"{migration.id} declares no dependency"
    by_id = {m.id: {d.id for d in m.depends} for m in found}
    assert "0004.audit" in by_id["0005.encryption"], "encryption masks keys in the audit trail, so audit comes first"


def test_published_migrations_match_the_lock() -> None:
    """Every file under migrations/ is locked and unchanged (a published migration never changes)."""
    report = migration_lock.check(ROOT / "migrations")
    assert not report.broken and not report.unlocked, report.describe()


def test_a_changed_published_migration_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Editing a locked migration breaks the lock, and `clinicdb migrate` refuses to run it, in one line."""
    home = tmp_path / "home"
    shutil.copytree(ROOT / "migrations", home / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    target = home / "migrations" / "core" / "0002.tenancy-core.sql"
    target.write_text(target.read_text() + "\n-- a later edit\n")
    report = migration_lock.check(home / "migrations")
    assert report.changed == ["core/0002.tenancy-core.sql"]
    monkeypatch.setenv("CLINICDB_HOME", str(home))
    result = CliRunner().invoke(cli, ["migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/none"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "0002.tenancy-core.sql" in result.output
    assert "new migration" in result.output


def test_migrations_install_exactly_what_sql_defines(empty_db: str, other_db: str) -> None:
    """The catalog the migrations build equals the one the sql/ files build: an edit to sql/ that no new
    migration carries fails here."""
    schema.apply(empty_db, reference=True)
    _install_from_sql(other_db, ["core", "reference"])
    differences = catalog.diff(catalog.snapshot(empty_db), catalog.snapshot(other_db))
    assert not differences, "\n".join(differences)


def _orders(migrations: list[Any], limit: int = 6) -> list[list[Any]]:
    """Orders of ``migrations`` that respect their dependencies (depth-first, at most ``limit``), always
    including the two extremes: each migration as early as possible and as late as possible."""
    found: list[list[Any]] = []

    def extend(done: list[Any], left: list[Any], reverse: bool) -> None:
        if len(found) >= limit:
            return
        if not left:
            found.append(done)
            return
        ready = [m for m in left if {d.id for d in m.depends} <= {x.id for x in done}]
        for m in reversed(ready) if reverse else ready:
            extend([*done, m], [x for x in left if x is not m], reverse)

    extend([], migrations, False)
    extend([], migrations, True)
    unique: dict[tuple[str, ...], list[Any]] = {tuple(m.id for m in o): o for o in found}
    return list(unique.values())


def test_every_order_yoyo_allows_migrates_to_the_same_catalog(servers: ServerSet) -> None:
    """Whatever order the dependencies allow, core + reference end in the same catalog."""
    with schema._quiet():
        found = schema._read([schema.set_folder(schema.CORE), schema.set_folder(schema.REFERENCE)])
    snapshots = []
    for order in _orders(list(found)):
        with scratch_database(servers.admin_url, "order") as url:
            with schema._backend(url) as backend, schema._quiet():
                backend.apply_migrations(found.__class__(order))
            snapshots.append(([m.id for m in order], catalog.snapshot(url)))
    assert snapshots
    first_order, first = snapshots[0]
    for order, snap in snapshots[1:]:
        differences = catalog.diff(first, snap)
        assert not differences, f"{order} differs from {first_order}:\n" + "\n".join(differences)


def _build_0_1_database(url: str) -> None:
    """A database as clinicdb 0.1 left it: its five migrations in its order, the history in public."""
    with schema._quiet():
        found = schema._read(
            [schema.set_folder(schema.CORE), schema.set_folder(schema.REFERENCE), schema.migrations_root() / "legacy"]
        )
    chosen = found.__class__(sorted((m for m in found if m.id in LEGACY_ORDER), key=lambda m: LEGACY_ORDER.index(m.id)))
    with schema._backend(url) as backend, schema._quiet():
        backend.apply_migrations(chosen)
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock"):
            conn.execute(f"alter table clinicdb_migrations.{table} set schema public")
        conn.execute("drop schema clinicdb_migrations")


def _contents(url: str) -> dict[str, Any]:
    """Every row a clinic's data is made of (PHI as its ciphertext), plus the audit trail's ids."""
    with psycopg.connect(url) as conn:
        clinics = conn.execute("select to_regclass('clinicdb.clinics') is not null").fetchone()
        table = "clinicdb.clinics" if clinics and clinics[0] else "public.clinics"
        return {
            "clinics": conn.execute(f"select id, name, timezone from {table} order by id").fetchall(),
            "patients": conn.execute(
                "select id, clinic_id, mrn, ssn, ssn_ciphertext, ssn_blind_index from public.patients order by id"
            ).fetchall(),
            "appointments": conn.execute(
                "select id, patient_id, reason from public.appointments order by id"
            ).fetchall(),
            "staff_members": conn.execute(
                "select role_name, clinic_id from clinicdb.staff_members order by 1, 2"
            ).fetchall(),
            "clinic_keys": conn.execute(
                "select clinic_id, version, wrapped_key from clinicdb.clinic_keys order by 1, 2"
            ).fetchall(),
            "audit ids": [r[0] for r in conn.execute("select id from clinicdb.audit_log order by id").fetchall()],
        }


def test_a_0_1_database_upgrades_to_the_new_layout_without_losing_a_row(
    servers: ServerSet, empty_db: str, other_db: str
) -> None:
    """A database migrated by clinicdb 0.1, holding patients, keys, staff and audit rows, upgrades with a plain
    `clinicdb migrate`: every row is still there and the catalog equals a fresh --reference-schema install."""
    _build_0_1_database(empty_db)
    ensure_logins(empty_db)
    key = generate_master_key()
    staff_login = f"dr_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login").format(sql.Identifier(staff_login)))
        conn.execute(sql.SQL("grant clinicdb_staff to {}").format(sql.Identifier(staff_login)))
        clinics = [conn.execute("select clinicdb.create_clinic(%s)", (f"Old {i}",)).fetchone()[0] for i in range(2)]  # type: ignore[index]
        conn.execute("select clinicdb.grant_staff(%s, %s)", (staff_login, clinics[0]))
    for clinic in clinics:
        encryption.rotate(empty_db, clinic, key)
        with psycopg.connect(replace_url(empty_db, user="clinicdb_app_user")) as conn, conn.transaction():
            conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
            set_master_key(conn, key)
            for i in range(3):
                patient = conn.execute(
                    "insert into patients (mrn, given_name, family_name, ssn)"
                    " values (%s, 'Ann', 'Old', %s) returning id",
                    (f"M-{i}", f"900-00-{i:04d}"),
                ).fetchone()
                assert patient is not None
                conn.execute(
                    "insert into appointments (patient_id, starts_at, ends_at, reason)"
                    " values (%s, now(), now() + interval '1 hour', 'checkup')",
                    (patient[0],),
                )
    before = _contents(empty_db)

    result = CliRunner().invoke(cli, ["migrate", "--database-url", empty_db])
    assert result.exit_code == 0, result.output
    assert "0006.clinics-in-clinicdb-schema" in result.output and "0008.reference-schema" in result.output

    after = _contents(empty_db)
    for part in ("clinics", "patients", "appointments", "staff_members", "clinic_keys"):
        assert after[part] == before[part], f"{part} changed in the upgrade"
    assert set(before["audit ids"]) <= set(after["audit ids"]), "no audit row lost"
    assert len(before["patients"]) == 6
    for clinic in clinics:
        with psycopg.connect(replace_url(empty_db, user="clinicdb_app_user")) as conn, conn.transaction():
            conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
            set_master_key(conn, key)
            ssns = conn.execute("select ssn from patients_decrypted order by mrn").fetchall()
        assert [r[0] for r in ssns] == ["900-00-0000", "900-00-0001", "900-00-0002"], "PHI still decrypts"
    check = CliRunner().invoke(cli, ["check", "--database-url", empty_db])
    assert check.exit_code == 0, check.output

    schema.apply(other_db, reference=True)
    differences = catalog.diff(catalog.snapshot(other_db), catalog.snapshot(empty_db))
    assert not differences, "\n".join(differences)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("select clinicdb.revoke_staff(%s)", (staff_login,))
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(staff_login)))


def test_migrate_rollback_to_zero_then_migrate_again(empty_db: str) -> None:
    """Every migration rolls back cleanly, and the schema comes back identical."""
    applied = schema.apply(empty_db, reference=True)
    assert applied == [s.id for s in schema.status(empty_db)]
    first = _tables(empty_db)
    assert {"public.patients", "public.appointments", "clinicdb.protected_tables"} <= first
    undone = schema.rollback(empty_db, to_zero=True)
    assert undone == list(reversed(applied))
    assert _tables(empty_db) == set()
    assert not any(s.applied for s in schema.status(empty_db))
    assert schema.apply(empty_db, reference=True) == applied
    assert _tables(empty_db) == first


@pytest.mark.parametrize("count", ["0", "-1"])
def test_rollback_refuses_a_count_below_one(empty_db: str, count: str) -> None:
    """`rollback --count 0` or `-1` rolls back nothing and says why in one line (it used to roll back all but one)."""
    schema.apply(empty_db)
    result = CliRunner().invoke(cli, ["rollback", "--database-url", empty_db, "--count", count])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "--count must be 1 or more" in result.output
    assert all(s.applied for s in schema.status(empty_db) if s.layer == schema.CORE)


def test_migrate_twice_applies_nothing_the_second_time(empty_db: str) -> None:
    """A second `clinicdb migrate` is a no-op that says so."""
    runner = CliRunner()
    first = runner.invoke(cli, ["migrate", "--database-url", empty_db, "--reference-schema"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(cli, ["migrate", "--database-url", empty_db])
    assert second.exit_code == 0 and second.output.strip() == "nothing to apply"
    listed = runner.invoke(cli, ["migrations", "--database-url", empty_db, "--json"])
    assert '"applied": "no"' not in listed.output


def test_user_migrations_apply_after_the_core_in_one_history(empty_db: str, tmp_path: Path) -> None:
    """--source DIR applies the user's migrations after clinicdb's, lists them, and rolls them back first."""
    own = tmp_path / "own"
    own.mkdir()
    (own / "0001.visits.sql").write_text(
        "-- depends: 0006.clinics-in-clinicdb-schema\n"
        "create table public.visits (id uuid primary key default gen_random_uuid(),"
        " clinic_id uuid not null references clinicdb.clinics (id), note text, unique (clinic_id, id));\n"
        "alter table public.visits owner to clinicdb_owner;\n"
        "select clinicdb.protect_table('public.visits');\n"
    )
    (own / "0001.visits.rollback.sql").write_text("drop table public.visits;\n")
    runner = CliRunner()
    first = runner.invoke(cli, ["migrate", "--database-url", empty_db, "--source", str(own)])
    assert first.exit_code == 0, first.output
    assert first.output.strip().endswith("0001.visits")
    listed = runner.invoke(cli, ["migrations", "--database-url", empty_db, "--source", str(own), "--json"])
    assert '"migration": "0001.visits"' in listed.output and '"set": "source"' in listed.output
    assert runner.invoke(cli, ["check", "--database-url", empty_db]).exit_code == 0
    refused = runner.invoke(cli, ["rollback", "--database-url", empty_db])
    assert refused.exit_code == 1 and "0001.visits" in refused.output and "--source" in refused.output
    undone = runner.invoke(cli, ["rollback", "--database-url", empty_db, "--source", str(own)])
    assert undone.exit_code == 0 and undone.output.strip() == "rolled back: 0001.visits"


def test_commands_follow_a_multi_host_url_past_a_dead_first_host(empty_db: str) -> None:
    """migrate, migrations, check and rollback work through a two-host URL whose first host is down."""
    params = psycopg.conninfo.conninfo_to_dict(empty_db)
    url = (
        f"postgresql://{params['user']}@127.0.0.1:1,{params['host']}:{params['port']}/{params['dbname']}"
        "?target_session_attrs=read-write&connect_timeout=3"
    )
    runner = CliRunner()
    for args in (["migrate"], ["migrations"], ["check"], ["rollback"]):
        result = runner.invoke(cli, [*args, "--database-url", url])
        assert result.exit_code == 0, f"{args}: {result.output}"
    assert not all(s.applied for s in schema.status(url))


def test_migrate_against_unreachable_server_is_one_line() -> None:
    """A server that is not there gives one error line, not a traceback."""
    result = CliRunner().invoke(
        cli,
        ["migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/nope?connect_timeout=2"],
    )
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")


def test_a_url_of_another_database_kind_is_one_line() -> None:
    """`migrate --database-url mysql://...` says what a PostgreSQL URL looks like, without a traceback."""
    result = CliRunner().invoke(cli, ["migrate", "--database-url", "mysql://root@localhost/clinic"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "not a PostgreSQL URL" in result.output and "postgresql://" in result.output


def test_clinicdb_home_without_migrations_is_one_line(tmp_path: Path) -> None:
    """CLINICDB_HOME pointing at a folder without migrations says to unset it."""
    env = {**os.environ, "CLINICDB_HOME": str(tmp_path)}
    result = CliRunner(env=env).invoke(cli, ["migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/x"])
    assert result.exit_code == 1 and "unset CLINICDB_HOME" in result.output
