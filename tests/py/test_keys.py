"""Keys: the master key (python/clinicdb/keys.py), key operations (python/clinicdb/encryption.py), `clinicdb keys`."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from clinicdb_cli.keys import demo_encryption, demo_master_key
from clinicdb_cli.main import cli

from clinicdb import encryption, schema
from clinicdb._url import replace_url
from clinicdb.devcluster.testing import ServerSet, scratch_database
from clinicdb.keys import (
    MasterKeyError,
    generate_master_key,
    load_master_key,
    read_key_file,
    set_master_key,
    write_key_file,
)

# One master key per database: every test on the shared test database uses this one.
SESSION_KEY = generate_master_key()


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session's master key in a 0600 file, named by CLINICDB_MASTER_KEY_FILE."""
    path = tmp_path / "master.key"
    write_key_file(path, SESSION_KEY)
    monkeypatch.delenv("CLINICDB_MASTER_KEY", raising=False)
    monkeypatch.setenv("CLINICDB_MASTER_KEY_FILE", str(path))
    return path


@pytest.fixture
def keyed_pair(servers: ServerSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> tuple[uuid.UUID, uuid.UUID]:
    """Two fresh clinics, each with its first data key."""
    for clinic in clinic_pair:
        encryption.rotate(servers.admin_url, clinic, SESSION_KEY)
    return clinic_pair


def _write_patients(app_url: str, clinic: uuid.UUID, count: int, key: str = SESSION_KEY) -> None:
    with psycopg.connect(app_url) as conn, conn.transaction():
        conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
        set_master_key(conn, key)
        conn.cursor().executemany(
            "insert into patients (mrn, given_name, family_name, ssn, phone) values (%s, 'Pat', 'Test', %s, %s)",
            [(f"T-{i}", f"900-{i % 90 + 10}-{1000 + i}", f"+1 555 {i:04d}") for i in range(count)],
        )


def _read_ssns(app_url: str, clinic: uuid.UUID, key: str = SESSION_KEY) -> dict[str, str]:
    with psycopg.connect(app_url) as conn, conn.transaction():
        conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
        set_master_key(conn, key)
        return {str(r[0]): str(r[1]) for r in conn.execute("select mrn, ssn from patients_decrypted").fetchall()}


def _versions(admin_url: str, clinic: uuid.UUID) -> set[int | None]:
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            "select distinct clinicdb.key_version(ssn_ciphertext) from public.patients where clinic_id = %s", (clinic,)
        ).fetchall()
    return {r[0] for r in rows}


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A master key file that group or others can read is refused with the chmod to run, never its content."""
    path = tmp_path / "loose.key"
    key = generate_master_key()
    path.write_text(key)
    path.chmod(0o644)
    with pytest.raises(MasterKeyError) as caught:
        read_key_file(path)
    assert "chmod 600" in str(caught.value) and key not in str(caught.value)


def test_written_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    """write_key_file creates a 0600 file and returns the existing key instead of replacing it."""
    path = tmp_path / "dev" / "master.key"
    first = write_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert write_key_file(path) == first


def test_malformed_key_error_does_not_echo_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed CLINICDB_MASTER_KEY is reported by its length only."""
    monkeypatch.setenv("CLINICDB_MASTER_KEY", "hunter2-not-a-key")
    with pytest.raises(MasterKeyError) as caught:
        load_master_key()
    assert "hunter2" not in str(caught.value) and "17 characters" in str(caught.value)


def test_no_master_key_is_one_clear_line(servers: ServerSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """`keys rotate` without any master key configured fails with one line saying where to put it."""
    monkeypatch.delenv("CLINICDB_MASTER_KEY", raising=False)
    monkeypatch.delenv("CLINICDB_MASTER_KEY_FILE", raising=False)
    args = ["keys", "rotate", "--clinic", str(uuid.uuid4()), "--database-url", servers.admin_url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: no master key: set CLINICDB_MASTER_KEY_FILE")


def test_rotate_creates_a_version_new_writes_use(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID], key_file: Path
) -> None:
    """`keys rotate` makes version 2 active: writes after it use version 2, older values still read."""
    clinic = keyed_pair[0]
    _write_patients(servers.app_url, clinic, 3)
    result = CliRunner().invoke(cli, ["keys", "rotate", "--clinic", str(clinic), "--database-url", servers.admin_url])
    assert result.exit_code == 0, result.output
    assert f"clinic {clinic}: key version 2 is active" in result.output
    with psycopg.connect(servers.app_url) as conn, conn.transaction():
        conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
        set_master_key(conn, SESSION_KEY)
        conn.execute("insert into patients (mrn, given_name, family_name, ssn) values ('new', 'N', 'W', '1')")
    assert _versions(servers.admin_url, clinic) == {1, 2}
    assert len(_read_ssns(servers.app_url, clinic)) == 4


def test_reencrypt_moves_every_value_with_a_progress_bar(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID], key_file: Path
) -> None:
    """`keys reencrypt` rewrites every old value to the active version in batches; every value reads the same."""
    clinic = keyed_pair[0]
    _write_patients(servers.app_url, clinic, 40)
    before = _read_ssns(servers.app_url, clinic)
    encryption.rotate(servers.admin_url, clinic, SESSION_KEY)
    result = CliRunner().invoke(
        cli, ["keys", "reencrypt", "--clinic", str(clinic), "--batch-size", "7", "--database-url", servers.admin_url]
    )
    assert result.exit_code == 0, result.output
    assert "re-encrypting" in result.output and "re-encrypted 40 of" in result.output
    assert _versions(servers.admin_url, clinic) == {2}
    assert _read_ssns(servers.app_url, clinic) == before
    usage = CliRunner().invoke(
        cli, ["keys", "status", "--values", "--clinic", str(clinic), "--json", "--database-url", servers.admin_url]
    )
    assert usage.exit_code == 0, usage.output
    assert '"key_version": 2' in usage.output and '"key_version": 1' not in usage.output


def test_interrupted_reencrypt_resumes_after_the_last_batch(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A re-encryption stopped after two batches resumes from its checkpoint and rewrites only the rest."""
    clinic = keyed_pair[0]
    _write_patients(servers.app_url, clinic, 50)
    before = _read_ssns(servers.app_url, clinic)
    encryption.rotate(servers.admin_url, clinic, SESSION_KEY)
    batches: list[int] = []

    def stop_after_two(plan: encryption.ReencryptPlan, scanned: int) -> None:
        if plan.table == "patients":
            batches.append(scanned)
        if len(batches) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encryption.reencrypt(servers.admin_url, SESSION_KEY, clinic=clinic, batch_size=10, on_batch=stop_after_two)
    assert _versions(servers.admin_url, clinic) == {1, 2}
    plans = encryption.reencrypt_plan(servers.admin_url, clinic)
    patients = next(p for p in plans if p.table == "patients")
    assert patients.resume_after is not None and patients.done_rows == 20
    resumed = encryption.reencrypt(servers.admin_url, SESSION_KEY, plans=plans, batch_size=10)
    assert resumed.rows_rewritten == 30
    assert _versions(servers.admin_url, clinic) == {2}
    assert _read_ssns(servers.app_url, clinic) == before


def test_shred_asks_then_makes_only_that_clinic_unreadable(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """`keys shred` asks first; after a yes the clinic's values are unrecoverable and the other clinic's intact."""
    leaving, staying = keyed_pair
    _write_patients(servers.app_url, leaving, 2)
    _write_patients(servers.app_url, staying, 2)
    args = ["keys", "shred", "--clinic", str(leaving), "--database-url", servers.admin_url]
    refused = CliRunner().invoke(cli, args, input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert len(_read_ssns(servers.app_url, leaving)) == 2
    done = CliRunner().invoke(cli, [*args, "--reason", "test"], input="y\n")
    assert done.exit_code == 0, done.output
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="were shredded"):
        _read_ssns(servers.app_url, leaving)
    assert len(_read_ssns(servers.app_url, staying)) == 2
    with psycopg.connect(servers.admin_url) as conn:
        event = conn.execute(
            "select detail ->> 'reason' from clinicdb.key_events where event = 'shred' and clinic_id = %s", (leaving,)
        ).fetchone()
    assert event == ("test",)


def test_wrong_master_key_file_is_one_line_without_the_key(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID], tmp_path: Path
) -> None:
    """A wrong master key is refused in one line naming fingerprints, never key material."""
    wrong = tmp_path / "wrong.key"
    wrong_key = write_key_file(wrong)
    result = CliRunner().invoke(
        cli,
        ["keys", "rotate", "--clinic", str(keyed_pair[0]), "--master-key-file", str(wrong),
         "--database-url", servers.admin_url],
    )  # fmt: skip
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "is not this database's master key" in result.output
    assert wrong_key not in result.output and SESSION_KEY not in result.output


def test_status_lists_versions_without_key_material(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """`keys status --json` lists versions, states and fingerprints, and no wrapped key."""
    result = CliRunner().invoke(
        cli, ["keys", "status", "--clinic", str(keyed_pair[0]), "--json", "--database-url", servers.admin_url]
    )
    assert result.exit_code == 0, result.output
    assert '"state": "active"' in result.output and '"version": 1' in result.output
    assert "wrapped" not in result.output


def test_demo_encryption_shows_ciphertext_then_plaintext(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo prints the raw row (SSN NULL, ciphertext hex), the decrypted row, and a refusal without the key."""
    demo_encryption(servers.admin_url, servers.app_url, keyed_pair[1], SESSION_KEY)
    out = capsys.readouterr().out
    stored, read = out.split("read by the app", 1)
    assert "078-05-1120" not in stored and "..." in stored
    assert "078-05-1120" in read and "+1 555 0100" in read
    assert "refused: cannot decrypt public.patients.ssn: no master key" in read


@pytest.fixture
def own_database(servers: ServerSet) -> Iterator[str]:
    """A freshly migrated database of its own (for a master key change that must not touch the shared one)."""
    with scratch_database(servers.admin_url, "keys", reference=True, logins=True) as url:
        yield url


def test_master_key_rotation_rewraps_without_touching_rows(own_database: str, tmp_path: Path) -> None:
    """`keys rotate-master` re-wraps data keys: rows are unchanged, the new key reads them, the old one cannot."""
    old_key, new_file = generate_master_key(), tmp_path / "new.key"
    old_file = tmp_path / "old.key"
    write_key_file(old_file, old_key)
    runner = CliRunner()
    assert runner.invoke(cli, ["keys", "generate-master", "--out", str(new_file)]).exit_code == 0
    new_key = read_key_file(new_file)
    with psycopg.connect(own_database, autocommit=True) as conn:
        clinic = conn.execute("select clinicdb.create_clinic('rewrap')").fetchone()[0]  # type: ignore[index]
    encryption.rotate(own_database, clinic, old_key)
    app_url = replace_url(own_database, user="clinicdb_app_user")
    _write_patients(app_url, clinic, 5, old_key)

    def stored() -> list[tuple[object, ...]]:
        with psycopg.connect(own_database) as conn:
            return conn.execute("select id, xmin::text, ssn_ciphertext from public.patients order by id").fetchall()

    before = stored()
    result = runner.invoke(
        cli,
        ["keys", "rotate-master", "--new-key-file", str(new_file), "--master-key-file", str(old_file),
         "--database-url", own_database],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert stored() == before
    assert len(_read_ssns(app_url, clinic, new_key)) == 5
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
        _read_ssns(app_url, clinic, old_key)
    assert os.stat(new_file).st_mode & 0o077 == 0


def test_replica_decrypts_with_the_key_and_holds_only_ciphertext(
    replica_servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """On the streaming replica the app reads plaintext with the master key; the replicated row is ciphertext."""
    clinic = keyed_pair[0]
    _write_patients(replica_servers.app_url, clinic, 2)
    assert replica_servers.cluster is not None
    replica_servers.cluster.wait_for_replay()
    replica_app = replica_servers.app_replica_urls[0]
    assert set(_read_ssns(replica_app, clinic).values()) == {"900-10-1000", "900-11-1001"}
    with psycopg.connect(replica_servers.replica_admin_urls[0]) as conn:
        raw = conn.execute(
            "select pg_is_in_recovery(), count(*) filter (where p::text like %s)"
            " from public.patients p where clinic_id = %s group by 1",
            ("%900-1_-100_%", clinic),
        ).fetchone()
    assert raw == (True, 0)


def test_migration_rollback_decrypts_and_migrate_encrypts_again(
    own_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rolling the reference encryption back restores plaintext (without the key: a clear error, nothing lost);
    migrating re-encrypts."""
    key = generate_master_key()
    with psycopg.connect(own_database, autocommit=True) as conn:
        clinic = conn.execute("select clinicdb.create_clinic('migrate')").fetchone()[0]  # type: ignore[index]
    encryption.rotate(own_database, clinic, key)
    app_url = replace_url(own_database, user="clinicdb_app_user")
    _write_patients(app_url, clinic, 3, key)
    monkeypatch.delenv("CLINICDB_MASTER_KEY", raising=False)
    monkeypatch.delenv("CLINICDB_MASTER_KEY_FILE", raising=False)
    # Core migrations written after the reference set are newer: they go first.
    later = [s.id for s in schema.status(own_database) if s.applied and s.id > "0009.reference-encryption"]
    if later:
        assert schema.rollback(own_database, count=len(later)) == sorted(later, reverse=True)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no master key"):
        schema.rollback(own_database, count=1)
    assert len(_read_ssns(app_url, clinic, key)) == 3

    monkeypatch.setenv("CLINICDB_MASTER_KEY", key)
    assert schema.rollback(own_database, count=1) == ["0009.reference-encryption"]
    with psycopg.connect(own_database) as conn:
        plain = conn.execute("select ssn from public.patients order by ssn").fetchall()
        columns = conn.execute(
            "select count(*) from pg_attribute where attrelid = 'public.patients'::regclass"
            " and attname like 'ssn\\_%' and not attisdropped"
        ).fetchone()
    assert [r[0] for r in plain] == ["900-10-1000", "900-11-1001", "900-12-1002"] and columns == (0,)
    with psycopg.connect(own_database) as conn:
        leaked = conn.execute(
            "select count(*) from clinicdb.audit_log where old_values::text like '%900-1_-100_%'"
            " or new_values::text like '%900-1_-100_%'"
        ).fetchone()
    assert leaked == (0,), "the rollback wrote no decrypted value into the audit trail"

    assert schema.apply(own_database) == ["0009.reference-encryption", *sorted(later)]
    with psycopg.connect(own_database) as conn:
        at_rest = conn.execute(
            "select count(*) from public.patients where ssn is null and ssn_ciphertext is not null"
        ).fetchone()
    assert at_rest == (3,)
    assert sorted(_read_ssns(app_url, clinic, key).values()) == ["900-10-1000", "900-11-1001", "900-12-1002"]


def test_demo_master_key_lives_in_a_private_file_outside_the_database(
    servers: ServerSet, clinic_pair: tuple[uuid.UUID, uuid.UUID], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo reads its key from <dev dir>/master.key (0600), the same on every call, and gives each clinic a key."""
    monkeypatch.setenv("CLINICDB_DEV_DIR", str(tmp_path / "dev"))
    write_key_file(tmp_path / "dev" / "master.key", SESSION_KEY)  # this database's key (one per database)
    assert demo_master_key(servers.admin_url, clinic_pair) == SESSION_KEY
    assert demo_master_key(servers.admin_url, clinic_pair) == SESSION_KEY
    assert stat.S_IMODE((tmp_path / "dev" / "master.key").stat().st_mode) == 0o600
    with psycopg.connect(servers.admin_url) as conn:
        count = conn.execute(
            "select count(*) from clinicdb.clinic_keys where clinic_id = any(%s) and state = 'active'",
            (list(clinic_pair),),
        ).fetchone()
    assert count == (2,)
