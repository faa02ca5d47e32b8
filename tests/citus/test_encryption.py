"""Encryption on Citus is not built: it fails closed, never writing plaintext to a shard or its audit rows."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from citus_helpers import scoped

from clinicdb import ClinicDB, encryption
from clinicdb.devcluster.citus import CitusSet

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
    """Writing an encrypted column with no key in force raises on the worker; no plaintext is stored anywhere."""
    a, _ = clinic_pair
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no master key"), scoped(citus.app_url, a) as conn:
        conn.execute(
            "insert into patients (mrn, given_name, family_name, ssn) values ('EN-1', 'Ann', 'Lee', %s)", (SSN,)
        )
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
