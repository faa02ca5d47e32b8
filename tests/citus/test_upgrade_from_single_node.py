"""A single-node clinicdb database that gets Citus: the path a real user takes (issue #16, docs/citus.md).

One throwaway coordinator and two workers, started with ``shared_preload_libraries
= citus`` but without the extension: the coordinator is first migrated and used
as a plain single node (``clinicdb migrate --reference-schema``, two clinics,
patients with an SSN the trigger encrypted under the master key, updates and
deletes, ``clinicdb audit seal --all``, then a few rows left unsealed). Then the
DBA's steps, in order: ``create extension citus`` on every node, the coordinator
registered and the workers added, ``clinicdb migrate`` again (it detects Citus
and distributes). Each test proves one guarantee on the upgraded cluster; they
run in file order on the one cluster (the audit tests write and seal).
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from citus_helpers import align_txid_counters, run_clinicdb, scoped
from psycopg import sql

from clinicdb import ClinicDB, encryption
from clinicdb.devcluster.binaries import chown_for_server
from clinicdb.devcluster.bootstrap import DEV_LOGINS, ensure_logins
from clinicdb.devcluster.citus import CITUS_SETTINGS, CitusSet, add_citus
from clinicdb.devcluster.cluster import LocalCluster
from clinicdb.sealing import open_column

SSN = "123-45-6789"
OTHER_SSN = "987-65-4321"
STAFF_LOGIN = "dr_single_node"


@dataclass
class Before:
    """What the single node held just before Citus came."""

    clinics: tuple[uuid.UUID, uuid.UUID]
    master_key: str
    patients: dict[uuid.UUID, set[uuid.UUID]] = field(default_factory=dict)
    audit: dict[uuid.UUID | None, set[int]] = field(default_factory=dict)
    sealed_rows: int = 0
    round_head: str = ""
    ssn_patient: uuid.UUID | None = None


@dataclass
class Upgraded:
    """The cluster after the upgrade, and what it held before."""

    cluster: CitusSet
    before: Before
    migrate_output: str


def _patients(url: str) -> dict[uuid.UUID, set[uuid.UUID]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("select clinic_id, id from patients").fetchall()
    out: dict[uuid.UUID, set[uuid.UUID]] = {}
    for clinic, row_id in rows:
        out.setdefault(clinic, set()).add(row_id)
    return out


def _audit(url: str) -> dict[uuid.UUID | None, set[int]]:
    """Every audit row id per clinic (None: the rows without a clinic), on a single node or on Citus."""
    with psycopg.connect(url) as conn:
        unscoped = conn.execute("select to_regclass('clinicdb.audit_log_unscoped') is not null").fetchone()
        union = " union all select clinic_id, id from clinicdb.audit_log_unscoped" if unscoped and unscoped[0] else ""
        rows = conn.execute(f"select clinic_id, id from clinicdb.audit_log{union}").fetchall()
    out: dict[uuid.UUID | None, set[int]] = {}
    for clinic, row_id in rows:
        out.setdefault(clinic, set()).add(int(row_id))
    return out


def _single_node_phase(url: str, app_url: str) -> Before:
    """Migrate as a plain single node, seed two clinics through the trigger, seal, and write an unsealed tail."""
    done = run_clinicdb("migrate", "--reference-schema", "--database-url", url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "distributed by clinic_id" not in done.stdout, "the single-node phase ran the Citus profile"
    ensure_logins(url)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select count(*) from pg_extension where extname = 'citus'").fetchone() == (0,)
        a = conn.execute("select clinicdb.create_clinic('Upgrade A')").fetchone()
        b = conn.execute("select clinicdb.create_clinic('Upgrade B')").fetchone()
    assert a and b
    before = Before(clinics=(a[0], b[0]), master_key=secrets.token_hex(32))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login in role clinicdb_staff").format(sql.Identifier(STAFF_LOGIN)))
        conn.execute("select clinicdb.grant_staff(%s, %s)", (STAFF_LOGIN, a[0]))
    for clinic in before.clinics:
        encryption.ensure_key(url, clinic, before.master_key)
    with ClinicDB(app_url, [], min_size=1, max_size=1, keyring=encryption.KeyringCache(before.master_key)) as db:
        for n, clinic in enumerate(before.clinics):
            with db.write(clinic, user_id="single-node") as cur:
                for i in range(5):
                    ssn = (SSN if n == 0 else OTHER_SSN) if i == 0 else None
                    cur.execute(
                        "insert into patients (mrn, given_name, family_name, ssn) values (%s, 'Ann', 'Lee', %s)",
                        (f"U{n}-{i}", ssn),
                    )
                cur.execute("update patients set given_name = 'Anna' where mrn = %s", (f"U{n}-1",))
                cur.execute("delete from patients where mrn = %s", (f"U{n}-4",))
        with db.read(before.clinics[0]) as cur:
            row = cur.execute("select id from patients where mrn = 'U0-0'").fetchone()
            assert row
            before.ssn_patient = row[0]
            # the trigger sealed it on the single node, and the view opens it there
            opened = cur.execute("select ssn from patients_decrypted where id = %s", (row[0],)).fetchone()
            assert opened == (SSN,)
    sealed = run_clinicdb("audit", "seal", "--all", "--database-url", url)
    assert sealed.returncode == 0, sealed.stdout + sealed.stderr
    head = re.search(r"head: (\d+:[0-9a-f]{64})", sealed.stdout)
    assert head, sealed.stdout
    before.round_head = head.group(1)
    verified = run_clinicdb("audit", "verify", "--database-url", url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with psycopg.connect(url) as conn:
        count = conn.execute("select coalesce(sum(row_count), 0) from clinicdb.audit_seals").fetchone()
        before.sealed_rows = int(count[0]) if count else 0
    assert before.sealed_rows > 0
    # A tail written after the last seal: still unsealed when Citus comes.
    with ClinicDB(app_url, [], min_size=1, max_size=1) as db:
        for n, clinic in enumerate(before.clinics):
            with db.write(clinic, user_id="single-node") as cur:
                cur.execute("update patients set family_name = 'Li' where mrn = %s", (f"U{n}-2",))
    before.patients = _patients(url)
    before.audit = _audit(url)
    return before


@pytest.fixture(scope="module")
def upgraded() -> Iterator[Upgraded]:
    """A database that ran on one node (sealed trail, encrypted SSNs) and was then upgraded to Citus."""
    root = Path(tempfile.mkdtemp(prefix="clinicdb-upgrade-"))
    nodes: list[LocalCluster] = []
    try:
        chown_for_server(root)
        nodes = [
            LocalCluster(root / name, replicas=0, settings=CITUS_SETTINGS)
            for name in ("coordinator", "worker1", "worker2")
        ]
        for node in nodes:
            node.up()
        cluster = CitusSet(admin_url=nodes[0].url(), worker_admin_urls=[n.url() for n in nodes[1:]], nodes=nodes)
        before = _single_node_phase(cluster.admin_url, cluster.app_url)
        add_citus(nodes)
        done = run_clinicdb("migrate", "--database-url", cluster.admin_url)
        assert done.returncode == 0, done.stdout + done.stderr
        yield Upgraded(cluster=cluster, before=before, migrate_output=done.stdout)
    finally:
        for node in reversed(nodes):
            node.down()
        shutil.rmtree(root, ignore_errors=True)


def test_upgrade_keeps_every_row_and_distributes_it(upgraded: Upgraded) -> None:
    """`clinicdb migrate` on the upgraded coordinator distributes the tables and keeps every row: the same patient
    ids and the same audit row ids per clinic as on the single node, now held on the workers' shards."""
    citus, before = upgraded.cluster, upgraded.before
    assert "distributed by clinic_id" in upgraded.migrate_output
    assert _patients(citus.admin_url) == before.patients
    assert _audit(citus.admin_url) == before.audit
    with psycopg.connect(citus.admin_url) as conn:
        kinds = dict(
            conn.execute(
                "select logicalrelid::text, partmethod from pg_dist_partition"
                " where logicalrelid in ('public.patients'::regclass, 'clinicdb.audit_log'::regclass)"
            ).fetchall()
        )
        assert kinds == {"patients": "h", "clinicdb.audit_log": "h"}
        on_shards = conn.execute(
            "select sum(result::bigint) from run_command_on_shards('public.patients', 'select count(*) from %s')"
        ).fetchone()
    assert on_shards == (sum(len(ids) for ids in before.patients.values()),)


def test_each_clinic_sees_only_its_own_rows_after_the_upgrade(upgraded: Upgraded) -> None:
    """Through the coordinator, the app login with a clinic in force sees exactly that clinic's pre-upgrade
    patients (read from the shards), and naming the other clinic returns nothing."""
    citus, before = upgraded.cluster, upgraded.before
    a, b = before.clinics
    for mine, other in ((a, b), (b, a)):
        with scoped(citus.app_url, mine) as conn:
            seen = {r[0] for r in conn.execute("select id from patients").fetchall()}
            assert seen == before.patients[mine]
            named = conn.execute("select count(*) from patients where clinic_id = %s", (other,)).fetchone()
            assert named == (0,)


def test_logins_made_before_citus_exist_on_every_worker(upgraded: Upgraded) -> None:
    """The app, readonly, auditor and staff logins created on the single node exist on every worker after
    `clinicdb migrate`, members of the same layer roles (Citus connects to the workers as the same user)."""
    citus = upgraded.cluster
    logins = sorted([*DEV_LOGINS, STAFF_LOGIN])
    expected = sorted([*DEV_LOGINS.items(), (STAFF_LOGIN, "clinicdb_staff")])
    for url in citus.worker_admin_urls:
        with psycopg.connect(url) as conn:
            found = conn.execute(
                "select r.rolname::text, g.rolname::text from pg_roles r join pg_auth_members m on m.member = r.oid"
                " join pg_roles g on g.oid = m.roleid where r.rolname = any(%s) and r.rolcanlogin order by 1, 2",
                (logins,),
            ).fetchall()
        assert found == expected, url


def test_staff_mapped_on_the_single_node_sees_only_its_clinic_after_the_upgrade(upgraded: Upgraded) -> None:
    """A staff login mapped to clinic A on the single node sees exactly A's patients through the coordinator,
    whatever clinic it sets (its mapping is marked by `clinicdb migrate` on every node)."""
    citus, before = upgraded.cluster, upgraded.before
    a, b = before.clinics
    with scoped(citus.login_url(STAFF_LOGIN), b) as conn:
        seen = {r[0] for r in conn.execute("select id from patients").fetchall()}
    assert seen == before.patients[a]


def _verify(citus: CitusSet, *extra: str) -> Any:
    return run_clinicdb("audit", "verify", "--database-url", citus.admin_url, *extra)


def test_trail_sealed_on_the_single_node_verifies_after_the_upgrade(upgraded: Upgraded) -> None:
    """`clinicdb audit verify` on the upgraded coordinator recomputes the chains sealed on the single node from
    the rows now on the shards, and the round head the single node's seal printed is still the anchor: exit 0."""
    done = _verify(upgraded.cluster, "--expect", upgraded.before.round_head)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok:")


def test_new_writes_after_the_upgrade_are_audited_sealed_and_verify(upgraded: Upgraded) -> None:
    """Writes through the coordinator after the upgrade (no operator step in between) are audited on the clinic's
    shard; the next `clinicdb audit seal` seals them with the single node's unsealed tail, and verify passes."""
    citus, before = upgraded.cluster, upgraded.before
    a, b = before.clinics
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1) as db:
        for n, clinic in enumerate((a, b)):
            with db.write(clinic, user_id="on-citus") as cur:
                cur.execute("insert into patients (mrn, given_name, family_name) values (%s, 'Bo', 'Ng')", (f"C{n}-0",))
                cur.execute("update patients set given_name = 'Bea' where mrn = %s", (f"U{n}-3",))
    with psycopg.connect(citus.admin_url) as conn:
        audited = conn.execute(
            "select clinic_id, count(*) from clinicdb.audit_log where app_user = 'on-citus' group by clinic_id"
        ).fetchall()
    assert dict(audited) == {a: 2, b: 2}
    # Verify before the seal: the new rows are not sealed yet and must not fall inside the single node's blocks.
    early = _verify(citus)
    assert early.returncode == 0, early.stdout + early.stderr
    align_txid_counters(citus)  # the horizon waits for the quietest node (docs/citus.md, *Horizon*)
    sealed = run_clinicdb("audit", "seal", "--all", "--database-url", citus.admin_url)
    assert sealed.returncode == 0, sealed.stdout + sealed.stderr
    with psycopg.connect(citus.admin_url) as conn:
        unsealed = conn.execute(
            "select count(*) from clinicdb.audit_log a where a.clinic_id = any(%s) and not exists"
            " (select 1 from clinicdb.audit_seals s where s.kind = 'rows' and a.id = any(s.row_ids))",
            (list(before.clinics),),
        ).fetchone()
    assert unsealed == (0,), "rows of the upgraded clinics were left unsealed"
    done = _verify(citus)
    assert done.returncode == 0, done.stdout + done.stderr


def test_tampering_with_a_row_sealed_on_the_single_node_is_detected_on_its_worker(upgraded: Upgraded) -> None:
    """A pre-upgrade audit row, sealed on the single node, changed on the worker that now holds it (triggers off,
    as a superuser there) is reported as altered and verify exits 1; put back, the trail verifies again."""
    citus, before = upgraded.cluster, upgraded.before
    a = before.clinics[0]
    with psycopg.connect(citus.admin_url) as admin:
        audit_id, app_user = admin.execute(
            "select id, app_user from clinicdb.audit_log where clinic_id = %s and table_name = 'public.patients'"
            " order by id limit 1",
            (a,),
        ).fetchone() or (None, None)
        assert audit_id is not None and audit_id in before.audit[a]
        port, shard = admin.execute(
            "select p.nodeport, shard_name('clinicdb.audit_log', p.shardid) from pg_dist_shard_placement p"
            " where p.shardid = get_shard_id_for_distribution_column('clinicdb.audit_log', %s::uuid)",
            (a,),
        ).fetchone() or (None, None)
    worker = next(u for u in citus.worker_admin_urls if f":{port}/" in u)
    with psycopg.connect(worker, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")  # the append-only guard is a trigger
        conn.execute(f"update {shard} set app_user = 'someone else' where id = %s", (audit_id,))
        try:
            done = _verify(citus)
        finally:
            conn.execute(f"update {shard} set app_user = %s where id = %s", (app_user, audit_id))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"row altered: audit row {audit_id} " in done.stdout
    again = _verify(citus)
    assert again.returncode == 0, again.stdout + again.stderr


def test_ssn_encrypted_by_the_trigger_before_the_upgrade_opens_on_citus(upgraded: Upgraded) -> None:
    """An SSN the single node's trigger encrypted is found on Citus by its blind index through the driver with a
    keyring, and `open_column` opens it on the coordinator."""
    citus, before = upgraded.cluster, upgraded.before
    a = before.clinics[0]
    with ClinicDB(citus.app_url, [], min_size=1, max_size=1, keyring=encryption.KeyringCache(before.master_key)) as db:
        lookup = db.blind_index(a, "public.patients", "ssn", SSN)
        with db.read(a) as cur:
            found = cur.execute(
                "select id, ssn_ciphertext from patients where clinic_id = %s and ssn_blind_index = any(%s)",
                (a, lookup),
            ).fetchall()
            assert [r[0] for r in found] == [before.ssn_patient]
            assert open_column(cur, "public.patients", "ssn", found) == [SSN]
            # the other clinic's SSN is not found under this clinic's blind index
            other = cur.execute(
                "select count(*) from patients where clinic_id = %s and ssn_blind_index = any(%s)",
                (a, db.blind_index(a, "public.patients", "ssn", OTHER_SSN)),
            ).fetchone()
            assert other == (0,)


def test_plaintext_written_after_the_upgrade_is_refused_on_the_shard(upgraded: Upgraded) -> None:
    """The encryption trigger, moved aside while the rows were copied and created again on the distributed table,
    is on every shard: plaintext written into an encrypted column through the coordinator is refused there."""
    citus, before = upgraded.cluster, upgraded.before
    a = before.clinics[0]
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="no master key"),
        scoped(citus.app_url, a) as conn,
    ):
        conn.execute(
            "insert into patients (mrn, given_name, family_name, ssn) values ('C0-9', 'Ann', 'Lee', %s)", (SSN,)
        )
    with psycopg.connect(citus.admin_url) as conn:
        on_shards = conn.execute(
            "select count(*) filter (where result::int = 1), count(*) from run_command_on_shards('public.patients',"
            " $$select count(*) from pg_trigger where tgrelid = '%s'::regclass and tgname like 'clinicdb_encrypt%%'$$)"
        ).fetchone()
    assert on_shards and on_shards[0] == on_shards[1] > 0


def test_check_passes_after_the_upgrade(upgraded: Upgraded) -> None:
    """`clinicdb check` on the upgraded coordinator passes (the Citus findings included)."""
    done = run_clinicdb("check", "--database-url", upgraded.cluster.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
