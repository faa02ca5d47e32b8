"""Tenant isolation through a Citus coordinator: app, readonly and staff logins see one clinic on every shard."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from citus_helpers import scoped
from psycopg import sql

from clinicdb.devcluster.bootstrap import APP_LOGIN
from clinicdb.devcluster.citus import CitusSet

READONLY_LOGIN = "clinicdb_readonly_user"


def _add_patient(citus: CitusSet, clinic: uuid.UUID, mrn: str) -> None:
    with scoped(citus.app_url, clinic) as conn:
        conn.execute("insert into patients (mrn, given_name, family_name) values (%s, 'Ann', 'Lee')", (mrn,))


def test_every_tenant_table_is_distributed_by_clinic_and_colocated(admin: psycopg.Connection[Any]) -> None:
    """Every protected table outside the layer and the audit trail are hash-distributed by clinic_id in one
    co-location group; the layer's own tables are reference tables."""
    rows = admin.execute(
        """select c.table_name::text, c.citus_table_type, c.distribution_column, c.colocation_id
             from citus_tables c
            where c.table_name::text not like 'clinicdb.audit_log_%'"""
    ).fetchall()
    kinds = {name: (kind, column, colocation) for name, kind, column, colocation in rows}
    distributed = {n for n, (k, _, _) in kinds.items() if k == "distributed"}
    assert distributed == {
        "clinicdb.audit_log",
        "patients",
        "appointments",
        "medical_records",
        "prescriptions",
        "staff",
    }
    assert {kinds[n][1] for n in distributed} == {"clinic_id"}
    assert len({kinds[n][2] for n in distributed}) == 1
    assert kinds["clinicdb.clinics"][0] == "reference"
    assert kinds["clinicdb.staff_members"][0] == "reference"


def test_app_sees_only_its_clinic_on_every_shard(citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """With clinic A in force, a query over every shard returns A's rows and none of B's."""
    a, b = clinic_pair
    _add_patient(citus, a, "A-1")
    _add_patient(citus, b, "B-1")
    with scoped(citus.app_url, a) as conn:
        rows = conn.execute("select mrn, clinic_id from patients").fetchall()
    assert rows == [("A-1", a)]


def test_cross_clinic_read_returns_nothing(citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """Naming another clinic in the filter, with A in force, returns no row of that clinic."""
    a, b = clinic_pair
    _add_patient(citus, b, "B-2")
    with scoped(citus.app_url, a) as conn:
        rows = conn.execute("select mrn from patients where clinic_id = %s", (b,)).fetchall()
    assert rows == []


def test_missing_clinic_reads_nothing_and_writes_fail(
    citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """With no clinic in force, reads return no row and writes raise 'no clinic is in force'."""
    a, _ = clinic_pair
    _add_patient(citus, a, "A-3")
    with scoped(citus.app_url, None) as conn:
        assert conn.execute("select count(*) from patients").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no clinic is in force"):
            conn.execute("insert into patients (mrn, given_name, family_name) values ('X', 'x', 'y')")


def test_set_config_alone_fails_closed_on_the_shards(citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """set_config(..., true) does not reach the workers: the shards see no clinic and show no row, never another
    clinic's."""
    a, _ = clinic_pair
    _add_patient(citus, a, "A-4")
    with psycopg.connect(citus.app_url) as conn:
        conn.execute("select set_config('app.clinic_id', %s, true)", (str(a),))
        assert conn.execute("select count(*) from patients").fetchone() == (0,)


def test_readonly_sees_its_clinic_and_cannot_write(citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """A clinicdb_readonly login reads its clinic's rows and is refused writes."""
    a, b = clinic_pair
    _add_patient(citus, a, "A-5")
    _add_patient(citus, b, "B-5")
    url = citus.login_url(READONLY_LOGIN)
    with scoped(url, a) as conn:
        assert conn.execute("select mrn from patients").fetchall() == [("A-5",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into patients (mrn, given_name, family_name) values ('R', 'r', 'r')")


def test_staff_login_sees_only_its_clinic_whatever_it_sets(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A staff login mapped to A sees A's rows on every shard, and setting app.clinic_id to B changes nothing."""
    a, b = clinic_pair
    _add_patient(citus, a, "A-6")
    _add_patient(citus, b, "B-6")
    login = f"dr_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("create role {} login in role clinicdb_staff").format(sql.Identifier(login)))
    admin.execute("select clinicdb.grant_staff(%s, %s)", (login, a))
    with scoped(citus.login_url(login), b) as conn:
        rows = conn.execute("select mrn from patients").fetchall()
    assert rows == [("A-6",)]


def test_app_login_exists_on_every_node(citus: CitusSet) -> None:
    """The dev logins reach the workers (Citus connects to them as the same user)."""
    for url in citus.worker_admin_urls:
        with psycopg.connect(url) as conn:
            assert conn.execute("select count(*) from pg_roles where rolname = %s", (APP_LOGIN,)).fetchone() == (1,)
