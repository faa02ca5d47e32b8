"""The isolation commands: check, staff, sql policies, psql --clinic, clinic (cli/)."""

from __future__ import annotations

import json
import shutil
import uuid

import psycopg
import pytest
from click.testing import CliRunner
from clinicdb_cli.main import cli
from psycopg import sql

from clinicdb.devcluster.testing import ServerSet


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_check_passes_on_the_reference_schema(servers: ServerSet) -> None:
    """`clinicdb check` exits 0 on the migrated reference schema."""
    code, out = run("check", "--database-url", servers.admin_url)
    assert code == 0, out
    assert out.startswith("ok: every clinic_id table is protected")


def test_check_fails_on_a_forgotten_table(servers: ServerSet, admin: psycopg.Connection) -> None:
    """A DBA who adds a clinic_id table and forgets protect_table sees `check` fail, naming it."""
    name = f"forgotten_{uuid.uuid4().hex[:6]}"
    admin.execute(sql.SQL("create table {} (id uuid primary key, clinic_id uuid)").format(sql.Identifier(name)))
    try:
        code, out = run("check", "--database-url", servers.admin_url, "--json")
        assert code == 1
        findings = {(f["object"], f["finding"]) for f in json.loads(out)}
        assert (f"public.{name}", "row level security is not enabled") in findings
        admin.execute("select clinicdb.protect_table(%s::regclass)", (name,))
        code, out = run("check", "--database-url", servers.admin_url)
        assert code == 0, out
    finally:
        admin.execute(sql.SQL("drop table {}").format(sql.Identifier(name)))
        admin.execute("delete from clinicdb.protected_tables where table_name::text = %s", (name,))


def test_check_fails_when_a_tables_audit_capture_is_out_of_date(servers: ServerSet, admin: psycopg.Connection) -> None:
    """A column dropped from an audited table makes `check` fail with the command to run; re-attaching clears it."""
    name = f"audited_{uuid.uuid4().hex[:6]}"
    admin.execute(
        sql.SQL("create table {} (id uuid primary key, clinic_id uuid not null, note text, extra text)").format(
            sql.Identifier(name)
        )
    )
    try:
        admin.execute("select clinicdb.protect_table(%s::regclass)", (name,))
        admin.execute(sql.SQL("alter table {} drop column extra").format(sql.Identifier(name)))
        code, out = run("check", "--database-url", servers.admin_url, "--json")
        assert code == 1
        findings = {(f["object"], f["finding"]) for f in json.loads(out)}
        assert (
            f"public.{name}",
            "audit capture functions are out of date (column extra dropped or renamed):"
            f" updates fail until select clinicdb.attach_audit('public.{name}')",
        ) in findings
        admin.execute("select clinicdb.attach_audit(%s::regclass)", (name,))
        code, out = run("check", "--database-url", servers.admin_url)
        assert code == 0, out
    finally:
        admin.execute("select clinicdb.detach_audit(%s::regclass)", (name,))
        admin.execute(sql.SQL("drop table {}").format(sql.Identifier(name)))
        admin.execute("delete from clinicdb.protected_tables where table_name::text = %s", (name,))


def test_sql_policies_prints_exactly_what_protect_table_runs(servers: ServerSet, admin: psycopg.Connection) -> None:
    """The reviewed SQL is the SQL protect_table executes: one source, rendered once."""
    code, out = run("sql", "policies", "patients", "--database-url", servers.admin_url)
    assert code == 0, out
    printed = [line.rstrip(";") for line in out.splitlines() if not line.startswith("--")]
    expected = [r[0] for r in admin.execute("select clinicdb.protect_table_sql('patients')").fetchall()]
    assert printed == expected
    assert any("create policy clinicdb_tenant_select" in line for line in printed)


def test_sql_policies_on_a_table_without_clinic_id_is_one_line(servers: ServerSet) -> None:
    """Asking for policies of a table with no clinic_id says so in one line with a hint."""
    code, out = run("sql", "policies", "clinicdb.phi_columns", "--database-url", servers.admin_url)
    assert code == 1
    assert out.count("\n") == 1 and "has no clinic_id column" in out and "hint:" in out


def test_staff_grant_list_revoke(servers: ServerSet, admin: psycopg.Connection) -> None:
    """`staff grant` maps a login, `list` shows it, `revoke` removes mapping and membership."""
    clinic = admin.execute("select clinicdb.create_clinic('CLI staff')").fetchone()
    assert clinic
    login = f"cli_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("create role {} login").format(sql.Identifier(login)))
    try:
        assert run("staff", "grant", login, str(clinic[0]), "--database-url", servers.admin_url)[0] == 0
        code, out = run("staff", "list", "--json", "--database-url", servers.admin_url)
        assert {"role": login, "clinic_id": str(clinic[0])}.items() <= next(
            r for r in json.loads(out) if r["role"] == login
        ).items()
        code, out = run("staff", "revoke", login, "--database-url", servers.admin_url)
        assert code == 0 and "removed 1 mapping" in out
        member = admin.execute("select pg_has_role(%s, 'clinicdb_staff', 'MEMBER')", (login,)).fetchone()
        assert member == (False,)
    finally:
        admin.execute(sql.SQL("drop role {}").format(sql.Identifier(login)))


def test_staff_grant_refuses_a_superuser(servers: ServerSet, admin: psycopg.Connection) -> None:
    """A login that bypasses RLS cannot be made staff; the error says why in one line."""
    clinic = admin.execute("select clinicdb.create_clinic('CLI super')").fetchone()
    assert clinic
    code, out = run("staff", "grant", "postgres", str(clinic[0]), "--database-url", servers.admin_url)
    assert code == 1 and "bypasses row level security" in out and out.count("\n") == 1


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql not installed")
def test_psql_session_is_scoped_to_the_clinic(servers: ServerSet, admin: psycopg.Connection) -> None:
    """`clinicdb psql --clinic ID` runs psql as an app role that sees only that clinic."""
    a = admin.execute("select clinicdb.create_clinic('psql A')").fetchone()
    b = admin.execute("select clinicdb.create_clinic('psql B')").fetchone()
    assert a and b
    for clinic in (a[0], b[0]):
        admin.execute(
            "insert into patients (clinic_id, mrn, given_name, family_name) values (%s, 'PS-1', 'x', 'y')", (clinic,)
        )
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "clinicdb_cli", "psql", "--clinic", str(a[0]), "--database-url", servers.admin_url,
         "--", "-At", "-c", "select string_agg(distinct clinic_id::text, ',') from patients"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(a[0])


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql not installed")
def test_psql_as_a_staff_login_uses_its_mapping(servers: ServerSet, admin: psycopg.Connection) -> None:
    """Given a staff login's URL, `clinicdb psql` runs as that login (no role to drop to): mapped to two clinics it
    picks the one asked for and sees only its rows; a clinic it is not mapped to is refused in one line."""
    import subprocess
    import sys

    a = admin.execute("select clinicdb.create_clinic('psql staff A')").fetchone()
    b = admin.execute("select clinicdb.create_clinic('psql staff B')").fetchone()
    c = admin.execute("select clinicdb.create_clinic('psql staff C')").fetchone()
    assert a and b and c
    for clinic in (a[0], b[0], c[0]):
        admin.execute(
            "insert into patients (clinic_id, mrn, given_name, family_name) values (%s, 'PSS-1', 'x', 'y')", (clinic,)
        )
    login = f"dr_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("create role {} login in role clinicdb_staff").format(sql.Identifier(login)))
    admin.execute("select clinicdb.grant_staff(%s, %s)", (login, a[0]))
    admin.execute("select clinicdb.grant_staff(%s, %s)", (login, b[0]))
    url = servers.login_url(login)
    for clinic in (a[0], b[0]):
        out = subprocess.run(
            [sys.executable, "-m", "clinicdb_cli", "psql", "--clinic", str(clinic), "--database-url", url,
             "--", "-At", "-c", "select string_agg(distinct clinic_id::text, ',') from patients"],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == str(clinic)
    code, out = run("psql", "--clinic", str(c[0]), "--database-url", url)
    assert code == 1 and f"staff login {login} is not mapped to clinic {c[0]}" in out and out.count("\n") == 1


def test_psql_unknown_clinic_is_one_line(servers: ServerSet) -> None:
    """A clinic id that does not exist is refused before psql starts."""
    code, out = run("psql", "--clinic", str(uuid.uuid4()), "--database-url", servers.admin_url)
    assert code == 1 and "does not exist" in out and out.count("\n") == 1
