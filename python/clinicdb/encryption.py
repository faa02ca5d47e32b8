"""Operators' key operations: rotate, shred, re-wrap, re-encrypt, status.

Each function connects with an operator's URL (a superuser: the key tables
are tenant tables and an operator must see every clinic), puts the master
key in force for its transactions only (``clinicdb.keys.set_master_key``)
with parameter logging switched off, and calls the SQL functions of
``sql/functions/clinic_keys.sql`` and ``sql/functions/reencrypt.sql``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from clinicdb.keys import NEW_MASTER_KEY_SETTING, quiet_parameters, set_master_key

Conn = psycopg.Connection[tuple[Any, ...]]


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
            "  from clinicdb.clinic_keys k left join public.clinics c on c.id = k.clinic_id"
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
        conn.execute("select set_config('app.clinic_id', %s, true)", (str(plan.clinic_id),))
        row = conn.execute(
            "select last_id, rows_scanned, rows_rewritten from clinicdb.reencrypt_batch(%s::regclass, %s, %s)",
            (plan.table, plan.resume_after, batch_size),
        ).fetchone()
        conn.execute("reset role")
        assert row is not None
        last_id, scanned, rewritten = row[0], int(row[1]), int(row[2])
        conn.execute(
            "insert into clinicdb.reencrypt_progress as p"
            " (table_name, clinic_id, target_version, last_id, rows_scanned, rows_rewritten)"
            " values (%s::regclass, %s, %s, %s, %s, %s)"
            " on conflict (table_name, clinic_id, target_version) do update"
            "   set last_id = coalesce(excluded.last_id, p.last_id),"
            "       rows_scanned = p.rows_scanned + excluded.rows_scanned,"
            "       rows_rewritten = p.rows_rewritten + excluded.rows_rewritten, updated_at = now()",
            (plan.table, plan.clinic_id, plan.target_version, last_id, scanned, rewritten),
        )
    return last_id, scanned, rewritten


def _remaining(conn: Conn, plan: ReencryptPlan, master_key: str) -> int:
    with _keyed(conn, master_key):
        conn.execute("set local role clinicdb_app")
        conn.execute("select set_config('app.clinic_id', %s, true)", (str(plan.clinic_id),))
        row = conn.execute("select clinicdb.reencrypt_remaining(%s::regclass)", (plan.table,)).fetchone()
        conn.execute("reset role")
    return int(row[0]) if row else 0


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
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    result = ReencryptResult(plans=plans if plans is not None else reencrypt_plan(admin_url, clinic))
    with psycopg.connect(admin_url) as conn:
        for plan in result.plans:
            for _attempt in range(3):
                while True:
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
                if _remaining(conn, plan, master_key) == 0:
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
