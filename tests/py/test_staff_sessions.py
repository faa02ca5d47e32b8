"""Staff logins in real sessions: the escapes pgTAP cannot try as a superuser.

SET ROLE and SET SESSION AUTHORIZATION are checked against the session's
login, and COPY FROM STDIN needs a client: so these tests log in as a real
staff login, exactly as a person in psql would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from clinicdb._url import replace_url
from clinicdb.devcluster.testing import ServerSet


@pytest.fixture
def staff_login(
    servers: ServerSet, admin: psycopg.Connection, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> Iterator[tuple[str, str, uuid.UUID, uuid.UUID]]:
    """A staff login mapped to clinic A, another mapped to B, each clinic with one patient."""
    a, b = clinic_pair
    alice, bob = f"staff_{uuid.uuid4().hex[:8]}", f"staff_{uuid.uuid4().hex[:8]}"
    for login, clinic in ((alice, a), (bob, b)):
        admin.execute(sql.SQL("create role {} login").format(sql.Identifier(login)))
        admin.execute("select clinicdb.grant_staff(%s, %s)", (login, clinic))
        admin.execute(
            "insert into patients (clinic_id, mrn, given_name, family_name) values (%s, %s, 'P', 'Q')",
            (clinic, f"M-{login}"),
        )
    yield alice, replace_url(servers.admin_url, user=alice), a, b
    for login in (alice, bob):
        admin.execute("select clinicdb.revoke_staff(%s)", (login,))
        admin.execute(sql.SQL("drop owned by {}").format(sql.Identifier(login)))
        admin.execute(sql.SQL("drop role {}").format(sql.Identifier(login)))
    del bob


def _clinics_seen(conn: psycopg.Connection) -> set[uuid.UUID]:
    return {row[0] for row in conn.execute("select distinct clinic_id from patients").fetchall()}


def test_staff_login_sees_only_its_clinic(staff_login: tuple[str, str, uuid.UUID, uuid.UUID]) -> None:
    """A staff login's plain query returns its own clinic's patients and no others."""
    _, url, a, _ = staff_login
    with psycopg.connect(url, autocommit=True) as conn:
        assert _clinics_seen(conn) == {a}


@pytest.mark.parametrize(
    "attempt",
    [
        "set app.clinic_id = '{b}'",
        "select set_config('app.clinic_id', '{b}', false)",
        "reset app.clinic_id",
        "reset role",
        "set role none",
        "reset all",
        "discard all",
    ],
)
def test_staff_cannot_switch_clinic_with_settings(
    staff_login: tuple[str, str, uuid.UUID, uuid.UUID], attempt: str
) -> None:
    """Whatever a staff login sets or resets, it still sees only its own clinic."""
    _, url, a, b = staff_login
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(attempt.format(b=b))  # type: ignore[arg-type]
        assert _clinics_seen(conn) == {a}


@pytest.mark.parametrize(
    "target", ["clinicdb_app", "clinicdb_readonly", "clinicdb_owner", "clinicdb_auditor", "postgres"]
)
def test_staff_cannot_set_role_elsewhere(staff_login: tuple[str, str, uuid.UUID, uuid.UUID], target: str) -> None:
    """SET ROLE to any role the login does not hold is refused."""
    _, url, _, _ = staff_login
    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(target)))


def test_staff_cannot_set_role_to_another_staff_login(
    staff_login: tuple[str, str, uuid.UUID, uuid.UUID], admin: psycopg.Connection
) -> None:
    """SET ROLE and SET SESSION AUTHORIZATION to the other clinic's staff login are refused."""
    alice, url, _, b = staff_login
    row = admin.execute("select role_name from clinicdb.staff_members where clinic_id = %s", (b,)).fetchone()
    assert row is not None
    bob = row[0]
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(bob)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("set session authorization {}").format(sql.Identifier(bob)))
        assert conn.execute("select current_user").fetchone() == (alice,)


def test_staff_that_sets_role_to_the_staff_group_sees_nothing(
    staff_login: tuple[str, str, uuid.UUID, uuid.UUID],
) -> None:
    """The one other role a staff login holds, clinicdb_staff, has no clinic: it fails closed."""
    _, url, _, _ = staff_login
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set role clinicdb_staff")
        assert _clinics_seen(conn) == set()


def test_copy_from_stdin_is_refused_for_staff_and_app(
    staff_login: tuple[str, str, uuid.UUID, uuid.UUID], servers: ServerSet
) -> None:
    """COPY FROM STDIN, which would skip the policies, is refused to staff and to the app."""
    _, url, a, _ = staff_login
    for login_url, setup in ((url, None), (servers.app_url, a)):
        with psycopg.connect(login_url) as conn:
            if setup:
                conn.execute("select set_config('app.clinic_id', %s, true)", (str(setup),))
            with (
                pytest.raises(psycopg.errors.FeatureNotSupported, match="row-level security"),
                conn.cursor().copy("copy patients (mrn, given_name, family_name) from stdin") as copy,
            ):
                copy.write_row(("C-1", "x", "y"))
            conn.rollback()


def test_staff_writes_land_in_its_own_clinic(staff_login: tuple[str, str, uuid.UUID, uuid.UUID]) -> None:
    """A staff insert without clinic_id lands in the staff member's clinic."""
    _, url, a, _ = staff_login
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "insert into patients (mrn, given_name, family_name) values ('S-NEW', 'x', 'y') returning clinic_id"
        ).fetchone()
        conn.rollback()
    assert row == (a,)


@pytest.fixture
def staff_admin(servers: ServerSet, admin: psycopg.Connection) -> Iterator[tuple[str, int]]:
    """A CREATEROLE login delegated staff administration as docs/security.md describes (on 16+: admin option on
    clinicdb_staff only); yields its URL and the server's version number. Dropped with the logins it made."""
    name = f"staff_admin_{uuid.uuid4().hex[:8]}"
    version = int(admin.execute("show server_version_num").fetchone()[0])  # type: ignore[index]
    admin.execute(sql.SQL("create role {} login createrole").format(sql.Identifier(name)))
    if version >= 160000:
        admin.execute(
            sql.SQL("grant clinicdb_staff to {} with admin true, inherit false, set false").format(sql.Identifier(name))
        )
    yield replace_url(servers.admin_url, user=name), version
    made = admin.execute("select rolname from pg_roles where rolname like %s", (f"{name}_%",)).fetchall()
    for (login,) in made:
        admin.execute(sql.SQL("drop role {}").format(sql.Identifier(login)))
    admin.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def test_staff_administration_follows_the_createrole_rules_of_the_server(
    staff_admin: tuple[str, int], admin: psycopg.Connection
) -> None:
    """docs/security.md, as the server behaves: a CREATEROLE staff administrator may hand out clinicdb_staff;
    on 15 it may hand out clinicdb_app too, on 16+ it may not, and it may change the password of a login it
    created but not of one a superuser created."""
    url, version = staff_admin
    name = psycopg.conninfo.conninfo_to_dict(url)["user"]
    other = f"{name}_bysuper"
    admin.execute(sql.SQL("create role {} login").format(sql.Identifier(other)))
    with psycopg.connect(url, autocommit=True) as conn:
        mine = f"{name}_made"
        conn.execute(sql.SQL("create role {} login").format(sql.Identifier(mine)))
        conn.execute(sql.SQL("grant clinicdb_staff to {}").format(sql.Identifier(mine)))
        conn.execute(sql.SQL("alter role {} password 'x'").format(sql.Identifier(mine)))
        grant_app = sql.SQL("grant clinicdb_app to {}").format(sql.Identifier(mine))
        alter_other = sql.SQL("alter role {} password 'x'").format(sql.Identifier(other))
        if version < 160000:
            conn.execute(grant_app)
            conn.execute(alter_other)
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to grant role"):
                conn.execute(grant_app)
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to alter role"):
                conn.execute(alter_other)
        conn.execute(sql.SQL("revoke clinicdb_staff from {}").format(sql.Identifier(mine)))
        if version < 160000:
            conn.execute(sql.SQL("revoke clinicdb_app from {}").format(sql.Identifier(mine)))
