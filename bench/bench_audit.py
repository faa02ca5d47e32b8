"""Audit trail overhead: the same workload on the same table with and without auditing.

Workloads, each as the application runs them (a clinicdb_app login, one
transaction per operation with app.clinic_id, app.user_id and app.request_id
set, then commit):

* single-row INSERT into patients
* single-row UPDATE of two columns (address, email) of a random patient
* single-row DELETE of a patient
* one INSERT ... SELECT of 100,000 patients

Three configurations of public.patients are measured in the same run, switched
between rounds: each round measures the baseline and then the candidate, and
the printed ratio is the median of the rounds' ratios (the printed ops/s are
the medians of each side):

* ``none``: no audit trigger (the baseline),
* ``clinicdb``: the clinicdb trail (statement-level INSERT/DELETE with
  transition tables, row-level UPDATE, partitioned clinicdb.audit_log),
* ``jsonb``: the common design for comparison -- a row-level trigger writing
  to_jsonb(OLD) and to_jsonb(NEW) with the same context into a plain table
  with two indexes.
* ``clinicdb-row`` (not run by default; ``MODES``): the clinicdb trail with
  its INSERT/DELETE capture as a row-level trigger, to weigh statement-level
  against row-level capture on the same table and trail.

Ratios are audited throughput / baseline throughput (higher is better).

Then the cost of tamper evidence with many clinics: the same SEAL_ROWS audit
rows, spread over SEAL_CLINICS clinics (one hash chain each) and then written
by a single clinic, each in a database of its own, sealed in one round and
verified (``clinicdb.seal_audit``, ``clinicdb.verify_audit``). The ratio is
rows/s with many chains over rows/s with one; the notes give seconds per
million rows.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Callable

import psycopg

from bench.harness import PairedRatio, Ratio, paired, throughput
from clinicdb.devcluster.testing import ServerSet, scratch_database

# Which patient to update: not security relevant, seeded for repeatable runs.
_RANDOM = random.Random(4)  # noqa: S311
BULK_ROWS = 100_000
ROUNDS = 5
WORKLOADS = [
    ("single-row INSERT", "insert", 0.75),
    ("single-row UPDATE (2 columns)", "update", 0.75),
    ("single-row DELETE", "delete", 0.75),
    (f"INSERT ... SELECT {BULK_ROWS:,} rows", "bulk", 0.6),
]
MODES = ("clinicdb", "jsonb")
_MODE_NAMES = {
    "clinicdb": "clinicdb trail",
    "clinicdb-row": "clinicdb trail, row-level INSERT/DELETE",
    "jsonb": "plain jsonb row trigger",
}
SECONDS = 1.5
SEAL_ROWS = 200_000
SEAL_CLINICS = 1_000
# Audit rows as the capture functions write them for a patient insert, spread over N clinics (the no-clinic chain
# gets every hundredth), committed in ten transactions.
_SEAL_FILL = """
insert into clinicdb.audit_log (clinic_id, table_name, row_id, action, new_values, app_user, request_id)
select case when g %% 100 = 0 then null
            else ('00000000-0000-4000-8000-' || lpad((g %% %(clinics)s::integer)::text, 12, '0'))::uuid end,
       'public.patients', gen_random_uuid()::text, 'insert',
       jsonb_build_object('id', gen_random_uuid(), 'mrn', 'M-' || g, 'given_name', 'Ann', 'family_name', 'Example',
                          'birth_date', '1980-01-01', 'address', '1 Bench Road', 'phone', '555-0100'),
       'user-' || g %% 50, md5(g::text)
  from generate_series(%(first)s::integer, %(last)s::integer) g
"""

_JSONB_TRIGGER = """
create schema if not exists bench_jsonb_audit;
create table if not exists bench_jsonb_audit.logged_actions (
    id bigserial primary key,
    logged_at timestamptz not null default clock_timestamp(),
    table_name text not null,
    row_id text,
    action text not null,
    old_row jsonb,
    new_row jsonb,
    app_user text,
    request_id text,
    session_role name,
    acting_role name,
    txid bigint,
    client_addr inet,
    application_name text
);
create index if not exists logged_actions_row_idx on bench_jsonb_audit.logged_actions (row_id);
create index if not exists logged_actions_time_idx on bench_jsonb_audit.logged_actions (logged_at);
create or replace function bench_jsonb_audit.capture() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_old jsonb := case when tg_op <> 'INSERT' then to_jsonb(old) end;
    v_new jsonb := case when tg_op <> 'DELETE' then to_jsonb(new) end;
begin
    insert into bench_jsonb_audit.logged_actions (table_name, row_id, action, old_row, new_row, app_user, request_id,
                                                  session_role, acting_role, txid, client_addr, application_name)
    values (tg_table_schema || '.' || tg_table_name, coalesce(v_new, v_old) ->> 'id', lower(tg_op), v_old, v_new,
            current_setting('app.user_id', true), current_setting('app.request_id', true), session_user,
            current_user, txid_current(), inet_client_addr(), current_setting('application_name', true));
    return null;
end $$;

-- The clinicdb trail's INSERT/DELETE capture as a row-level trigger: the same
-- row into the same partitioned table, to weigh statement- against row-level.
create or replace function bench_jsonb_audit.capture_row() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan as $$
declare
    v_image jsonb := (case when tg_op = 'INSERT' then to_jsonb(new) else to_jsonb(old) end) - tg_argv[0]::text[];
begin
    insert into clinicdb.audit_log (id, logged_at, statement_at, txid, clinic_id, table_name, row_id, action,
                                    old_values, new_values, app_user, request_id, session_role, acting_role,
                                    client_addr, application_name)
    values (nextval('clinicdb.audit_log_id_seq'), clock_timestamp(), statement_timestamp(), txid_current(),
            (v_image ->> 'clinic_id')::uuid, tg_table_schema || '.' || tg_table_name, v_image ->> 'id', lower(tg_op),
            case when tg_op = 'DELETE' then v_image end, case when tg_op = 'INSERT' then v_image end,
            nullif(current_setting('app.user_id', true), ''), nullif(current_setting('app.request_id', true), ''),
            session_user, coalesce(nullif(current_setting('role'), 'none'), session_user),
            inet_client_addr(), nullif(current_setting('application_name', true), ''));
    return null;
end $$;
"""


def _configure(admin_url: str, mode: str) -> None:
    """Put public.patients in one configuration: none, clinicdb or jsonb."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("select clinicdb.detach_audit('public.patients')")
        conn.execute("drop trigger if exists bench_jsonb_audit on public.patients")
        if mode == "clinicdb":
            conn.execute("select clinicdb.attach_audit('public.patients')")
        elif mode == "clinicdb-row":
            conn.execute("select clinicdb.attach_audit('public.patients')")
            conn.execute("drop trigger clinicdb_audit_insert on public.patients")
            conn.execute("drop trigger clinicdb_audit_delete on public.patients")
            conn.execute(
                "create trigger clinicdb_audit_insert after insert or delete on public.patients"
                " for each row execute function bench_jsonb_audit.capture_row('{updated_at}')"
            )
        elif mode == "jsonb":
            conn.execute(
                "create trigger bench_jsonb_audit after insert or update or delete on public.patients"
                " for each row execute function bench_jsonb_audit.capture()"
            )


class _Workload:
    """One app connection working for one clinic."""

    def __init__(self, app_url: str, clinic: uuid.UUID) -> None:
        self.conn = psycopg.connect(app_url)
        self.clinic = str(clinic)
        self.ids: list[uuid.UUID] = []

    def _begin(self) -> None:
        self.conn.execute(
            "select set_config('app.clinic_id', %s, true), set_config('app.user_id', %s, true),"
            " set_config('app.request_id', %s, true)",
            (self.clinic, "bench-user", uuid.uuid4().hex),
        )

    def insert(self) -> None:
        self._begin()
        self.conn.execute(
            "insert into patients (mrn, given_name, family_name, address)"
            " values (%s, 'Bench', 'Patient', '1 Bench Road')",
            (uuid.uuid4().hex,),
        )
        self.conn.commit()

    def update(self) -> None:
        self._begin()
        self.conn.execute(
            "update patients set address = %s, email = %s where id = %s",
            (f"555-{_RANDOM.randrange(10_000):04d}", f"{uuid.uuid4().hex[:8]}@example.test", _RANDOM.choice(self.ids)),
        )
        self.conn.commit()

    def delete(self) -> None:
        self._begin()
        self.conn.execute("delete from patients where id = %s", (self.ids.pop(),))
        self.conn.commit()

    def fill(self, rows: int) -> None:
        """Patients to update or delete (not timed)."""
        self._begin()
        cur = self.conn.execute(
            "insert into patients (mrn, given_name, family_name) select gen_random_uuid()::text, 'Fill', 'Row'"
            " from generate_series(1, %s) returning id",
            (rows,),
        )
        self.ids = [r[0] for r in cur.fetchall()]
        self.conn.commit()

    def bulk(self) -> float:
        """Seconds for one INSERT ... SELECT of BULK_ROWS rows."""
        self._begin()
        started = time.perf_counter()
        self.conn.execute(
            "insert into patients (mrn, given_name, family_name, birth_date, address)"
            " select gen_random_uuid()::text, 'Bulk', 'Patient ' || g, date '1980-01-01' + g %% 9000, '555-0100'"
            " from generate_series(1, %s) g",
            (BULK_ROWS,),
        )
        self.conn.commit()
        return time.perf_counter() - started


def _clear(admin_url: str, clinic: uuid.UUID) -> None:
    """Remove the clinic's patients without firing triggers (not timed), then vacuum."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("set local session_replication_role = replica")
            conn.execute("delete from public.patients where clinic_id = %s", (clinic,))
        conn.execute("vacuum (analyze) public.patients")


def _analyze(admin_url: str) -> None:
    """Fresh statistics, so single-row statements use the primary key as they would in production."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("analyze public.patients")


def _measure(servers: ServerSet, clinic: uuid.UUID, mode: str, op: str) -> float:
    """ops/s (single-row) or rows/s (bulk) of one workload in one configuration."""
    _configure(servers.admin_url, mode)
    work = _Workload(servers.app_url, clinic)
    try:
        if op == "bulk":
            return BULK_ROWS / work.bulk()
        if op in ("update", "delete"):
            work.fill(12_000 if op == "delete" else 2_000)
            _analyze(servers.admin_url)
        action: Callable[[], None] = getattr(work, op)
        return throughput(action, seconds=SECONDS, warmup=0.2)
    finally:
        work.conn.close()
        _clear(servers.admin_url, clinic)


def _seal_and_verify(admin_url: str, clinics: int) -> tuple[float, float, int]:
    """Seconds to seal and to verify SEAL_ROWS rows of ``clinics`` clinics in a new database; blocks made."""
    with scratch_database(admin_url, "bench_seal", migrate=True) as url, psycopg.connect(url, autocommit=True) as conn:
        batch = SEAL_ROWS // 10
        for first in range(1, SEAL_ROWS + 1, batch):
            conn.execute(_SEAL_FILL, {"clinics": clinics, "first": first, "last": first + batch - 1})
        conn.execute("vacuum analyze clinicdb.audit_log")
        started = time.perf_counter()
        conn.execute("select count(*) from clinicdb.seal_audit(10000, 1, interval '0')")
        sealed = time.perf_counter() - started
        started = time.perf_counter()
        problems = conn.execute("select count(*) from clinicdb.verify_audit()").fetchone()
        verified = time.perf_counter() - started
        blocks = conn.execute("select count(*) from clinicdb.audit_seals").fetchone()
    assert problems == (0,) and blocks is not None
    return sealed, verified, int(blocks[0])


def seal_and_verify(servers: ServerSet) -> list[Ratio]:
    """Sealing and verification rates with SEAL_CLINICS chains against one chain, for the same rows."""
    many = _seal_and_verify(servers.admin_url, SEAL_CLINICS)
    one = _seal_and_verify(servers.admin_url, 1)
    per_million = 1_000_000 / SEAL_ROWS
    ratios = []
    for i, what in enumerate(("sealing", "verifying")):
        ratio = Ratio(
            f"{what} {SEAL_ROWS:,} audit rows: {SEAL_CLINICS:,} clinics vs 1", SEAL_ROWS / many[i], SEAL_ROWS / one[i],
            unit="rows/s",
        )  # fmt: skip
        ratio.notes.append(
            f"{many[i] * per_million:.1f} s per million rows over {SEAL_CLINICS:,} chains ({many[2]:,} blocks), "
            f"{one[i] * per_million:.1f} s in one chain ({one[2]:,} blocks)"
        )
        ratios.append(ratio)
    return ratios


def run(servers: ServerSet) -> list[Ratio]:
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(_JSONB_TRIGGER)
        row = conn.execute("select clinicdb.create_clinic(%s)", (f"bench {uuid.uuid4()}",)).fetchone()
        assert row is not None
        clinic: uuid.UUID = row[0]
    ratios: list[Ratio] = []
    try:
        for label, op, target in WORKLOADS:
            for mode in MODES:
                base, cand, per_round = paired(
                    functools.partial(_measure, servers, clinic, "none", op),
                    functools.partial(_measure, servers, clinic, mode, op),
                    rounds=ROUNDS,
                )
                unit = "rows/s" if op == "bulk" else "ops/s"
                name = f"{label}: {_MODE_NAMES[mode]}"
                ratio = PairedRatio(
                    name, cand, base, target if mode == "clinicdb" else None, unit=unit, per_round=per_round
                )
                ratio.notes.append(ratio.spread)
                ratios.append(ratio)
    finally:
        _configure(servers.admin_url, "clinicdb")
    return ratios + seal_and_verify(servers)
