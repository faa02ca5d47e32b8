"""`clinicdb keys reencrypt` on a Citus coordinator: values opened and sealed again on the coordinator.

The workers never hold a key, so the SQL re-encryption of a single node
(which decrypts and encrypts on the rows) would fail closed there. On Citus
the command reads each batch's row keys and ciphertexts from the shards,
opens and seals them again in one statement that names no table (so it runs
on the coordinator, where the master key is a bind parameter), and writes
the new ciphertext and blind index back by clinic and row key, only where
the row still holds what it read.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from typing import Any

import psycopg
from citus_helpers import key_material, log_offsets, logged_since, run_clinicdb, scoped

from clinicdb import encryption
from clinicdb.citus import clinic_context_statements
from clinicdb.devcluster.citus import CitusSet
from clinicdb.keys import set_master_key
from clinicdb.sealing import open_column, seal_row

TABLE = "public.patients"


def _seed(citus: CitusSet, clinic: uuid.UUID, master_key: str, count: int) -> dict[uuid.UUID, tuple[str, str]]:
    """``count`` patients of ``clinic`` sealed under its active key version: row key -> (ssn, phone)."""
    values = {uuid.uuid4(): (f"RE-{uuid.uuid4().hex[:12]}", f"PH-{uuid.uuid4().hex[:12]}") for _ in range(count)}
    with scoped(citus.app_url, clinic) as conn:
        set_master_key(conn, master_key)
        with conn.cursor() as cur:
            for i, (row_id, (ssn, phone)) in enumerate(values.items()):
                sealed = seal_row(cur, TABLE, row_id, {"ssn": ssn, "phone": phone})
                cur.execute(
                    "insert into patients (id, clinic_id, mrn, given_name, family_name, ssn_ciphertext,"
                    " ssn_blind_index, phone_ciphertext) values (%s, %s, %s, 'Ann', 'Lee', %s, %s, %s)",
                    (row_id, clinic, f"RE-{i}", sealed["ssn_ciphertext"], sealed["ssn_blind_index"],
                     sealed["phone_ciphertext"]),
                )  # fmt: skip
    return values


def _stored(admin: psycopg.Connection[Any], clinic: uuid.UUID) -> dict[uuid.UUID, tuple[bytes, bytes, bytes]]:
    rows = admin.execute(
        "select id, ssn_ciphertext, ssn_blind_index, phone_ciphertext from patients where clinic_id = %s", (clinic,)
    ).fetchall()
    return {r[0]: (bytes(r[1]), bytes(r[2]), bytes(r[3])) for r in rows}


def _versions(admin: psycopg.Connection[Any], clinic: uuid.UUID) -> set[tuple[int, int]]:
    rows = admin.execute(
        "select distinct clinicdb.key_version(ssn_ciphertext), clinicdb.key_version(phone_ciphertext)"
        "  from patients where clinic_id = %s",
        (clinic,),
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


def _opened(
    citus: CitusSet, clinic: uuid.UUID, master_key: str, *, reencrypted: bool = True
) -> dict[uuid.UUID, tuple[str, str]]:
    """Every patient of the clinic opened through the driver's path (open_column) with a keyring; when
    ``reencrypted``, each stored blind index is also the one a write under the active version stores."""
    keyring = encryption.KeyringCache(master_key)
    with psycopg.connect(citus.app_url) as conn:
        keyring.load(conn, clinic)
    with scoped(citus.app_url, clinic) as conn:
        conn.execute("select set_config(%s, %s, true)", (encryption.KEYRING_SETTING, keyring.keyring(clinic)))
        with conn.cursor() as cur:
            rows = cur.execute(
                "select id, ssn_ciphertext, phone_ciphertext from patients where clinic_id = %s", (clinic,)
            ).fetchall()
            ssns = open_column(cur, TABLE, "ssn", [(r[0], r[1]) for r in rows])
            phones = open_column(cur, TABLE, "phone", [(r[0], r[2]) for r in rows])
            indexes = {
                r[0]: seal_row(cur, TABLE, r[0], {"ssn": s})["ssn_blind_index"] for r, s in zip(rows, ssns, strict=True)
            }
    if reencrypted:
        with psycopg.connect(citus.admin_url) as admin:
            stored = _stored(admin, clinic)
        assert {k: v[1] for k, v in stored.items()} == indexes, "a blind index is not the active version's"
    return {r[0]: (str(s), str(p)) for r, s, p in zip(rows, ssns, phones, strict=True)}


def _run(citus: CitusSet, master_key: str, clinic: uuid.UUID) -> subprocess.CompletedProcess[str]:
    return run_clinicdb(
        "keys", "reencrypt", "--clinic", str(clinic), "--batch-size", "3",
        "--database-url", citus.admin_url, env={"CLINICDB_MASTER_KEY": master_key, "CLINICDB_MASTER_KEY_FILE": ""},
    )  # fmt: skip


def _reencrypt(citus: CitusSet, master_key: str, clinic: uuid.UUID) -> str:
    done = _run(citus, master_key, clinic)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _rotated_pair(
    citus: CitusSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> tuple[dict[uuid.UUID, tuple[str, str]], dict[uuid.UUID, tuple[str, str]]]:
    """Seven patients of A and three of B under version 1, then both clinics rotated to version 2."""
    a, b = clinic_pair
    for clinic in clinic_pair:
        encryption.ensure_key(citus.admin_url, clinic, master_key)
    values_a, values_b = _seed(citus, a, master_key, 7), _seed(citus, b, master_key, 3)
    for clinic in clinic_pair:
        encryption.rotate(citus.admin_url, clinic, master_key)
    return values_a, values_b


def test_reencrypt_moves_a_rotated_clinic_to_its_active_version_and_leaves_the_other_alone(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """After a rotation, `clinicdb keys reencrypt --clinic A` leaves every value of A under the active version,
    each opening to its plaintext with a keyring; B (rotated too) is untouched; a second run rewrites nothing;
    the updates are audited on the shards with ciphertext only; a wrong master key fails in one line first."""
    a, b = clinic_pair
    values_a, values_b = _rotated_pair(citus, clinic_pair, master_key)
    before_a, before_b = _stored(admin, a), _stored(admin, b)
    assert _versions(admin, a) == {(1, 1)}

    # Another master key than the cluster's: refused in one line (no traceback, no key), nothing rewritten.
    other = "0" * 64 if master_key != "0" * 64 else "1" * 64
    refused = _run(citus, other, a)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 1 and len(lines) == 1 and "is not the one that wrapped" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr and other not in refused.stderr and master_key not in refused.stderr
    assert _stored(admin, a) == before_a

    first = _reencrypt(citus, master_key, a)
    assert "re-encrypted 7 of 7 rows scanned" in first, first
    assert _versions(admin, a) == {(2, 2)}
    assert _opened(citus, a, master_key) == values_a
    assert _stored(admin, b) == before_b and _versions(admin, b) == {(1, 1)}
    assert _opened(citus, b, master_key, reencrypted=False) == values_b

    second = _reencrypt(citus, master_key, a)
    assert "re-encrypted 0 of 7 rows scanned" in second, second

    audit = admin.execute(
        "select old_values::text, new_values::text from clinicdb.audit_log"
        " where clinic_id = %s and table_name = 'public.patients' and action = 'update'",
        (a,),
    ).fetchall()
    assert len(audit) == 7, "each re-encrypted row is one audited update"
    assert all('"ssn_ciphertext"' in new and '"phone_ciphertext"' in new for _, new in audit)
    plaintexts = [v for pair in values_a.values() for v in pair]
    assert not [p for p in plaintexts for row in audit for text in row if p in text], "plaintext in the audit trail"


def test_reencrypt_leaves_no_key_and_no_plaintext_in_any_node_log(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """With every statement and bound parameter logged on every node, a re-encryption leaves the master key, the
    clinic's data keys (old and active) and every plaintext out of the coordinator's and the workers' logs, while
    the workers log the shards' updates."""
    a, _ = clinic_pair
    values_a, _ = _rotated_pair(citus, clinic_pair, master_key)
    offsets = log_offsets(citus)
    _reencrypt(citus, master_key, a)
    logged = logged_since(offsets)
    assert _versions(admin, a) == {(2, 2)}
    keyring = encryption.KeyringCache(master_key)
    with psycopg.connect(citus.app_url) as conn:
        keyring.load(conn, a)
    secrets = key_material(master_key, keyring.keyring(a))
    # The master key and the keyring, then the encryption, MAC and blind-index keys of versions 1 and 2.
    assert len(secrets) == 2 * (2 + 3 * 2), "the keyring does not carry the old and the active version's keys"
    plaintexts = [v for pair in values_a.values() for v in pair]
    workers = [text for log, text in logged.items() if log != citus.log_files()[0]]
    assert any("update" in text.lower() and "patients" in text for text in workers), "no worker logged an update"
    for log, text in logged.items():
        leaked = [s[:6] + "..." for s in [*secrets, *plaintexts] if s in text]
        assert not leaked, f"{log}: key material or plaintext in the log ({len(leaked)} values)"


def test_interrupted_reencrypt_resumes_from_its_checkpoint(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """A run stopped after its first committed batch keeps that batch and its checkpoint; the command resumes
    there and rewrites only the rest."""
    a, _ = clinic_pair
    values_a, _ = _rotated_pair(citus, clinic_pair, master_key)

    def stop(plan: encryption.ReencryptPlan, scanned: int) -> None:
        if plan.table == "patients":  # the registry's regclass text
            raise KeyboardInterrupt

    try:
        encryption.reencrypt(citus.admin_url, master_key, clinic=a, batch_size=3, on_batch=stop)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the run was not interrupted")
    assert _versions(admin, a) == {(1, 1), (2, 2)}
    patients = next(p for p in encryption.reencrypt_plan(citus.admin_url, a) if p.table == "patients")
    assert patients.resume_after is not None and patients.done_rows == 3
    resumed = _reencrypt(citus, master_key, a)
    assert "resuming 1 interrupted table(s)" in resumed and "re-encrypted 4 of 4 rows scanned" in resumed, resumed
    assert _versions(admin, a) == {(2, 2)}
    assert _opened(citus, a, master_key) == values_a


def _wait_for_a_blocked_update(citus: CitusSet) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for url in citus.worker_admin_urls:
            with psycopg.connect(url, autocommit=True) as worker:
                waiting = worker.execute(
                    "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                    " and query ilike 'update%%patients%%'"
                ).fetchone()
            if waiting and waiting[0]:
                return
        time.sleep(0.2)
    raise AssertionError("the re-encryption's update never waited for the writer's row lock")


def test_a_row_written_during_its_batch_is_skipped_never_overwritten(
    citus: CitusSet, admin: psycopg.Connection[Any], clinic_pair: tuple[uuid.UUID, uuid.UUID], master_key: str
) -> None:
    """A row the application rewrites while its batch waits for the row lock keeps the application's value:
    the batch's update finds another ciphertext than it read and counts the row as skipped."""
    a, _ = clinic_pair
    values_a, _ = _rotated_pair(citus, clinic_pair, master_key)
    target = min(values_a)  # the first row of the first batch (row key order)
    writer = psycopg.connect(citus.app_url)
    try:
        for statement in clinic_context_statements(a):
            writer.execute(statement)
        set_master_key(writer, master_key)
        with writer.cursor() as cur:
            sealed = seal_row(cur, TABLE, target, {"ssn": "WRITTEN-MEANWHILE"})
            cur.execute(
                "update patients set ssn_ciphertext = %s, ssn_blind_index = %s where clinic_id = %s and id = %s",
                (sealed["ssn_ciphertext"], sealed["ssn_blind_index"], a, target),
            )
        result: list[encryption.ReencryptResult] = []
        run = threading.Thread(
            target=lambda: result.append(encryption.reencrypt(citus.admin_url, master_key, clinic=a, batch_size=3))
        )
        run.start()
        _wait_for_a_blocked_update(citus)  # the batch read the old ciphertext and waits for the writer's row lock
        writer.commit()
        run.join(60)
    finally:
        writer.close()
    assert result, "the re-encryption did not finish"
    # Skipped in its batch; its phone still under version 1, the walk's final check sends it round again.
    assert (result[0].rows_skipped, result[0].rows_rewritten) == (1, 7)
    assert _versions(admin, a) == {(2, 2)}
    values_a[target] = ("WRITTEN-MEANWHILE", values_a[target][1])
    assert _opened(citus, a, master_key) == values_a
