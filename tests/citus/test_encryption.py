"""Encryption on Citus: values are sealed and opened on the coordinator, the shards hold ciphertext only.

The write trigger and the decrypting views run on the workers, which never
hold a key: writing plaintext into an encrypted column, or reading a view,
fails closed. Sealing (``clinicdb.sealing.seal_row``) and opening
(``open_column``) run in statements that name no table, so Citus runs them on
the coordinator where the driver's keyring (or the master key) is in force.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from citus_helpers import scoped

from clinicdb import AsyncClinicDB, ClinicDB, encryption
from clinicdb.devcluster.citus import CitusSet
from clinicdb.keys import set_master_key
from clinicdb.sealing import open_column, open_column_async, seal_row, seal_row_async

SSN = "987-65-4321"


def _plaintext_anywhere(admin: psycopg.Connection[Any], clinic: uuid.UUID) -> tuple[int, int]:
    rows = admin.execute("select count(*) from patients where clinic_id = %s and ssn like %s", (clinic, f"%{SSN}%"))
    audit = admin.execute(
        "select count(*) from clinicdb.audit_log where clinic_id = %s and new_values::text like %s",
        (clinic, f"%{SSN}%"),
    )
    return int(rows.fetchone()[0]), int(audit.fetchone()[0])  # type: ignore[index]


def test_encrypted_column_write_without_a_key_is_refused_on_the_shard(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """Writing plaintext into an encrypted column raises on the worker (no key is ever there), with a hint naming
    what works on Citus; no plaintext is stored anywhere."""
    a, _ = clinic_pair
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="no master key") as refused,
        scoped(citus.app_url, a) as conn,
    ):
        conn.execute(
            "insert into patients (mrn, given_name, family_name, ssn) values ('EN-1', 'Ann', 'Lee', %s)", (SSN,)
        )
    # The application may well have sent its key (to the coordinator): the hint says what works on Citus.
    assert "clinicdb.sealing.seal_row" in (refused.value.diag.message_hint or "")
    assert _plaintext_anywhere(admin, a) == (0, 0)


def test_driver_keyring_does_not_reach_the_workers_and_the_write_fails_closed(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """The driver's keyring travels by set_config, which Citus does not propagate (and keys must never travel as
    SQL text): the worker's trigger finds no key and refuses the write; no plaintext is stored anywhere."""
    a, _ = clinic_pair
    master = master_key
    encryption.ensure_key(citus.admin_url, a, master)
    keyring = encryption.KeyringCache(master)
    with (
        ClinicDB(citus.app_url, [], min_size=1, max_size=1, keyring=keyring) as db,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="no master key"),
        db.write(a) as cur,
    ):
        cur.execute(
            "insert into patients (mrn, given_name, family_name, ssn) values ('EN-2', 'Ann', 'Lee', %s)", (SSN,)
        )
    assert _plaintext_anywhere(admin, a) == (0, 0)


def _insert_sealed(cur: psycopg.Cursor[Any], clinic: uuid.UUID, row_id: uuid.UUID, mrn: str, ssn: str) -> None:
    sealed = seal_row(cur, "public.patients", row_id, {"ssn": ssn, "phone": "+1 555 0100"})
    cur.execute(
        "insert into patients (id, clinic_id, mrn, given_name, family_name, ssn_ciphertext, ssn_blind_index,"
        " phone_ciphertext) values (%s, %s, %s, 'Ann', 'Lee', %s, %s, %s)",
        (row_id, clinic, mrn, sealed["ssn_ciphertext"], sealed["ssn_blind_index"], sealed["phone_ciphertext"]),
    )


def test_values_sealed_on_the_coordinator_round_trip_and_shards_hold_ciphertext_only(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """Through the driver with a keyring: a value sealed on the coordinator is written, found by its blind
    index, updated, and opened again; the shard and its audit rows hold ciphertext only."""
    a, _ = clinic_pair
    encryption.ensure_key(citus.admin_url, a, master_key)
    row_id = uuid.uuid4()
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1, keyring=encryption.KeyringCache(master_key)) as db:
        with db.write(a) as cur:
            _insert_sealed(cur, a, row_id, "SE-1", SSN)
        lookup = db.blind_index(a, "public.patients", "ssn", SSN)
        with db.read(a) as cur:
            found = cur.execute(
                "select id, ssn_ciphertext from patients where clinic_id = %s and ssn_blind_index = any(%s)",
                (a, lookup),
            ).fetchall()
            assert [r[0] for r in found] == [row_id]
            assert open_column(cur, "public.patients", "ssn", found) == [SSN]
        with db.write(a) as cur:
            sealed = seal_row(cur, "public.patients", row_id, {"ssn": "555-44-3333"})
            cur.execute(
                "update patients set ssn_ciphertext = %s, ssn_blind_index = %s where clinic_id = %s and id = %s",
                (sealed["ssn_ciphertext"], sealed["ssn_blind_index"], a, row_id),
            )
        with db.read(a) as cur:
            rows = cur.execute("select id, ssn_ciphertext from patients where clinic_id = %s", (a,)).fetchall()
            assert open_column(cur, "public.patients", "ssn", rows) == ["555-44-3333"]
            rows = cur.execute("select id, phone_ciphertext from patients where clinic_id = %s", (a,)).fetchall()
            assert open_column(cur, "public.patients", "phone", rows) == ["+1 555 0100"]
    assert _plaintext_anywhere(admin, a) == (0, 0)
    audited = admin.execute(
        "select count(*) from clinicdb.audit_log where clinic_id = %s and table_name = 'public.patients'"
        " and new_values ? 'ssn_ciphertext'",
        (a,),
    ).fetchone()
    assert audited == (2,), "the insert and the update were not audited with their ciphertext"


def test_sealing_with_the_master_key_in_force_and_opening_under_another_clinic_fails(
    citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """Without the driver: the master key as a bind parameter on the coordinator seals and opens; the same
    ciphertext opened in another clinic's transaction fails its integrity check instead of decrypting."""
    a, b = clinic_pair
    encryption.ensure_key(citus.admin_url, a, master_key)
    encryption.ensure_key(citus.admin_url, b, master_key)
    row_id = uuid.uuid4()
    with scoped(citus.app_url, a) as conn:
        set_master_key(conn, master_key)
        with conn.cursor() as cur:
            _insert_sealed(cur, a, row_id, "SE-2", SSN)
    with scoped(citus.app_url, a) as conn:
        set_master_key(conn, master_key)
        with conn.cursor() as cur:
            rows = cur.execute("select id, ssn_ciphertext from patients where id = %s", (row_id,)).fetchall()
            assert open_column(cur, "public.patients", "ssn", rows) == [SSN]
    with scoped(citus.app_url, b) as conn:
        set_master_key(conn, master_key)
        with conn.cursor() as cur, pytest.raises(psycopg.errors.DataCorrupted):
            open_column(cur, "public.patients", "ssn", rows)


def test_async_driver_seals_and_opens_on_the_coordinator(
    citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """AsyncClinicDB with a keyring does the same round trip."""
    a, _ = clinic_pair
    encryption.ensure_key(citus.admin_url, a, master_key)
    row_id = uuid.uuid4()

    async def main() -> list[str | None]:
        async with AsyncClinicDB(
            citus.app_url, [], min_size=1, max_size=1, keyring=encryption.KeyringCache(master_key)
        ) as db:
            async with db.write(a) as cur:
                sealed = await seal_row_async(cur, "public.patients", row_id, {"ssn": SSN})
                await cur.execute(
                    "insert into patients (id, clinic_id, mrn, given_name, family_name, ssn_ciphertext,"
                    " ssn_blind_index) values (%s, %s, 'SE-3', 'Ann', 'Lee', %s, %s)",
                    (row_id, a, sealed["ssn_ciphertext"], sealed["ssn_blind_index"]),
                )
            async with db.read(a) as cur:
                await cur.execute("select id, ssn_ciphertext from patients where clinic_id = %s", (a,))
                return await open_column_async(cur, "public.patients", "ssn", await cur.fetchall())

    assert asyncio.run(main()) == [SSN]


def test_the_decrypting_view_fails_closed_on_the_workers(
    citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """The view runs on the shard, where no key is: reading an encrypted column through it raises, never
    returning plaintext, NULL or another clinic's value (open_column is the Citus read)."""
    a, _ = clinic_pair
    encryption.ensure_key(citus.admin_url, a, master_key)
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1, keyring=encryption.KeyringCache(master_key)) as db:
        with db.write(a) as cur:
            _insert_sealed(cur, a, uuid.uuid4(), "SE-4", SSN)
        with pytest.raises(psycopg.Error), db.read(a) as cur:
            cur.execute("select ssn from patients_decrypted where clinic_id = %s", (a,))
