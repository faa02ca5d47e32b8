"""An attacker's review of the Citus profile: staff, readonly and app logins on the coordinator and on the workers.

Each test states one guarantee and tries to break it on the throwaway cluster; docs/security-review.md
("Citus") lists what was tried, what broke, and what remains.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from citus_helpers import scoped
from psycopg import sql

from clinicdb._url import replace_url
from clinicdb.citus import distribute
from clinicdb.devcluster.bootstrap import APP_LOGIN
from clinicdb.devcluster.citus import CitusSet

READONLY_LOGIN = "clinicdb_readonly_user"
# What a Citus backend calls itself when it connects to another node: internal functions trust it.
CITUS_INTERNAL_NAME = "citus_internal gpid=10000000001"


def _staff_login(admin: psycopg.Connection[Any], clinic: uuid.UUID) -> str:
    login = f"dr_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("create role {} login in role clinicdb_staff").format(sql.Identifier(login)))
    admin.execute("select clinicdb.grant_staff(%s, %s)", (login, clinic))
    return login


def _add_patient(citus: CitusSet, clinic: uuid.UUID, mrn: str) -> None:
    with scoped(citus.app_url, clinic) as conn:
        conn.execute("insert into patients (mrn, given_name, family_name) values (%s, 'Ann', 'Lee')", (mrn,))


def _shard_of(admin: psycopg.Connection[Any], table: str, clinic: uuid.UUID) -> tuple[str, int]:
    """The shard of ``table`` holding ``clinic``'s rows, and the port of the node that holds it."""
    row = admin.execute(
        """select shard_name(%(t)s::regclass, s.shardid), s.nodeport
             from citus_shards s
            where s.shardid = get_shard_id_for_distribution_column(%(t)s::regclass, %(c)s::uuid)""",
        {"t": table, "c": clinic},
    ).fetchone()
    assert row
    return row[0], row[1]


def _node_url(citus: CitusSet, port: int, login: str) -> str:
    for url in [citus.admin_url, *citus.worker_admin_urls]:
        if psycopg.conninfo.conninfo_to_dict(url).get("port") == str(port):
            return replace_url(url, user=login)
    raise AssertionError(f"no node on port {port}")


@contextmanager
def _rolled_back(url: str, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose transaction is always rolled back: an attack that works leaves nothing behind."""
    with psycopg.connect(url, **kwargs) as conn:
        try:
            yield conn
        finally:
            conn.rollback()


@pytest.fixture
def logins(admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> dict[str, str]:
    """A staff login of clinic A, the app login and the readonly login."""
    return {"staff": _staff_login(admin, clinic_pair[0]), "app": APP_LOGIN, "readonly": READONLY_LOGIN}


@pytest.mark.parametrize("persona", ["staff", "app", "readonly"])
@pytest.mark.parametrize("node", ["coordinator", "worker"])
def test_no_application_login_can_delete_shard_placements(
    citus: CitusSet,
    admin: psycopg.Connection[Any],
    logins: dict[str, str],
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
    persona: str,
    node: str,
) -> None:
    """Calling itself a Citus backend inside a made-up distributed transaction does not let an application
    login delete a shard's placement from the metadata (which would break every query on that shard)."""
    _, port = _shard_of(admin, "patients", clinic_pair[1])
    url = citus.login_url(logins[persona]) if node == "coordinator" else _node_url(citus, port, logins[persona])
    with _rolled_back(url, application_name=CITUS_INTERNAL_NAME) as conn:
        conn.execute("select assign_distributed_transaction_id(1, 4242, now())")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                """select citus_internal.delete_placement_metadata(p.placementid)
                     from pg_dist_placement p
                    where p.shardid = get_shard_id_for_distribution_column('patients', %s::uuid)""",
                (clinic_pair[1],),
            )


@pytest.mark.parametrize("persona", ["staff", "app", "readonly"])
def test_no_application_login_can_register_a_citus_tenant_schema(
    citus: CitusSet, logins: dict[str, str], persona: str
) -> None:
    """An application login cannot write Citus's tenant-schema metadata on any node (no spoofing needed before)."""
    for url in [
        citus.login_url(logins[persona]),
        *(replace_url(u, user=logins[persona]) for u in citus.worker_admin_urls),
    ]:
        with _rolled_back(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select citus_internal.add_tenant_schema('public'::regnamespace, 1)")


def test_no_citus_internal_function_is_executable_by_public_on_any_node(citus: CitusSet) -> None:
    """On every node, none of Citus's internal metadata functions may be executed by PUBLIC."""
    for url in [citus.admin_url, *citus.worker_admin_urls]:
        with psycopg.connect(url) as conn:
            open_to_all = conn.execute(
                r"""select p.oid::regprocedure::text from pg_proc p
                     where (p.pronamespace = to_regnamespace('citus_internal') or p.proname like 'citus\_internal\_%')
                       and has_function_privilege('public', p.oid, 'EXECUTE')"""
            ).fetchall()
        assert open_to_all == [], url


@pytest.mark.parametrize("persona", ["staff", "app"])
def test_reference_table_copies_cannot_be_changed_one_node_at_a_time(
    citus: CitusSet,
    admin: psycopg.Connection[Any],
    logins: dict[str, str],
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
    persona: str,
) -> None:
    """An application login cannot change its clinic's row in one node's copy of a reference table, through
    run_command_on_workers or connected to the worker (the copies would diverge, and no audit row is written)."""
    a, _ = clinic_pair
    shard = admin.execute(
        "select shard_name('clinicdb.clinics'::regclass, shardid) from pg_dist_shard"
        " where logicalrelid = 'clinicdb.clinics'::regclass"
    ).fetchone()
    assert shard
    update = f"update {shard[0]} set name = 'one copy only' where id = '{a}'"
    with scoped(citus.login_url(logins[persona]), a) as conn:
        results = conn.execute("select success, result from run_command_on_workers(%s)", (update,)).fetchall()
    assert results and all(not ok for ok, _ in results), results
    for url in citus.worker_admin_urls:
        with _rolled_back(replace_url(url, user=logins[persona])) as conn:
            conn.execute("select set_config('app.clinic_id', %s, true)", (str(a),))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(update)
    names = admin.execute(
        "select result from run_command_on_all_nodes(%s)", (f"select name from {shard[0]} where id = '{a}'",)
    ).fetchall()
    assert len(names) == 3 and len(set(names)) == 1 and names[0] != ("one copy only",), names


def test_shards_carry_their_tables_forced_rls_policies_and_grants(
    citus: CitusSet, admin: psycopg.Connection[Any]
) -> None:
    """On every worker, each shard of a protected table, of the audit trail and of a reference table has row
    level security enabled and forced, the table's policies, and exactly the table's grants."""
    tables = admin.execute(
        """select d.logicalrelid::text, c.relacl::text,
                  array(select polname::text from pg_policy where polrelid = d.logicalrelid order by 1)
             from pg_dist_partition d join pg_class c on c.oid = d.logicalrelid
            where not c.relispartition
              and (c.relnamespace = 'clinicdb'::regnamespace
                   or d.logicalrelid in (select table_name from clinicdb.protected_tables))"""
    ).fetchall()
    assert len(tables) > 10
    expected = {name: (acl, policies) for name, acl, policies in tables}
    for url in citus.worker_admin_urls:
        with psycopg.connect(url) as conn:
            conn.execute("set citus.override_table_visibility = off")
            shards = conn.execute(
                """select d.logicalrelid::text, c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity,
                          c.relacl::text,
                          array(select polname::text from pg_policy where polrelid = c.oid order by 1)
                     from pg_dist_shard d
                     join pg_class c on c.oid = to_regclass(shard_name(d.logicalrelid, d.shardid))"""
            ).fetchall()
        seen = 0
        for table, shard, rls, forced, acl, policies in shards:
            if table not in expected:
                continue
            seen += 1
            assert (rls, forced) == (True, True), shard
            assert (acl, policies) == expected[table], shard
        assert seen > 32, url


def test_staff_on_a_worker_reads_only_its_clinic_from_shards(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A staff login of clinic A connected to the worker that holds B's shard, naming the shard and setting B
    in every form it can, reads none of B's rows; run_command_on_shards returns only A's."""
    a, b = clinic_pair
    _add_patient(citus, a, "A-atk")
    _add_patient(citus, b, "B-atk")
    login = _staff_login(admin, a)
    shard, port = _shard_of(admin, "patients", b)
    with _rolled_back(_node_url(citus, port, login)) as conn:
        conn.execute("set citus.override_table_visibility = off")
        conn.execute("set citus.show_shards_for_app_name_prefixes = '*'")
        conn.execute("select set_config('app.clinic_id', %s, false)", (str(b),))
        assert conn.execute(f"select count(*) from {shard} where clinic_id = %s", (b,)).fetchone() == (0,)
    with _rolled_back(citus.login_url(login)) as conn:
        conn.execute("set local citus.propagate_set_commands = 'local'")
        conn.execute(f"set local app.clinic_id = '{b}'")
        counts = conn.execute(
            "select result from run_command_on_shards('patients', %s)",
            (f"select count(*) from %s where clinic_id = '{b}'",),
        ).fetchall()
        assert {c for (c,) in counts} == {"0"}
        assert conn.execute("select mrn from patients where clinic_id = %s", (b,)).fetchall() == []


@pytest.mark.parametrize("persona", ["staff", "app", "readonly"])
def test_application_logins_cannot_change_audit_shards_on_a_worker(
    citus: CitusSet,
    admin: psycopg.Connection[Any],
    logins: dict[str, str],
    clinic_pair: tuple[uuid.UUID, uuid.UUID],
    persona: str,
) -> None:
    """Connected to the worker that holds clinic A's audit shard, with A in force, no application login can
    update or delete its audit rows (the trail stays append-only on the shards)."""
    a, _ = clinic_pair
    _add_patient(citus, a, "A-aud")
    shard, port = _shard_of(admin, "clinicdb.audit_log", a)
    for statement in (f"update {shard} set app_user = 'nobody'", f"delete from {shard}", f"truncate {shard}"):
        # As a Citus backend, past Citus's own "cannot modify a shard" guard: only privileges stop it.
        with _rolled_back(_node_url(citus, port, logins[persona]), application_name=CITUS_INTERNAL_NAME) as conn:
            conn.execute("select set_config('app.clinic_id', %s, true)", (str(a),))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_staff_cannot_widen_its_clinic_with_citus_settings(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """Citus settings a staff login may change (set propagation, local execution, task placement, shard
    visibility) leave it reading its own clinic only."""
    a, b = clinic_pair
    _add_patient(citus, a, "A-set")
    _add_patient(citus, b, "B-set")
    login = _staff_login(admin, a)
    with _rolled_back(citus.login_url(login)) as conn:
        for setting, value in [
            ("citus.propagate_set_commands", "local"),
            ("citus.enable_local_execution", "off"),
            ("citus.task_assignment_policy", "round-robin"),
            ("citus.override_table_visibility", "off"),
            ("citus.enable_binary_protocol", "off"),
            ("app.clinic_id", str(b)),
        ]:
            conn.execute(sql.SQL("set local {} = {}").format(sql.Identifier(*setting.split(".")), sql.Literal(value)))
        assert {r[0] for r in conn.execute("select clinic_id from patients").fetchall()} == {a}


def _clinics_on_every_node(citus: CitusSet, login: str) -> list[uuid.UUID | None]:
    """``current_clinic_id()`` for ``login`` on the coordinator and on each worker, connected to each directly."""
    found = []
    for url in [citus.admin_url, *citus.worker_admin_urls]:
        with psycopg.connect(replace_url(url, user=login)) as conn:
            row = conn.execute("select clinicdb.current_clinic_id()").fetchone()
            found.append(row[0] if row else None)
    return found


def _markers_on_every_node(citus: CitusSet, login: str) -> list[list[str]]:
    """The ``clinicdb.staff_grant`` settings ``login`` carries in this database, on each node."""
    found = []
    for url in [citus.admin_url, *citus.worker_admin_urls]:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                """select c.item from pg_db_role_setting s
                     join pg_database d on d.oid = s.setdatabase and d.datname = current_database(),
                          unnest(s.setconfig) c(item)
                    where s.setrole = %s::regrole and c.item like 'clinicdb.staff!_grant=%%' escape '!'""",
                (login,),
            ).fetchall()
            found.append([r[0] for r in rows])
    return found


def _recreate(admin: psycopg.Connection[Any], login: str) -> None:
    """Drop ``login`` without revoke_staff and create a new login of that name in clinicdb_staff, by hand."""
    admin.execute(sql.SQL("drop role {}").format(sql.Identifier(login)))
    admin.execute(sql.SQL("create role {} login in role clinicdb_staff").format(sql.Identifier(login)))


def test_a_recreated_login_does_not_inherit_a_dropped_staff_mapping(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A staff login dropped without revoke_staff and recreated by hand under the same name (a new person) sees
    nothing of the old login's clinic, through the coordinator or connected to any worker, as on a single node."""
    _, b = clinic_pair
    _add_patient(citus, b, "B-old")
    login = _staff_login(admin, b)
    _recreate(admin, login)
    try:
        with scoped(citus.login_url(login), None) as conn:
            assert conn.execute("select count(*) from patients").fetchone() == (0,)
        assert _clinics_on_every_node(citus, login) == [None, None, None]
    finally:
        # The stale mapping would make `clinicdb check` (test_check.py) fail for the rest of the run.
        admin.execute("select clinicdb.revoke_staff(%s)", (login,))


@pytest.mark.parametrize("node", ["coordinator", "worker"])
def test_a_recreated_login_cannot_mark_itself_with_the_dropped_logins_grant(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID], node: str
) -> None:
    """The recreated login reads the stale mapping's oid (its own name's row) and tries to put the marker
    grant_staff would have written on itself, on the coordinator or on a worker: refused, and it still sees no
    clinic anywhere."""
    _, b = clinic_pair
    login = _staff_login(admin, b)
    _recreate(admin, login)
    url = citus.login_url(login) if node == "coordinator" else replace_url(citus.worker_admin_urls[0], user=login)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("select role_oid from clinicdb.staff_members").fetchone()
            assert row is not None, "the login reads its name's stale row"
            for statement in (
                "alter role current_user in database {db} set clinicdb.staff_grant = {oid}",
                "alter role current_user set clinicdb.staff_grant = {oid}",
            ):
                query = sql.SQL(statement).format(db=sql.Identifier(conn.info.dbname), oid=sql.Literal(str(row[0])))
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(query)
            conn.execute(sql.SQL("set clinicdb.staff_grant = {}").format(sql.Literal(str(row[0]))))
            assert conn.execute("select clinicdb.current_clinic_id()").fetchone() == (None,)
        assert _markers_on_every_node(citus, login) == [[], [], []]
        assert _clinics_on_every_node(citus, login) == [None, None, None]
    finally:
        admin.execute("select clinicdb.revoke_staff(%s)", (login,))


def test_grant_staff_marks_the_login_on_every_node_and_revoke_staff_unmarks_it(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """grant_staff puts the login's marker (its grant's role oid) on every node and the login acts for its
    clinic everywhere; revoking one of two clinics keeps it, revoking the last removes it from every node."""
    a, b = clinic_pair
    login = _staff_login(admin, a)
    admin.execute("select clinicdb.grant_staff(%s, %s)", (login, b))
    row = admin.execute("select %s::regrole::oid", (login,)).fetchone()
    assert row is not None
    marker = [f"clinicdb.staff_grant={row[0]}"]
    assert _markers_on_every_node(citus, login) == [marker, marker, marker]
    admin.execute("select clinicdb.revoke_staff(%s, %s)", (login, b))
    assert _markers_on_every_node(citus, login) == [marker, marker, marker]
    assert _clinics_on_every_node(citus, login) == [a, a, a]
    admin.execute("select clinicdb.revoke_staff(%s)", (login,))
    assert _markers_on_every_node(citus, login) == [[], [], []]


# _citus_staff_clinic_id() as migration 0030 left it on a worker: staff by role name alone.
_NAME_ONLY_STAFF_CLINIC = """
create or replace function clinicdb._citus_staff_clinic_id() returns uuid language plpgsql stable parallel safe
set search_path = pg_catalog, pg_temp set citus.allow_nested_distributed_execution = on as $$
begin
    if not pg_has_role(current_user, 'clinicdb_staff', 'MEMBER') then
        return null;
    end if;
    return (select min(sm.clinic_id::text)::uuid from clinicdb.staff_members sm where sm.role_name = current_user);
end
$$"""


def test_migrate_marks_mappings_granted_before_the_marker_but_not_stale_ones(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A cluster upgraded from before migration 0044 (a mapping with no marker, a recreated login, a worker still
    matching staff by name): the profile `clinicdb migrate` runs marks the login whose mapping is its own and
    updates every node, so the first keeps its clinic and the recreated login loses the dropped one's."""
    a, b = clinic_pair
    kept, recreated = _staff_login(admin, a), _staff_login(admin, b)
    _recreate(admin, recreated)
    admin.execute(
        sql.SQL("alter role {} in database {} reset clinicdb.staff_grant").format(
            sql.Identifier(kept), sql.Identifier(admin.info.dbname)
        )
    )
    try:
        with psycopg.connect(citus.worker_admin_urls[0], autocommit=True) as worker:
            worker.execute("set citus.enable_ddl_propagation = off")
            worker.execute(_NAME_ONLY_STAFF_CLINIC)
        assert _clinics_on_every_node(citus, recreated)[1] == b, "the worker matches by name, as before 0044"
        assert _clinics_on_every_node(citus, kept) == [None, a, None], "unmarked, as before 0044"
        distribute(citus.admin_url)
        assert _clinics_on_every_node(citus, kept) == [a, a, a]
        assert _clinics_on_every_node(citus, recreated) == [None, None, None]
    finally:
        admin.execute("call clinicdb.citus_mark_staff()")
        for login in (kept, recreated):
            admin.execute("select clinicdb.revoke_staff(%s)", (login,))


def test_app_writes_made_directly_on_a_worker_shard_are_audited(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """The app connected to the worker that holds its clinic's shard, writing the shard table by name (as a Citus
    backend, past Citus's own guard), leaves one audit row per changed row, as through the coordinator."""
    a, _ = clinic_pair
    _add_patient(citus, a, "A-direct")
    shard, port = _shard_of(admin, "patients", a)
    before = admin.execute("select count(*) from clinicdb.audit_log where clinic_id = %s", (a,)).fetchone()
    with psycopg.connect(_node_url(citus, port, APP_LOGIN), application_name=CITUS_INTERNAL_NAME) as conn:
        conn.execute("select set_config('app.clinic_id', %s, true)", (str(a),))
        assert conn.execute(f"update {shard} set given_name = 'Direct' where mrn = 'A-direct'").rowcount == 1
        conn.execute(
            f"insert into {shard} (clinic_id, mrn, given_name, family_name) values (%s, 'A-d2', 'x', 'y')", (a,)
        )
    after = admin.execute("select count(*) from clinicdb.audit_log where clinic_id = %s", (a,)).fetchone()
    assert before and after and after[0] - before[0] == 2
