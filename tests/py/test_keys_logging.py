"""Keys and PHI stay out of the server log and pg_stat_activity (issue #5, docs/encryption.md)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from clinicdb_cli.keys import demo_encryption
from psycopg import sql

from clinicdb import encryption
from clinicdb._url import replace_url
from clinicdb.devcluster.testing import ServerSet, scratch_database
from clinicdb.keys import generate_master_key, set_master_key

SSN = "219-09-9999"


@pytest.fixture
def logged_database(servers: ServerSet) -> Iterator[tuple[str, Path]]:
    """A migrated database of its own whose sessions log every statement (log_statement = 'all')."""
    if servers.cluster is None:
        pytest.skip("needs the server log of a local test server (not available with CLINICDB_TEST_DATABASE_URL)")
    with scratch_database(servers.admin_url, "logged", reference=True, logins=True) as url:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("alter database {} set log_statement = 'all'").format(sql.Identifier(str(name))))
        yield url, servers.cluster.log_file("primary")


def _log_since(log: Path, offset: int) -> str:
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def test_log_statement_all_shows_neither_key_nor_ssn(logged_database: tuple[str, Path]) -> None:
    """Under log_statement = 'all', a workload of key operations, writes, lookups and errors logs no key and no SSN."""
    url, log = logged_database
    key = generate_master_key()
    app_url = replace_url(url, user="clinicdb_app_user")
    offset = log.stat().st_size
    with psycopg.connect(url, autocommit=True) as conn:
        clinic = conn.execute("select clinicdb.create_clinic('logged')").fetchone()[0]  # type: ignore[index]
    encryption.rotate(url, clinic, key)
    with psycopg.connect(app_url) as app:
        with app.transaction():
            app.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
            set_master_key(app, key)
            app.execute(
                "insert into patients (mrn, given_name, family_name, ssn, phone) values (%s, %s, %s, %s, %s)",
                ("L-1", "Logged", "Patient", SSN, "+1 555 0142"),
            )
            found = app.execute(
                "select ssn from patients_decrypted"
                " where ssn_blind_index = any (clinicdb.blind_index('public.patients', 'ssn', %s))",
                (SSN,),
            ).fetchall()
        assert found == [(SSN,)]
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification), app.transaction():
            app.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
            set_master_key(app, generate_master_key())
            app.execute("select ssn from patients_decrypted where ssn_blind_index = any ("
                        "clinicdb.blind_index('public.patients', 'ssn', %s))", (SSN,))  # fmt: skip
    encryption.rotate(url, clinic, key)
    encryption.reencrypt(url, key, clinic=clinic)
    demo_encryption(url, app_url, clinic, key)
    text = _log_since(log, offset)
    assert "set_config" in text and "patients_decrypted" in text, "the workload's statements were not logged"
    assert key not in text and key.upper() not in text
    assert SSN not in text and "078-05-1120" not in text


def test_parameters_would_be_logged_without_the_settings(logged_database: tuple[str, Path]) -> None:
    """Control: with log_parameter_max_length back at its default, a bound value does reach the log."""
    url, log = logged_database
    marker = f"marker-{uuid.uuid4().hex}"
    offset = log.stat().st_size
    with psycopg.connect(url) as conn:
        conn.execute("set log_parameter_max_length = -1")
        conn.execute("select %s::text", (marker,))
    assert marker in _log_since(log, offset)


def test_pg_stat_activity_shows_the_placeholder_not_the_key(servers: ServerSet) -> None:
    """While a transaction holds the master key, pg_stat_activity shows `$1` where the key was bound."""
    key = generate_master_key()
    with psycopg.connect(servers.app_url) as app, psycopg.connect(servers.admin_url) as admin:
        set_master_key(app, key)
        pid = app.info.backend_pid
        row = admin.execute("select query from pg_stat_activity where pid = %s", (pid,)).fetchone()
        app.rollback()
    assert row is not None and "$2" in str(row[0]) and key not in str(row[0])
