"""Key operations: the application's keyring cache, and operators' rotate, shred, re-wrap, re-encrypt, status.

``KeyringCache`` is for the application: it unwraps a clinic's keys once per
process with the master key the application holds, then sends them per
transaction as ``app.clinic_keyring`` (instead of the master key) and
computes blind indexes itself, so a lookup transaction needs no unwrapping
in PostgreSQL. docs/encryption.md says what that exposes.

The operators' functions connect with an operator's URL (a superuser: the
key tables are tenant tables and an operator must see every clinic), put the
master key in force for their transactions only
(``clinicdb.keys.set_master_key``) with parameter logging switched off, and
call the SQL functions of ``sql/functions/clinic_keys.sql`` and
``sql/functions/reencrypt.sql`` (on a Citus coordinator, re-encryption opens
and seals values on the coordinator instead: ``_reencrypt_citus``).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from clinicdb._reencrypt_citus import citus_batch, citus_remaining
from clinicdb._scope import make_scope, scope_sql, set_scope
from clinicdb.citus import clinic_context_statements, is_citus
from clinicdb.keys import (
    MASTER_KEY_SETTING,
    NEW_MASTER_KEY_SETTING,
    parse_master_key,
    quiet_parameters,
    set_master_key,
)

Conn = psycopg.Connection[tuple[Any, ...]]

KEYRING_SETTING = "app.clinic_keyring"
STALE_KEYRING_SQLSTATE = "55K01"


def is_stale_keyring(exc: BaseException) -> bool:
    """True for the error PostgreSQL raises when a supplied keyring predates a key change (SQLSTATE 55K01)."""
    return isinstance(exc, psycopg.Error) and exc.sqlstate == STALE_KEYRING_SQLSTATE


# What load() runs, in one transaction of its own: the clinic and the master key in force (scope_sql), the export,
# and the labels of the blind-indexed columns (blind_index() needs them).
_EXPORT = "select clinicdb.export_keyring()"
_LABELS = (
    "select n.nspname || '.' || c.relname, ec.column_name, ec.label"
    "  from clinicdb.encrypted_columns ec join pg_class c on c.oid = ec.table_name"
    "  join pg_namespace n on n.oid = c.relnamespace where ec.blind_index"
)


@dataclass(frozen=True)
class _Keyring:
    """One clinic's keys as export_keyring() gave them (never printed: repr hides the keys)."""

    text: str = field(repr=False)
    epoch: int
    active_version: int
    idx_keys: dict[int, bytes] = field(repr=False)


def _parse_keyring(text: str) -> _Keyring:
    """clinic / key epoch / active version / enc keys / mac keys / idx keys (hex lists, one per version from 1)."""
    parts = text.split("/")
    if len(parts) != 6:
        raise ValueError(f"not a clinicdb keyring ({len(text)} characters)")
    idx = {v: bytes.fromhex(h) for v, h in enumerate(parts[5].split(","), start=1) if h}
    return _Keyring(text, int(parts[1]), int(parts[2]), idx)


def blind_index_condition(column: str, values: Sequence[bytes]) -> sql.Composable:
    """``column in (%s, ...)`` with one placeholder per blind index value (pass ``values`` as the parameters).

    One placeholder per value, not ``= any(%s)`` with an array: PostgreSQL
    estimates an array parameter at ten elements, so a prepared ``= any($1)``
    is planned again on every execution, while ``in ($1)`` keeps one generic
    plan per number of live key versions.
    """
    if not values:
        return sql.SQL("false")
    return sql.SQL("{} in ({})").format(sql.Identifier(column), sql.SQL(", ").join([sql.Placeholder()] * len(values)))


class KeyringCache:
    """Clinics' keyrings, unwrapped once in this process with the master key, used per transaction without it.

    The application already holds the master key, which unwraps every
    clinic's keys; keeping one clinic's derived keys in the same process
    exposes nothing more there. In exchange, its transactions send
    ``settings(clinic)`` (``app.clinic_keyring``, as a bind parameter, like
    the master key) instead of the master key, PostgreSQL skips the
    unwrapping, and ``blind_index()`` computes lookup values here::

        cache = KeyringCache(load_master_key())
        cache.load(conn, clinic)                       # once, outside a transaction
        with conn.transaction():
            clinicdb.set_scope(conn, clinic, settings=cache.settings(clinic))
            values = cache.blind_index(clinic, "public.patients", "ssn", "123-45-6789")
            cond = blind_index_condition("ssn_blind_index", values)
            conn.execute(sql.SQL("select id, ssn from patients_decrypted where {}").format(cond), values)

    Every statement checks the keyring against ``clinicdb.key_epoch``, which
    each rotation, shred and master key rotation bumps: after one, the next
    statement fails with SQLSTATE 55K01 (``is_stale_keyring(exc)``). Call
    ``invalidate(clinic)``, ``load()`` again (which fails once the clinic is
    shredded) and rerun the transaction. So a shred or rotation takes effect
    at the application's next statement, and a lookup never misses rows of a
    key version the cached keyring lacks. Thread-safe.
    """

    def __init__(self, master_key: str) -> None:
        self._master_key = parse_master_key(master_key, "the master key")
        self._rings: dict[uuid.UUID, _Keyring] = {}
        self._labels: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<KeyringCache clinics={len(self._rings)}>"

    def load(self, conn: psycopg.Connection[Any], clinic_id: uuid.UUID) -> None:
        """Unwrap ``clinic_id``'s keyring with the master key, in a transaction of its own on ``conn`` (as the app).

        ``conn`` must not be inside a transaction: the master key is set for
        the loading transaction only. Fails (psycopg error, with the reason)
        when the clinic has no key yet or was shredded.
        """
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise RuntimeError("KeyringCache.load() needs a connection outside a transaction (it commits its own)")
        with conn.transaction():
            conn.execute(*self._load_scope(clinic_id))
            row = conn.execute(_EXPORT).fetchone()
            labels = conn.execute(_LABELS).fetchall()
        self._store(clinic_id, row, labels)

    async def load_async(self, conn: psycopg.AsyncConnection[Any], clinic_id: uuid.UUID) -> None:
        """``load()`` on an asyncio connection (what ``AsyncClinicDB`` uses)."""
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise RuntimeError("KeyringCache.load() needs a connection outside a transaction (it commits its own)")
        async with conn.transaction():
            await conn.execute(*self._load_scope(clinic_id))
            row = await (await conn.execute(_EXPORT)).fetchone()
            labels = await (await conn.execute(_LABELS)).fetchall()
        self._store(clinic_id, row, labels)

    def _load_scope(self, clinic_id: uuid.UUID) -> tuple[str, list[str]]:
        return scope_sql(make_scope(clinic_id, settings={MASTER_KEY_SETTING: self._master_key}))

    def _store(self, clinic_id: uuid.UUID, row: Any, labels: Sequence[Any]) -> None:
        assert row is not None
        ring = _parse_keyring(str(row[0]))
        with self._lock:
            self._rings[clinic_id] = ring
            for table, column, label in labels:
                raw = str(label).encode()
                self._labels[(str(table), str(column))] = struct.pack(">i", len(raw)) + raw

    def loaded(self, clinic_id: uuid.UUID) -> bool:
        """Whether ``clinic_id``'s keyring is in the cache."""
        return clinic_id in self._rings

    def keyring(self, clinic_id: uuid.UUID) -> str:
        """The ``app.clinic_keyring`` value for a transaction of ``clinic_id`` (key material: bind it, never log it)."""
        return self._ring(clinic_id).text

    def settings(self, clinic_id: uuid.UUID) -> dict[str, str]:
        """The transaction-local settings that put ``clinic_id``'s keys in force (for the driver's ``settings=``)."""
        return {KEYRING_SETTING: self.keyring(clinic_id)}

    def blind_index(self, clinic_id: uuid.UUID, table: str, column: str, value: str) -> list[bytes]:
        """The blind index values of ``value`` in ``table.column`` (``schema.table``), one per live key version.

        Computed here exactly as ``clinicdb.blind_index()`` computes them in
        the database: HMAC-SHA256(idx key, int4(len(label)) || label || value).
        """
        ring = self._ring(clinic_id)
        prefix = self._labels.get((table, column))
        if prefix is None:
            raise LookupError(
                f"{table}.{column} has no blind index (or the keyring was loaded before it was declared): "
                "declare it with clinicdb.encrypt_column(..., p_blind_index => true) and load() again"
            )
        data = prefix + value.encode()
        return [hmac.new(key, data, hashlib.sha256).digest() for _, key in sorted(ring.idx_keys.items())]

    def invalidate(self, clinic_id: uuid.UUID | None = None) -> None:
        """Forget one clinic's keyring (or all): after a stale-keyring error, a rotation or a shred."""
        with self._lock:
            if clinic_id is None:
                self._rings.clear()
            else:
                self._rings.pop(clinic_id, None)

    def _ring(self, clinic_id: uuid.UUID) -> _Keyring:
        ring = self._rings.get(clinic_id)
        if ring is None:
            raise LookupError(f"no keyring loaded for clinic {clinic_id}: call KeyringCache.load(conn, clinic) first")
        return ring


@contextmanager
def _keyed(conn: Conn, master_key: str | None) -> Iterator[Conn]:
    """One transaction with parameters unlogged and the master key in force."""
    with conn.transaction():
        quiet_parameters(conn)
        if master_key:
            set_master_key(conn, master_key)
        yield conn


def rotate(admin_url: str, clinic: uuid.UUID, master_key: str) -> int:
    """Create the clinic's next key version (the first when it has none); returns the version."""
    with psycopg.connect(admin_url) as conn, _keyed(conn, master_key):
        row = conn.execute("select clinicdb.rotate_clinic_key(%s)", (clinic,)).fetchone()
    assert row is not None
    return int(row[0])


def ensure_key(admin_url: str, clinic: uuid.UUID, master_key: str) -> int:
    """The clinic's active key version, creating the first one if it has none."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(
            "select version from clinicdb.clinic_keys where clinic_id = %s and state = 'active'", (clinic,)
        ).fetchone()
    return int(row[0]) if row else rotate(admin_url, clinic, master_key)


def shred(admin_url: str, clinic: uuid.UUID, reason: str | None = None) -> int:
    """Destroy every wrapped key of the clinic (crypto-shredding); returns the versions shredded."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("select clinicdb.shred_clinic_keys(%s, %s)", (clinic, reason)).fetchone()
        conn.commit()
    assert row is not None
    return int(row[0])


def rewrap(admin_url: str, master_key: str, new_master_key: str) -> int:
    """Master key rotation: re-wrap every live data key under ``new_master_key``; returns keys re-wrapped."""
    with psycopg.connect(admin_url) as conn, _keyed(conn, master_key):
        set_master_key(conn, new_master_key, setting=NEW_MASTER_KEY_SETTING)
        row = conn.execute("select clinicdb.rewrap_clinic_keys()").fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class KeyVersion:
    """One key version of one clinic, as operators see it (no key material)."""

    clinic_id: uuid.UUID
    clinic: str | None
    version: int
    state: str
    master_key_id: str | None
    created_at: Any
    shredded_at: Any


def status(admin_url: str, clinic: uuid.UUID | None = None) -> list[KeyVersion]:
    """Every clinic's key versions (or one clinic's)."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            "select k.clinic_id, c.name, k.version, k.state, k.master_key_id, k.created_at, k.shredded_at"
            "  from clinicdb.clinic_keys k left join clinicdb.clinics c on c.id = k.clinic_id"
            " where %(clinic)s::uuid is null or k.clinic_id = %(clinic)s"
            " order by c.name, k.clinic_id, k.version",
            {"clinic": clinic},
        ).fetchall()
    return [KeyVersion(*row) for row in rows]


def key_usage(admin_url: str, clinic: uuid.UUID | None = None) -> list[tuple[Any, ...]]:
    """(table, column, clinic id, key version, values stored) for every encrypted column (or one clinic's)."""
    with psycopg.connect(admin_url) as conn:
        return conn.execute(
            "select table_name, column_name, clinic_id, key_version, values_stored from clinicdb.key_usage()"
            " where %(clinic)s::uuid is null or clinic_id = %(clinic)s",
            {"clinic": clinic},
        ).fetchall()


@dataclass
class ReencryptPlan:
    """One table of one clinic to move to the clinic's active key version."""

    table: str
    clinic_id: uuid.UUID
    target_version: int
    total_rows: int
    resume_after: uuid.UUID | None = None
    done_rows: int = 0


@dataclass
class ReencryptResult:
    """What a re-encryption run did."""

    plans: list[ReencryptPlan] = field(default_factory=list)
    rows_scanned: int = 0
    rows_rewritten: int = 0
    # Citus only: rows the application rewrote between a batch's read and its update, left as written.
    rows_skipped: int = 0


def reencrypt_plan(admin_url: str, clinic: uuid.UUID | None = None) -> list[ReencryptPlan]:
    """Tables and clinics with a key version older than the active one, with where an earlier run stopped."""
    with psycopg.connect(admin_url) as conn:
        clinics = conn.execute(
            "select a.clinic_id, a.version from clinicdb.clinic_keys a"
            " where a.state = 'active' and (%(clinic)s::uuid is null or a.clinic_id = %(clinic)s)"
            "   and exists (select 1 from clinicdb.clinic_keys o where o.clinic_id = a.clinic_id"
            "               and o.state = 'retired')"
            " order by a.clinic_id",
            {"clinic": clinic},
        ).fetchall()
        tables = [
            r[0]
            for r in conn.execute(
                "select distinct table_name::text from clinicdb.encrypted_columns order by 1"
            ).fetchall()
        ]
        plans = []
        for clinic_id, version in clinics:
            for table in tables:
                # table is a regclass's text from the registry: already quoted.
                total = conn.execute(f"select count(*) from {table} where clinic_id = %s", (clinic_id,)).fetchone()
                progress = conn.execute(
                    "select last_id, rows_scanned, finished_at from clinicdb.reencrypt_progress"
                    " where table_name = %s::regclass and clinic_id = %s and target_version = %s",
                    (table, clinic_id, version),
                ).fetchone()
                plan = ReencryptPlan(table, clinic_id, int(version), int(total[0]) if total else 0)
                if progress and progress[2] is None:
                    plan.resume_after, plan.done_rows = progress[0], int(progress[1])
                plans.append(plan)
    return plans


def _batch(conn: Conn, plan: ReencryptPlan, master_key: str, batch_size: int) -> tuple[uuid.UUID | None, int, int]:
    """One committed batch as the application for the plan's clinic, with its checkpoint."""
    with _keyed(conn, master_key):
        conn.execute("set local role clinicdb_app")
        set_scope(conn, plan.clinic_id)
        row = conn.execute(
            "select last_id, rows_scanned, rows_rewritten from clinicdb.reencrypt_batch(%s::regclass, %s, %s)",
            (plan.table, plan.resume_after, batch_size),
        ).fetchone()
        conn.execute("reset role")
        assert row is not None
        last_id, scanned, rewritten = row[0], int(row[1]), int(row[2])
        _checkpoint(conn, plan, last_id, scanned, rewritten)
    return last_id, scanned, rewritten


_CHECKPOINT = (
    "insert into clinicdb.reencrypt_progress as p"
    " (table_name, clinic_id, target_version, last_id, rows_scanned, rows_rewritten)"
    " values (%s::regclass, %s, %s, %s, %s, %s)"
    " on conflict (table_name, clinic_id, target_version) do update"
    "   set last_id = coalesce(excluded.last_id, p.last_id),"
    "       rows_scanned = p.rows_scanned + excluded.rows_scanned,"
    "       rows_rewritten = p.rows_rewritten + excluded.rows_rewritten, updated_at = "
)


def _checkpoint(
    conn: Conn, plan: ReencryptPlan, last_id: uuid.UUID | None, scanned: int, rewritten: int, *, citus: bool = False
) -> None:
    """Record a batch in clinicdb.reencrypt_progress, in the batch's transaction.

    Citus refuses a non-immutable function such as now() in ON CONFLICT DO
    UPDATE on its (reference) tables: there the inserted row's default, which
    the coordinator evaluates, gives the time.
    """
    conn.execute(
        _CHECKPOINT + ("excluded.updated_at" if citus else "now()"),
        (plan.table, plan.clinic_id, plan.target_version, last_id, scanned, rewritten),
    )


def _citus_batch(
    conn: Conn, plan: ReencryptPlan, master_key: str, batch_size: int
) -> tuple[uuid.UUID | None, int, int, int]:
    """One committed batch on a Citus coordinator, as the operator, with its checkpoint (_reencrypt_citus).

    The clinic is in force by the ``SET LOCAL`` statements Citus carries to
    the workers (for the shards' audit rows); the master key by
    ``set_config`` on the coordinator only, where the values are opened and
    sealed again.
    """
    with _keyed(conn, master_key):
        for statement in clinic_context_statements(plan.clinic_id):
            conn.execute(statement)
        last_id, scanned, rewritten, skipped = citus_batch(
            conn, plan.table, plan.clinic_id, plan.resume_after, batch_size
        )
        _checkpoint(conn, plan, last_id, scanned, rewritten, citus=True)
    return last_id, scanned, rewritten, skipped


def _remaining(conn: Conn, plan: ReencryptPlan, master_key: str) -> int:
    with _keyed(conn, master_key):
        conn.execute("set local role clinicdb_app")
        set_scope(conn, plan.clinic_id)
        row = conn.execute("select clinicdb.reencrypt_remaining(%s::regclass)", (plan.table,)).fetchone()
        conn.execute("reset role")
    return int(row[0]) if row else 0


def _citus_remaining(conn: Conn, plan: ReencryptPlan, master_key: str) -> int:
    with _keyed(conn, master_key):
        return citus_remaining(conn, plan.table, plan.clinic_id)


def reencrypt(
    admin_url: str,
    master_key: str,
    *,
    clinic: uuid.UUID | None = None,
    batch_size: int = 500,
    plans: list[ReencryptPlan] | None = None,
    on_batch: Callable[[ReencryptPlan, int], None] | None = None,
) -> ReencryptResult:
    """Move every value under an older key version to its clinic's active version, online and resumable.

    Batches of ``batch_size`` rows commit one by one together with their
    checkpoint in clinicdb.reencrypt_progress; a run that is interrupted (an
    exception from ``on_batch``, a lost connection, Ctrl-C) resumes after the
    last committed batch. After the walk, rows written meanwhile by a
    transaction that still used the old version are caught by a second pass.

    On a Citus coordinator the values are opened and sealed again on the
    coordinator (the workers never hold a key) and written back only where
    the row still holds what the batch read; a row the application changed
    meanwhile counts in ``rows_skipped`` (docs/citus.md).
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    result = ReencryptResult(plans=plans if plans is not None else reencrypt_plan(admin_url, clinic))
    with psycopg.connect(admin_url) as conn:
        with conn.transaction():  # committed: each batch below must be a transaction of its own, not a savepoint
            on_citus = is_citus(conn)
        for plan in result.plans:
            for _attempt in range(3):
                while True:
                    if on_citus:
                        last_id, scanned, rewritten, skipped = _citus_batch(conn, plan, master_key, batch_size)
                        result.rows_skipped += skipped
                    else:
                        last_id, scanned, rewritten = _batch(conn, plan, master_key, batch_size)
                    result.rows_scanned += scanned
                    result.rows_rewritten += rewritten
                    plan.done_rows += scanned
                    if last_id is not None:
                        plan.resume_after = last_id
                    if on_batch is not None:
                        on_batch(plan, scanned)
                    if scanned < batch_size:
                        break
                remaining = _citus_remaining if on_citus else _remaining
                if remaining(conn, plan, master_key) == 0:
                    break
                plan.resume_after = None  # rows written under the old version meanwhile: walk again
            with conn.transaction():
                conn.execute(
                    "update clinicdb.reencrypt_progress set finished_at = now()"
                    " where table_name = %s::regclass and clinic_id = %s and target_version = %s",
                    (plan.table, plan.clinic_id, plan.target_version),
                )
                conn.execute(
                    "insert into clinicdb.key_events (clinic_id, event, key_version, detail)"
                    " values (%s, 'reencrypt', %s, jsonb_build_object('table', %s::text))",
                    (plan.clinic_id, plan.target_version, plan.table),
                )
    return result
