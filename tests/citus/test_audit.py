"""The audit trail on Citus: written on the shard next to the change, one row per change, never one per node."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from citus_helpers import scoped

from clinicdb.devcluster.citus import CitusSet


def _trail(admin: psycopg.Connection[Any], clinic: uuid.UUID) -> list[tuple[str, str, str | None]]:
    rows = admin.execute(
        "select table_name, action, app_user from clinicdb.audit_log where clinic_id = %s order by id", (clinic,)
    ).fetchall()
    return [(str(t), str(a), u) for t, a, u in rows]


def test_every_committed_change_has_its_audit_row(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """An insert, an update and a delete committed through the coordinator leave one audit row each, with the
    app user propagated to the shard."""
    a, _ = clinic_pair
    with scoped(citus.app_url, a, user_id="u-1") as conn:
        conn.execute("insert into patients (mrn, given_name, family_name) values ('AU-1', 'Ann', 'Lee')")
        conn.execute("update patients set given_name = 'Anna' where mrn = 'AU-1'")
        conn.execute("delete from patients where mrn = 'AU-1'")
    assert _trail(admin, a)[-3:] == [
        ("public.patients", "insert", "u-1"),
        ("public.patients", "update", "u-1"),
        ("public.patients", "delete", "u-1"),
    ]


def test_rolled_back_change_leaves_no_audit_row(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """The audit row is written in the change's own distributed transaction: a rollback removes both."""
    a, _ = clinic_pair
    before = _trail(admin, a)
    with psycopg.connect(citus.app_url) as conn:
        from clinicdb.citus import clinic_context_statements

        for statement in clinic_context_statements(a):
            conn.execute(statement)
        conn.execute("insert into patients (mrn, given_name, family_name) values ('AU-2', 'Ann', 'Lee')")
        conn.rollback()
    assert _trail(admin, a) == before


def test_audit_row_lives_on_the_shard_of_its_clinic(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A clinic's audit rows are on the same node as its patients (co-located shards)."""
    a, _ = clinic_pair
    with scoped(citus.app_url, a) as conn:
        conn.execute("insert into patients (mrn, given_name, family_name) values ('AU-3', 'Ann', 'Lee')")
    nodes = admin.execute(
        """select get_shard_id_for_distribution_column('patients', %s::uuid),
                  get_shard_id_for_distribution_column('clinicdb.audit_log', %s::uuid)""",
        (a, a),
    ).fetchone()
    assert nodes
    placement = admin.execute(
        "select nodeport from pg_dist_shard_placement where shardid = any(%s) group by nodeport",
        ([nodes[0], nodes[1]],),
    ).fetchall()
    assert len(placement) == 1


def test_reference_table_change_is_audited_once_not_once_per_node(admin: psycopg.Connection[Any]) -> None:
    """Creating a clinic (a reference table, copied to every node) writes exactly one audit row."""
    clinic = admin.execute("select clinicdb.create_clinic(%s)", (f"R {uuid.uuid4()}",)).fetchone()
    assert clinic
    assert _trail(admin, clinic[0]) == [("clinicdb.clinics", "insert", None)]
    admin.execute("update clinicdb.clinics set name = name || ' renamed' where id = %s", (clinic[0],))
    assert _trail(admin, clinic[0]) == [("clinicdb.clinics", "insert", None), ("clinicdb.clinics", "update", None)]


def test_a_changed_audit_setting_takes_effect_and_keeps_every_write_audited(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """set_audit_column on the distributed coordinator (mask, then include again): the setting is recorded, the
    next audit rows follow it, and writes keep their row-level audit capture (statement-level triggers cannot run
    on shards)."""
    a, _ = clinic_pair

    def audited_family_name(mrn: str) -> object:
        with scoped(citus.app_url, a) as conn:
            conn.execute("insert into patients (mrn, given_name, family_name) values (%s, 'Ann', 'Secret')", (mrn,))
        row = admin.execute(
            "select new_values -> 'family_name' from clinicdb.audit_log"
            " where clinic_id = %s and table_name = 'public.patients' and new_values ->> 'mrn' = %s",
            (a, mrn),
        ).fetchone()
        assert row, f"the insert of {mrn} left no audit row"
        return row[0]

    try:
        admin.execute("select clinicdb.set_audit_column('public.patients', 'family_name', 'mask')")
        admin.execute("select clinicdb.set_audit_column('public.patients', 'family_name', 'mask')")  # again: DO UPDATE
        assert admin.execute(
            "select mode from clinicdb.audit_settings"
            " where table_name = 'public.patients'::regclass and column_name = 'family_name'"
        ).fetchone() == ("mask",)
        assert audited_family_name("AS-1") == "[masked]"
    finally:
        admin.execute("select clinicdb.set_audit_column('public.patients', 'family_name', 'include')")
    assert audited_family_name("AS-2") == "Secret"
