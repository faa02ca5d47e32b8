"""Key material never reaches any Citus node's log, even with every statement and every bound parameter logged.

The nodes run with ``log_statement = all``, ``log_min_error_statement = error``
and ``log_parameter_max_length(_on_error) = -1`` in ``postgresql.conf``
(conftest); the database's settings (0005, 0041) turn the last two off. Each key path
that exists there (the keys made, loaded and put in force; values sealed and
opened on the coordinator; the refused trigger write) runs through the driver
and the library, asserted on the whole log of every node afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from citus_helpers import key_material, log_offsets, logged_since

from clinicdb import ClinicDB, encryption
from clinicdb.devcluster.citus import CitusSet
from clinicdb.keys import set_master_key
from clinicdb.sealing import open_column, seal_row

SSN = "123-45-6789"


def test_no_key_material_in_any_node_log(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """Creating and rotating a clinic's keys, loading its keyring, the driver's refused encrypted write and its
    reads through the decrypting view, and an app's own master-key transaction leave the master key, the keyring
    and every data key out of the coordinator's and every worker's log, while the statements themselves are
    logged."""
    a, _ = clinic_pair
    master = master_key
    offsets = log_offsets(citus)
    encryption.ensure_key(citus.admin_url, a, master)
    encryption.rotate(citus.admin_url, a, master)
    keyring = encryption.KeyringCache(master)
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1, keyring=keyring) as db:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no master key"), db.write(a) as cur:
            cur.execute(
                "insert into patients (mrn, given_name, family_name, ssn) values ('KL-1', 'Ann', 'Lee', %s)", (SSN,)
            )
        with db.read(a) as cur:
            cur.execute("select mrn from patients where clinic_id = %s", (a,))
        assert db.blind_index(a, "public.patients", "ssn", SSN)
        with db.read(a) as cur:  # the decrypting view on the shard finds no keyring there: no row, no key
            cur.execute(
                "select ssn from patients_decrypted where clinic_id = %s and ssn_blind_index = any(%s)",
                (a, db.blind_index(a, "public.patients", "ssn", SSN)),
            )
            assert cur.fetchall() == []
    with (
        psycopg.connect(citus.app_url) as app,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        app.transaction(),
    ):
        app.execute(
            "select set_config('citus.propagate_set_commands', 'local', true), set_config('app.clinic_id', %s, true)",
            (str(a),),
        )
        app.execute(f"set local app.clinic_id = '{a}'")
        set_master_key(app, master)
        app.execute(
            "insert into patients (mrn, given_name, family_name, ssn) values ('KL-2', 'Ann', 'Lee', %s)", (SSN,)
        )
    logged = logged_since(offsets)
    secrets = key_material(master, keyring.keyring(a))
    coordinator = logged[citus.log_files()[0]]
    # The statements that carried keys were logged (their keys were bound parameters, never text):
    assert "select clinicdb.export_keyring()" in coordinator, "loading the keyring was not logged"
    assert "execute clinicdb_open_1" in coordinator, "the driver's opening with the keyring was not logged"
    assert all("statement:" in text or "execute" in text for text in logged.values()), "a node logged nothing"
    # The nodes' postgresql.conf logs every bound parameter; the database's own settings (0005 on the
    # coordinator, 0041 on the workers) win, so none is logged anywhere:
    assert not any("DETAIL:  parameters:" in text for text in logged.values()), "bound parameters were logged"
    for log, text in logged.items():
        leaked = [s[:6] + "..." for s in secrets if s in text]
        assert not leaked, f"{log}: key material in the log ({len(leaked)} values)"


def test_a_sealed_round_trip_leaves_no_key_and_no_plaintext_in_any_node_log(
    citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """Values sealed and opened on the coordinator (the Citus write and read path): with every statement logged
    on every node, no node's log holds the master key, the keyring, a data key or the plaintext itself; the
    workers' logs show the writes, with ciphertext in them."""
    a, _ = clinic_pair
    plaintext = "SEALED-" + uuid.uuid4().hex
    encryption.ensure_key(citus.admin_url, a, master_key)
    keyring = encryption.KeyringCache(master_key)
    offsets = log_offsets(citus)
    row_id = uuid.uuid4()
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1, keyring=keyring) as db:
        with db.write(a) as cur:
            sealed = seal_row(cur, "public.patients", row_id, {"ssn": plaintext})
            cur.execute(
                "insert into patients (id, clinic_id, mrn, given_name, family_name, ssn_ciphertext, ssn_blind_index)"
                " values (%s, %s, 'KL-3', 'Ann', 'Lee', %s, %s)",
                (row_id, a, sealed["ssn_ciphertext"], sealed["ssn_blind_index"]),
            )
        with db.read(a) as cur:
            rows = cur.execute(
                "select id, ssn_ciphertext from patients where clinic_id = %s and ssn_blind_index = any(%s)",
                (a, db.blind_index(a, "public.patients", "ssn", plaintext)),
            ).fetchall()
            assert open_column(cur, "public.patients", "ssn", rows) == [plaintext]
    logged = logged_since(offsets)
    assert "clinicdb.seal_values" in logged[citus.log_files()[0]], "the coordinator did not log the sealing"
    assert any("insert into" in text.lower() for log, text in logged.items() if log != citus.log_files()[0]), (
        "no worker logged the shard's insert"
    )
    for log, text in logged.items():
        leaked = [s[:6] + "..." for s in [*key_material(master_key, keyring.keyring(a)), plaintext] if s in text]
        assert not leaked, f"{log}: key material or plaintext in the log ({len(leaked)} values)"
