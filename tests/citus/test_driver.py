"""The driver on a Citus coordinator: its opening puts the clinic in force on every shard, in one flight."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from clinicdb import AsyncClinicDB, ClinicDB
from clinicdb.devcluster.citus import CitusSet

NASTY = "o'brien\\'; select 1; -- \\x27 é"


def _seed(citus: CitusSet, clinic: uuid.UUID, mrn: str) -> None:
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1) as db, db.write(clinic) as cur:
        cur.execute("insert into patients (mrn, given_name, family_name) values (%s, 'Ann', 'Lee')", (mrn,))


def test_driver_finds_citus_and_reads_only_its_clinic(
    citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """db.write then db.read through the coordinator: each clinic sees its own rows on every shard, none of the
    other's (the driver detected Citus by itself)."""
    a, b = clinic_pair
    _seed(citus, a, "DA-1")
    _seed(citus, b, "DB-1")
    with ClinicDB(citus.app_url, [], min_size=1, max_size=2) as db:
        with db.read(a) as cur:
            assert cur.execute("select mrn from patients").fetchall() == [("DA-1",)]
        with db.read(b) as cur:
            assert cur.execute("select mrn from patients").fetchall() == [("DB-1",)]
        with db.read(a) as cur:  # the app's pruning filter
            assert cur.execute("select mrn from patients where clinic_id = %s", (a,)).fetchall() == [("DA-1",)]


def test_driver_cross_clinic_read_returns_nothing(citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """With clinic A's scope, filtering on clinic B (B's shard) returns no row, prepared or not."""
    a, b = clinic_pair
    _seed(citus, b, "DB-2")
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1) as db:
        for _ in range(7):  # past psycopg's prepare_threshold: the prepared plan is isolated too
            with db.read(a) as cur:
                assert cur.execute("select mrn from patients where clinic_id = %s", (b,)).fetchall() == []


def test_driver_forced_off_on_citus_fails_closed(citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """citus=False on a Citus database (set_config only): the workers see no clinic, so reads return nothing and
    writes are refused; never another clinic's rows."""
    a, _ = clinic_pair
    _seed(citus, a, "DA-3")
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1, citus=False) as db:
        with db.read(a) as cur:
            assert cur.execute("select count(*) from patients").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.write(a) as cur:
            cur.execute("insert into patients (mrn, given_name, family_name) values ('X', 'x', 'y')")


def test_user_and_request_ids_reach_the_shard_verbatim_never_as_sql(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A user id and request id full of quotes, backslashes and semicolons land in the shard's audit row exactly as
    given: they are literals in the SET LOCAL text, never SQL."""
    a, _ = clinic_pair
    request = f"req-{uuid.uuid4()}'\\"
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1) as db:
        with db.write(a, user_id=NASTY, request_id=request) as cur:
            cur.execute("insert into patients (mrn, given_name, family_name) values ('DA-4', 'Ann', 'Lee')")
        with db.read(a, user_id=NASTY) as cur:
            assert cur.execute("select current_setting('app.user_id')").fetchone() == (NASTY,)
    row = admin.execute(
        "select app_user, request_id from clinicdb.audit_log where clinic_id = %s and request_id = %s", (a, request)
    ).fetchone()
    assert row == (NASTY, request)


def test_settle_finds_a_committed_write_on_citus(citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """db.settle answers from the clinic's shard of the audit trail: True for a committed write, False for none."""
    a, b = clinic_pair
    request = f"settle-{uuid.uuid4()}"
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1) as db:
        with db.write(a, request_id=request) as cur:
            cur.execute("insert into patients (mrn, given_name, family_name) values ('DA-5', 'Ann', 'Lee')")
        assert db.settle(request, a) is True
        assert db.settle(request, b) is False
        assert db.settle(f"never-{uuid.uuid4()}", a) is False


def test_async_driver_reads_only_its_clinic(citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """AsyncClinicDB does the same: each clinic reads its own rows on every shard."""
    a, b = clinic_pair
    _seed(citus, a, "DA-6")
    _seed(citus, b, "DB-6")

    async def main() -> tuple[list[Any], list[Any]]:
        async with AsyncClinicDB(citus.app_url, [], min_size=1, max_size=1) as db:
            async with db.read(a) as cur:
                await cur.execute("select mrn from patients")
                mine = await cur.fetchall()
            async with db.read(a) as cur:
                await cur.execute("select mrn from patients where clinic_id = %s", (b,))
                theirs = await cur.fetchall()
        return mine, theirs

    assert asyncio.run(main()) == ([("DA-6",)], [])
