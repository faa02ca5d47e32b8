"""The application's keyring cache (python/clinicdb/encryption.py: KeyringCache, blind_index_condition)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from clinicdb import AsyncClinicDB, ClinicDB, encryption
from clinicdb.devcluster.testing import ServerSet
from clinicdb.encryption import KEYRING_SETTING, KeyringCache, blind_index_condition, is_stale_keyring
from clinicdb.keys import MasterKeyError, generate_master_key, set_master_key
from driver_facade import AsyncFacade
from test_keys import SESSION_KEY

SSN = "555-12-3456"


@pytest.fixture
def keyed_pair(servers: ServerSet, clinic_pair: tuple[uuid.UUID, uuid.UUID]) -> tuple[uuid.UUID, uuid.UUID]:
    """Two fresh clinics with a data key and 1,000 patients each; patient 3 of each holds the same SSN.

    Enough rows, analysed, that the lookup by blind index is the cheapest plan, as in a real clinic.
    """
    for n, clinic in enumerate(clinic_pair):
        encryption.rotate(servers.admin_url, clinic, SESSION_KEY)
        with psycopg.connect(servers.app_url) as conn, conn.transaction():
            conn.execute("select set_config('app.clinic_id', %s, true)", (str(clinic),))
            set_master_key(conn, SESSION_KEY)
            conn.execute(
                "insert into patients (mrn, given_name, family_name, ssn)"
                " select 'C' || %s || '-' || g, 'Pat', 'Test', case when g = 3 then %s else '900-00-' || (1000 + g) end"
                "   from generate_series(1, 1000) g",
                (n, SSN),
            )
    with psycopg.connect(servers.admin_url, autocommit=True) as admin:
        admin.execute("analyze public.patients")  # plans from the table's real size, not a fresh table's guess
    return clinic_pair


@contextmanager
def _keyed(
    conn: psycopg.Connection[tuple[object, ...]],
    cache: KeyringCache,
    as_of: uuid.UUID,
    ring_of: uuid.UUID | None = None,
) -> Iterator[None]:
    """A transaction for clinic ``as_of`` with ``ring_of``'s cached keyring (its own by default), no master key."""
    with conn.transaction():
        conn.execute(
            "select set_config('app.clinic_id', %s, true), set_config(%s, %s, true)",
            (str(as_of), KEYRING_SETTING, cache.keyring(ring_of or as_of)),
        )
        yield


def _lookup(
    conn: psycopg.Connection[tuple[object, ...]], cache: KeyringCache, clinic: uuid.UUID, ssn: str, *, as_of: uuid.UUID
) -> list[tuple[object, ...]]:
    """One lookup transaction for clinic ``as_of`` with ``clinic``'s keyring: (mrn, ssn) rows found."""
    values = cache.blind_index(clinic, "public.patients", "ssn", ssn)
    query = sql.SQL("select mrn, ssn from patients_decrypted where {}").format(
        blind_index_condition("ssn_blind_index", values)
    )
    with _keyed(conn, cache, as_of, ring_of=clinic):
        return conn.execute(query, values).fetchall()


def _scans(node: dict[str, Any]) -> list[tuple[str, str]]:
    """(node type, index or relation name) of every scan in a JSON plan node and its children."""
    name = node.get("Index Name") or node.get("Relation Name")
    found = [(node["Node Type"], name)] if name else []
    for child in node.get("Plans", []):
        found += _scans(child)
    return found


def test_cached_keyring_lookup_finds_the_row_through_the_index_without_the_master_key(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """A lookup with the cached keyring finds and decrypts the row by its blind index, never sending the master key."""
    clinic, _ = keyed_pair
    cache = KeyringCache(SESSION_KEY)
    with psycopg.connect(servers.app_url) as conn:
        cache.load(conn, clinic)
        assert _lookup(conn, cache, clinic, SSN, as_of=clinic) == [("C0-3", SSN)]
        values = cache.blind_index(clinic, "public.patients", "ssn", SSN)
        with _keyed(conn, cache, clinic):
            assert conn.execute("select current_setting('app.master_key', true)").fetchone() in [(None,), ("",)]
            in_sql = conn.execute("select clinicdb.blind_index('public.patients', 'ssn', %s)", (SSN,)).fetchone()
            # Sequential scans priced out: the question is whether the condition *can* use the index, which a
            # small or unanalysed table would otherwise hide behind a cheaper scan (read as JSON, any version).
            conn.execute("set local enable_seqscan = off")
            query = sql.SQL("explain (format json) select mrn, ssn from patients_decrypted where {}").format(
                blind_index_condition("ssn_blind_index", values)
            )
            row = conn.execute(query, values).fetchone()
    assert in_sql == (values,), "the application computes exactly the blind index PostgreSQL computes"
    assert row is not None
    scans = _scans(row[0][0]["Plan"])
    assert ("Index Scan", "patients_ssn_blind_index_idx") in scans or (
        "Bitmap Index Scan",
        "patients_ssn_blind_index_idx",
    ) in scans, scans
    assert not [scan for scan in scans if scan[0] == "Seq Scan" and scan[1] == "patients"], scans
    assert SESSION_KEY not in repr(cache)


def test_cached_keyring_finds_old_version_rows_after_a_rotation(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """After a rotation the cached keyring is refused as stale; reloaded, it finds rows under both versions."""
    clinic, _ = keyed_pair
    cache = KeyringCache(SESSION_KEY)
    with psycopg.connect(servers.app_url) as conn:
        cache.load(conn, clinic)
        encryption.rotate(servers.admin_url, clinic, SESSION_KEY)
        with pytest.raises(psycopg.Error) as stale:
            _lookup(conn, cache, clinic, SSN, as_of=clinic)
        assert is_stale_keyring(stale.value)
        cache.invalidate(clinic)
        assert not cache.loaded(clinic)
        cache.load(conn, clinic)
        assert len(cache.blind_index(clinic, "public.patients", "ssn", SSN)) == 2
        assert _lookup(conn, cache, clinic, SSN, as_of=clinic) == [("C0-3", SSN)]
        with _keyed(conn, cache, clinic):
            conn.execute(
                "insert into patients (mrn, given_name, family_name, ssn) values ('NEW', 'N', 'P', %s)", (SSN,)
            )
        assert sorted(_lookup(conn, cache, clinic, SSN, as_of=clinic)) == [("C0-3", SSN), ("NEW", SSN)]
    with psycopg.connect(servers.admin_url) as admin:
        versions = admin.execute(
            "select mrn, clinicdb.key_version(ssn_ciphertext) from patients where clinic_id = %s and mrn in"
            " ('C0-3', 'NEW') order by mrn",
            (clinic,),
        ).fetchall()
    assert versions == [("C0-3", 1), ("NEW", 2)]


def test_keyring_cache_needs_the_master_key_that_wrapped_the_keys(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """Loading with another master key fails with one clear error without any key in it; a malformed key is refused."""
    clinic, _ = keyed_pair
    wrong = generate_master_key()
    with psycopg.connect(servers.app_url) as conn:
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as failed:
            KeyringCache(wrong).load(conn, clinic)
        assert "is not the one that wrapped the keys" in str(failed.value)
        assert wrong not in str(failed.value) and SESSION_KEY not in str(failed.value)
        with pytest.raises(LookupError, match="no keyring loaded"):
            KeyringCache(SESSION_KEY).keyring(clinic)
    with pytest.raises(MasterKeyError):
        KeyringCache("not a key")


def test_another_clinics_keyring_finds_nothing(servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID]) -> None:
    """The same SSN under another clinic's keys matches no row, and that clinic's keyring decrypts nothing here."""
    clinic, other = keyed_pair
    cache = KeyringCache(SESSION_KEY)
    with psycopg.connect(servers.app_url) as conn:
        cache.load(conn, clinic)
        cache.load(conn, other)
        assert cache.blind_index(clinic, "public.patients", "ssn", SSN) != cache.blind_index(
            other, "public.patients", "ssn", SSN
        )
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="no master key is in force"),
            _keyed(conn, cache, clinic, ring_of=other),
        ):
            conn.execute("select ssn from patients_decrypted where mrn = 'C0-3'").fetchall()
        values = cache.blind_index(other, "public.patients", "ssn", SSN)
        with _keyed(conn, cache, clinic):
            found = conn.execute(
                sql.SQL("select mrn from patients_decrypted where {}").format(
                    blind_index_condition("ssn_blind_index", values)
                ),
                values,
            ).fetchall()
    assert found == []


def test_shred_makes_a_cached_keyring_stale_and_unloadable(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """After a shred the cached keyring is refused at the next statement and cannot be loaded again."""
    clinic, other = keyed_pair
    cache = KeyringCache(SESSION_KEY)
    with psycopg.connect(servers.app_url) as conn:
        cache.load(conn, clinic)
        cache.load(conn, other)
        encryption.shred(servers.admin_url, clinic, "test")
        with pytest.raises(psycopg.Error) as stale:
            _lookup(conn, cache, clinic, SSN, as_of=clinic)
        assert is_stale_keyring(stale.value)
        cache.invalidate(clinic)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="were shredded"):
            cache.load(conn, clinic)
        with pytest.raises(psycopg.Error) as also_stale:
            _lookup(conn, cache, other, SSN, as_of=other)
        assert is_stale_keyring(also_stale.value), "any key change makes every cached keyring reload once"
        cache.invalidate()
        cache.load(conn, other)
        assert _lookup(conn, cache, other, SSN, as_of=other) == [("C1-3", SSN)]


def test_keyring_cache_load_refuses_an_open_transaction(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """Loading inside the caller's transaction is refused: the master key must not stay in force in it."""
    clinic, _ = keyed_pair
    with psycopg.connect(servers.app_url) as conn:
        conn.execute("select 1")
        with pytest.raises(RuntimeError, match="outside a transaction"):
            KeyringCache(SESSION_KEY).load(conn, clinic)


def test_blind_index_condition_has_one_placeholder_per_value() -> None:
    """The lookup condition binds each blind index value separately (a prepared statement keeps a generic plan)."""
    assert blind_index_condition("ssn_blind_index", [b"a", b"b"]).as_string(None) == '"ssn_blind_index" in (%s, %s)'
    assert blind_index_condition("ssn_blind_index", []).as_string(None) == "false"


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_driver_with_a_keyring_cache_needs_no_master_key_and_reloads_after_a_rotation(
    servers: ServerSet, keyed_pair: tuple[uuid.UUID, uuid.UUID], flavour: str
) -> None:
    """``ClinicDB(keyring=...)`` reads and writes encrypted columns with the cached keyring, never the master key.

    After an operator rotates the clinic's key, the cached keyring is stale: ``run_read`` drops it, reloads and
    runs again (one retry); a plain ``read()`` block fails with 55K01 once and the next one works.
    """
    clinic, other = keyed_pair
    cache = KeyringCache(SESSION_KEY)
    plain = ClinicDB(servers.app_url, keyring=cache, min_size=1, max_size=1)
    db: Any = (
        plain
        if flavour == "sync"
        else AsyncFacade(AsyncClinicDB(servers.app_url, keyring=cache, min_size=1, max_size=1))
    )
    if flavour == "async":
        plain.close()
    try:
        with db.write(clinic) as cur:
            cur.execute(
                "insert into patients (mrn, given_name, family_name, ssn) values ('KR-1', 'Kim', 'Ring', %s)", (SSN,)
            )
            assert cur.execute("select current_setting('app.master_key', true)").fetchone() in [(None,), ("",)]
        assert cache.loaded(clinic) and not cache.loaded(other)

        def ssn_of(cur: Any) -> Any:
            return cur.execute("select ssn from patients_decrypted where mrn = 'KR-1'").fetchone()

        assert db.run_read(ssn_of, clinic) == (SSN,)
        values = db.blind_index(clinic, "public.patients", "ssn", SSN)
        with db.read(clinic) as cur:
            query = sql.SQL("select mrn from patients where {}").format(
                blind_index_condition("ssn_blind_index", values)
            )
            assert sorted(r[0] for r in cur.execute(query, values).fetchall()) == ["C0-3", "KR-1"]
        encryption.rotate(servers.admin_url, clinic, SESSION_KEY)
        assert db.run_read(ssn_of, clinic) == (SSN,)
        assert db.metrics()["retries"]["read"] == 1
        encryption.rotate(servers.admin_url, clinic, SESSION_KEY)
        with pytest.raises(psycopg.Error) as stale, db.read(clinic) as cur:
            ssn_of(cur)
        assert is_stale_keyring(stale.value) and not cache.loaded(clinic)
        with db.read(clinic) as cur:
            assert ssn_of(cur) == (SSN,)
    finally:
        db.close()
