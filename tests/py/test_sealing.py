"""Sealing apart from the trigger (python/clinicdb/sealing.py): the driver's seal_row and open_column on a single
node give exactly what the trigger and the decrypting view give (tests/citus/test_encryption.py covers Citus)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from clinicdb import ClinicDB, encryption
from clinicdb.devcluster.testing import ServerSet
from clinicdb.sealing import open_column, seal_row
from test_keys import SESSION_KEY

SSN = "555-98-7654"


def test_sealed_values_read_back_through_the_view_and_the_blind_index_finds_them(
    servers: ServerSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """seal_row gives the ciphertext of every named column and the blind index only of blind-indexed ones;
    written by the application, they read back through the decrypting view and open_column, and the driver's
    own blind index finds the row."""
    a, _ = clinic_pair
    encryption.ensure_key(servers.admin_url, a, SESSION_KEY)
    row_id = uuid.uuid4()
    with ClinicDB(servers.app_url, [], min_size=1, max_size=1, keyring=encryption.KeyringCache(SESSION_KEY)) as db:
        with db.write(a) as cur:
            sealed = seal_row(cur, "public.patients", row_id, {"ssn": SSN, "phone": None})
            assert set(sealed) == {"ssn_ciphertext", "ssn_blind_index", "phone_ciphertext"}
            assert sealed["phone_ciphertext"] is None
            cur.execute(
                "insert into patients (id, mrn, given_name, family_name, ssn_ciphertext, ssn_blind_index)"
                " values (%s, 'SL-1', 'Ann', 'Lee', %s, %s)",
                (row_id, sealed["ssn_ciphertext"], sealed["ssn_blind_index"]),
            )
        with db.read(a) as cur:
            assert cur.execute("select ssn from patients_decrypted where id = %s", (row_id,)).fetchone() == (SSN,)
            found = cur.execute(
                "select id, ssn_ciphertext from patients where ssn_blind_index = any(%s)",
                (db.blind_index(a, "public.patients", "ssn", SSN),),
            ).fetchall()
            assert open_column(cur, "public.patients", "ssn", found) == [SSN]
            assert open_column(cur, "public.patients", "ssn", []) == []


def test_sealing_refuses_without_a_key_and_for_a_column_that_is_not_encrypted(
    servers: ServerSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """No key in force: seal_row raises instead of returning plaintext or NULL; a plain column is named."""
    a, _ = clinic_pair
    encryption.ensure_key(servers.admin_url, a, SESSION_KEY)
    with ClinicDB(servers.app_url, [], min_size=1, max_size=1) as db:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no master key"), db.write(a) as cur:
            seal_row(cur, "public.patients", uuid.uuid4(), {"ssn": SSN})
        with (
            pytest.raises(psycopg.errors.UndefinedObject, match="given_name is not an encrypted column"),
            db.write(a) as cur,
        ):
            seal_row(cur, "public.patients", uuid.uuid4(), {"given_name": "Ann"})
