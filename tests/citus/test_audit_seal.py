"""Sealing and verifying the audit trail on Citus: one chain per clinic, tamper evidence on the shards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from citus_helpers import align_txid_counters, run_clinicdb, scoped

from clinicdb.devcluster.citus import CitusSet


@contextmanager
def _on_shard(citus: CitusSet, admin: psycopg.Connection[Any], clinic: uuid.UUID) -> Iterator[tuple[Any, str]]:
    """A superuser connection to the worker holding ``clinic``'s audit shard, with triggers off, and the shard."""
    port, shard = admin.execute(
        """select p.nodeport, shard_name('clinicdb.audit_log', p.shardid)
             from pg_dist_shard_placement p
            where p.shardid = get_shard_id_for_distribution_column('clinicdb.audit_log', %s::uuid)""",
        (clinic,),
    ).fetchone() or (None, None)
    url = next(u for u in citus.worker_admin_urls if f":{port}/" in u)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")  # the append-only guard is a trigger
        yield conn, str(shard)


def _write_and_seal(citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> str:
    a, b = clinic_pair
    for clinic, mrn in ((a, "SA-1"), (b, "SB-1")):
        with scoped(citus.app_url, clinic, user_id="sealer-test") as conn:
            conn.execute("insert into patients (mrn, given_name, family_name) values (%s, 'Ann', 'Lee')", (mrn,))
            conn.execute("update patients set given_name = 'Anna' where mrn = %s", (mrn,))
    align_txid_counters(citus)
    done = run_clinicdb("audit", "seal", "--all", "--database-url", citus.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_seal_makes_one_chain_per_clinic_and_verify_passes(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """`clinicdb audit seal` on the coordinator seals each clinic's audit rows (on its own shard) into that
    clinic's chain, and `clinicdb audit verify` recomputes every chain and row: exit 0."""
    a, b = clinic_pair
    out = _write_and_seal(citus, clinic_pair)
    assert f"chain {a}:" in out and f"chain {b}:" in out
    sealed = admin.execute(
        "select s.clinic_id, sum(s.row_count) from clinicdb.audit_seals s where s.clinic_id = any(%s)"
        " group by s.clinic_id",
        ([a, b],),
    ).fetchall()
    # per clinic: the clinic's creation (written by the coordinator) and the insert and update (by its worker)
    assert dict(sealed) == {a: 3, b: 3}
    done = run_clinicdb("audit", "verify", "--database-url", citus.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok:")


def test_verify_names_a_row_altered_on_a_worker_shard(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A sealed audit row changed directly on the worker that holds it (triggers off, as a superuser there) is
    reported as altered, with its clinic's chain, and verify exits 1; put back, the trail verifies again."""
    a, _ = clinic_pair
    _write_and_seal(citus, clinic_pair)
    audit_id = admin.execute(
        "select id from clinicdb.audit_log where clinic_id = %s and table_name = 'public.patients' order by id limit 1",
        (a,),
    ).fetchone()
    assert audit_id
    with _on_shard(citus, admin, a) as (conn, shard):
        conn.execute(f"update {shard} set app_user = 'someone else' where id = %s", (audit_id[0],))
        try:
            done = run_clinicdb("audit", "verify", "--database-url", citus.admin_url)
        finally:
            conn.execute(f"update {shard} set app_user = 'sealer-test' where id = %s", (audit_id[0],))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"row altered: audit row {audit_id[0]} " in done.stdout
    assert f"of clinic {a} sealed" in done.stdout
    again = run_clinicdb("audit", "verify", "--database-url", citus.admin_url)
    assert again.returncode == 0, again.stdout + again.stderr


def test_verify_names_a_sealed_row_deleted_on_a_worker_shard(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A sealed audit row deleted on its worker is reported as deleted; put back, the trail verifies again."""
    a, _ = clinic_pair
    _write_and_seal(citus, clinic_pair)
    with _on_shard(citus, admin, a) as (conn, shard):
        conn.execute(
            f"create temp table gone as select * from {shard} where id = (select max(id) from {shard}"
            " where clinic_id = %s)",
            (a,),
        )
        row = conn.execute(f"delete from {shard} where id = (select id from gone) returning id").fetchone()
        assert row
        try:
            done = run_clinicdb("audit", "verify", "--database-url", citus.admin_url)
        finally:
            conn.execute(f"insert into {shard} select * from gone")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"row deleted: audit row {row[0]} " in done.stdout
    again = run_clinicdb("audit", "verify", "--database-url", citus.admin_url)
    assert again.returncode == 0, again.stdout + again.stderr


def test_audit_profile_undoes_exactly_and_reapplies(admin: psycopg.Connection[Any]) -> None:
    """Undoing the profile (what rolling back 0031 does) restores every rewritten function to its single-node text,
    and applying it again gives back the same Citus text (idempotent)."""
    rewritten = (
        "select string_agg(pg_get_functiondef(r.fn), '' order by r.fn::text) from"
        " (select distinct fn from clinicdb._citus_audit_rewrites()) r"
    )
    on_citus = admin.execute(rewritten).fetchone()
    assert on_citus and "clinicdb._citus_audit_trail()" in on_citus[0]
    try:
        admin.execute("call clinicdb.citus_audit_profile(true)")
        single = admin.execute(rewritten).fetchone()
        assert single and "_citus_audit" not in single[0]
    finally:
        admin.execute("call clinicdb.citus_audit_profile()")
        admin.execute("call clinicdb.citus_audit_profile()")
    assert admin.execute(rewritten).fetchone() == on_citus
