"""Encryption benchmark (issue #5): clinicdb's encrypted columns against plaintext, pgcrypto's defaults beside.

Three ratios, each against a plaintext copy measured in the same run, as the
application (clinicdb_app, clinic and master key in force):

* decrypt-select: 10,000 rows of a 40-byte value read through the decrypting
  view, divided by the same rows read from an unencrypted copy (rows/s);
* insert: 100,000 rows written as plaintext into the write slot (encrypted and
  blind-indexed by the table's trigger) in one INSERT ... SELECT, divided by
  the same insert into the unencrypted copy (rows/s);
* lookup: find one row by value through the blind index and return it
  decrypted (one transaction per lookup, settings included), divided by an
  indexed lookup on the plaintext copy. The candidate is the application
  path of docs/encryption.md: a ``KeyringCache`` loaded once (before timing,
  as a connection pool is opened before serving) sends ``app.clinic_keyring``
  instead of the master key and computes the blind index in the process;
  the row is read through the decrypting view, which checks the keyring
  against ``clinicdb.key_epoch`` and decrypts in PostgreSQL. Both sides run
  the same three round trips (settings, select, commit), and psycopg
  prepares both statements after five runs. The in-database path (master
  key per transaction, ``clinicdb.blind_index()`` in SQL) is printed beside.

pgcrypto's pgp_sym_encrypt/decrypt with default options (iterated S2K on every
call) and with s2k-mode=1, cipher-algo=aes256 are measured on samples of rows
(the defaults are too slow for the full counts) and printed beside, as rows/s
ratios against plaintext baselines of the same sample size. Before timing, a flipped
ciphertext byte is checked to fail loudly (the integrity target).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable

import psycopg

from bench.harness import Ratio, interleaved, throughput
from clinicdb.devcluster.testing import ServerSet
from clinicdb.encryption import KEYRING_SETTING, KeyringCache, blind_index_condition
from clinicdb.keys import generate_master_key

SELECT_ROWS = 10_000
INSERT_ROWS = 100_000
PGP_SAMPLE = 300
PGP_PASSWORD = "bench-password-not-a-real-key"  # noqa: S105 - a benchmark fixture


def _value(i: int) -> str:
    """A 40-byte value, as in the issue."""
    return f"value-{i:034d}"


def _setup(admin_url: str, key: str) -> uuid.UUID:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for table in ("bench_plain", "bench_encrypted", "bench_pgp_default", "bench_pgp_s2k1"):
            conn.execute(f"drop table if exists public.{table} cascade")
            conn.execute(f"delete from clinicdb.protected_tables where table_name::text = '{table}'")
            conn.execute(f"delete from clinicdb.encrypted_columns where table_name::text = '{table}'")
        clinic = uuid.uuid4()
        conn.execute("select clinicdb.create_clinic(%s, %s)", (f"bench {clinic}", clinic))
        with conn.transaction():
            conn.execute("select set_config('app.master_key', %s, true)", (key,))
            conn.execute("select clinicdb.rotate_clinic_key(%s)", (clinic,))
        for table, kind in (("bench_plain", "text"), ("bench_encrypted", "text"), ("bench_pgp_default", "bytea"),
                            ("bench_pgp_s2k1", "bytea")):  # fmt: skip
            conn.execute(
                f"create table public.{table} (id uuid primary key default gen_random_uuid(),"
                f" clinic_id uuid not null references clinicdb.clinics (id), v {kind}, unique (clinic_id, id))"
            )
            conn.execute(f"alter table public.{table} owner to clinicdb_owner")
            conn.execute(f"grant select, insert, update, delete on public.{table} to clinicdb_app")
            conn.execute(f"select clinicdb.protect_table('public.{table}')")
        conn.execute("create index on public.bench_plain (clinic_id, v)")
        with conn.transaction():
            conn.execute("select set_config('app.master_key', %s, true)", (key,))
            conn.execute("select clinicdb.encrypt_column('public.bench_encrypted', 'v', p_blind_index => true)")
    return clinic


def _pgcrypto_schema(admin: psycopg.Connection[tuple[object, ...]]) -> str:
    """Where pgcrypto is installed; the app may call its pgp_sym_* functions (for the comparison only)."""
    row = admin.execute(
        "select quote_ident(n.nspname) from pg_extension e join pg_namespace n on n.oid = e.extnamespace"
        " where e.extname = 'pgcrypto'"
    ).fetchone()
    assert row is not None
    schema = str(row[0])
    admin.execute(f"grant usage on schema {schema} to clinicdb_app")
    signatures = ("pgp_sym_encrypt(text, text)", "pgp_sym_encrypt(text, text, text)", "pgp_sym_decrypt(bytea, text)")
    for signature in signatures:
        admin.execute(f"grant execute on function {schema}.{signature} to clinicdb_app")
    return schema


def _app(app_url: str, clinic: uuid.UUID, key: str | None) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(app_url)
    conn.execute("select set_config('app.clinic_id', %s, false)", (str(clinic),))
    if key:
        conn.execute("select set_config('app.master_key', %s, false)", (key,))
    conn.commit()
    return conn


_VALUE_SQL = "'value-' || lpad(g::text, 34, '0')"


def _fill(conn: psycopg.Connection[tuple[object, ...]], table: str, rows: int, expr: str = "{v}") -> None:
    """Insert ``rows`` 40-byte values (through ``expr``) in one statement, as the app."""
    conn.execute(f"insert into public.{table} (v) select {expr.format(v=_VALUE_SQL)} from generate_series(1, {rows}) g")
    conn.commit()


def _timed(op: Callable[[], int], *, repeat: int = 1) -> float:
    """Rows per second of ``op`` (which returns the rows it handled), best of ``repeat``."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        rows = op()
        best = max(best, rows / (time.perf_counter() - start))
    return best


def _tamper_detected(admin_url: str, app_url: str, clinic: uuid.UUID, key: str) -> bool:
    """Flip one ciphertext byte of one row (committed), read it as the app, restore it."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        row = admin.execute("select id, v_ciphertext from public.bench_encrypted order by id limit 1").fetchone()
        assert row is not None
        row_id, original = row
        admin.execute(
            "update public.bench_encrypted set v_ciphertext = set_byte(v_ciphertext, 30,"
            " get_byte(v_ciphertext, 30) # 1) where id = %s",
            (row_id,),
        )
        try:
            with _app(app_url, clinic, key) as app:
                app.execute("select v from public.bench_encrypted_decrypted where id = %s", (row_id,)).fetchall()
        except psycopg.errors.DataCorrupted:
            detected = True
        else:
            detected = False
        admin.execute("update public.bench_encrypted set v_ciphertext = %s where id = %s", (original, row_id))
    return detected


def run(servers: ServerSet) -> list[Ratio]:
    key = generate_master_key()
    clinic = _setup(servers.admin_url, key)
    admin = psycopg.connect(servers.admin_url, autocommit=True)
    pgp = _pgcrypto_schema(admin)

    def truncate(table: str) -> None:
        admin.execute(f"truncate public.{table}")

    app = _app(servers.app_url, clinic, key)
    _fill(app, "bench_plain", SELECT_ROWS)
    _fill(app, "bench_encrypted", SELECT_ROWS)
    _fill(app, "bench_pgp_default", PGP_SAMPLE, f"{pgp}.pgp_sym_encrypt({{v}}, '{PGP_PASSWORD}')")
    _fill(app, "bench_pgp_s2k1", PGP_SAMPLE,
          f"{pgp}.pgp_sym_encrypt({{v}}, '{PGP_PASSWORD}', 's2k-mode=1, cipher-algo=aes256')")  # fmt: skip
    for table in ("bench_plain", "bench_encrypted", "bench_pgp_default", "bench_pgp_s2k1"):
        admin.execute(f"analyze public.{table}")
    tamper = _tamper_detected(servers.admin_url, servers.app_url, clinic, key)

    def select(sql: str) -> Callable[[], float]:
        def op() -> int:
            rows = app.execute(sql).fetchall()
            app.commit()
            return len(rows)

        return lambda: _timed(op, repeat=5)

    plain_select = select("select id, v from public.bench_plain")
    base, cand = interleaved(plain_select, select("select id, v from public.bench_encrypted_decrypted"))
    # pgp_sym_* is measured on a sample: its baseline reads as many plaintext rows.
    sample_base = select(f"select id, v from public.bench_plain limit {PGP_SAMPLE}")()
    sample_ours = select(f"select id, v from public.bench_encrypted_decrypted limit {PGP_SAMPLE}")()
    pgp_default = select(f"select id, {pgp}.pgp_sym_decrypt(v, '{PGP_PASSWORD}') from public.bench_pgp_default")()
    pgp_s2k1 = select(f"select id, {pgp}.pgp_sym_decrypt(v, '{PGP_PASSWORD}') from public.bench_pgp_s2k1")()

    def insert(table: str, rows: int, expr: str = "{v}") -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter()
            _fill(app, table, rows, expr)
            elapsed = time.perf_counter() - start
            truncate(table)
            return rows / elapsed

        return measure

    ins_base, ins_cand = interleaved(
        insert("bench_plain", INSERT_ROWS), insert("bench_encrypted", INSERT_ROWS), rounds=2
    )
    ins_sample_base = insert("bench_plain", PGP_SAMPLE)()
    ins_sample10_base = insert("bench_plain", PGP_SAMPLE * 10)()
    ins_sample10_ours = insert("bench_encrypted", PGP_SAMPLE * 10)()
    ins_pgp_default = insert("bench_pgp_default", PGP_SAMPLE, f"{pgp}.pgp_sym_encrypt({{v}}, '{PGP_PASSWORD}')")()
    s2k1 = f"{pgp}.pgp_sym_encrypt({{v}}, '{PGP_PASSWORD}', 's2k-mode=1, cipher-algo=aes256')"
    ins_pgp_s2k1 = insert("bench_pgp_s2k1", PGP_SAMPLE * 10, s2k1)()

    # Lookups need rows again (the insert rounds deleted theirs).
    _fill(app, "bench_plain", SELECT_ROWS)
    _fill(app, "bench_encrypted", SELECT_ROWS)
    app.close()
    admin.execute("analyze public.bench_plain")
    admin.execute("analyze public.bench_encrypted")
    probes = [_value(random.randrange(1, SELECT_ROWS)) for _ in range(1000)]  # noqa: S311 - not cryptographic
    lookup_conn = psycopg.connect(servers.app_url)
    cache = KeyringCache(key)
    cache.load(lookup_conn, clinic)

    def lookup(settings: str, params: Callable[[], tuple[str, ...]], query: Callable[[str], tuple[object, object]]
               ) -> Callable[[], float]:  # fmt: skip
        def op() -> None:
            probe = random.choice(probes)  # noqa: S311 - not cryptographic
            lookup_conn.execute(settings, params())
            sql, args = query(probe)
            row = lookup_conn.execute(sql, args).fetchone()  # type: ignore[call-overload]
            lookup_conn.commit()
            assert row is not None and row[1] == probe

        return lambda: throughput(op, seconds=1.5)

    def plain(probe: str) -> tuple[object, object]:
        return "select id, v from public.bench_plain where v = %s", (probe,)

    queries: dict[int, str] = {}  # rendered once per number of live key versions, as an application would

    def cached(probe: str) -> tuple[object, object]:
        values = cache.blind_index(clinic, "public.bench_encrypted", "v", probe)
        if len(values) not in queries:
            cond = blind_index_condition("v_blind_index", values)
            query = psycopg.sql.SQL("select id, v from public.bench_encrypted_decrypted where {}").format(cond)
            queries[len(values)] = query.as_string(lookup_conn)
        return queries[len(values)], values

    def in_database(probe: str) -> tuple[object, object]:
        return (
            "select id, v from public.bench_encrypted_decrypted"
            " where v_blind_index = any (clinicdb.blind_index('public.bench_encrypted', 'v', %s))",
            (probe,),
        )

    clinic_only = "select set_config('app.clinic_id', %s, true)"
    with_ring = f"select set_config('app.clinic_id', %s, true), set_config('{KEYRING_SETTING}', %s, true)"
    with_key = "select set_config('app.clinic_id', %s, true), set_config('app.master_key', %s, true)"
    look_base, look_cand = interleaved(
        lookup(clinic_only, lambda: (str(clinic),), plain),
        lookup(with_ring, lambda: (str(clinic), cache.keyring(clinic)), cached),
    )
    look_db_base, look_db = interleaved(
        lookup(clinic_only, lambda: (str(clinic),), plain),
        lookup(with_key, lambda: (str(clinic), key), in_database),
        rounds=2,
    )
    lookup_conn.close()
    admin.close()
    integrity = f"tampering detected (flipped ciphertext byte raised data_corrupted): {'yes' if tamper else 'NO'}"
    return [
        Ratio("decrypt-select 10k rows (clinicdb AES-256-CBC + HMAC)", cand, base, 0.1, "rows/s", [integrity]),
        Ratio(f"decrypt-select {PGP_SAMPLE} rows (clinicdb, the pgp sample size)", sample_ours, sample_base, None,
              "rows/s"),
        Ratio("decrypt-select, pgp_sym_decrypt default options", pgp_default, sample_base, None, "rows/s",
              [f"{PGP_SAMPLE} rows against {PGP_SAMPLE} plaintext rows; iterated S2K runs on every call"]),
        Ratio("decrypt-select, pgp_sym s2k-mode=1 cipher-algo=aes256", pgp_s2k1, sample_base, None, "rows/s",
              [f"{PGP_SAMPLE} rows against {PGP_SAMPLE} plaintext rows"]),
        Ratio("insert 100k rows (clinicdb, with blind index)", ins_cand, ins_base, 0.15, "rows/s"),
        Ratio(f"insert {PGP_SAMPLE * 10} rows (clinicdb, the pgp s2k-mode=1 sample size)", ins_sample10_ours,
              ins_sample10_base, None, "rows/s"),
        Ratio("insert, pgp_sym_encrypt default options", ins_pgp_default, ins_sample_base, None, "rows/s",
              [f"{PGP_SAMPLE} rows against a {PGP_SAMPLE}-row plaintext insert"]),
        Ratio("insert, pgp_sym s2k-mode=1 cipher-algo=aes256", ins_pgp_s2k1, ins_sample10_base, None, "rows/s",
              [f"{PGP_SAMPLE * 10} rows against a {PGP_SAMPLE * 10}-row plaintext insert; no index on its value "
               "(nothing to look up by), where the plaintext copy and clinicdb's blind index carry one"]),
        Ratio("blind-index lookup vs plain indexed lookup", look_cand, look_base, 0.8, "lookups/s",
              ["one transaction per lookup, three round trips each side, prepared statements both sides; the "
               "encrypted one sets app.clinic_keyring (KeyringCache), computes the blind index in the app and "
               "returns the row decrypted by the view (checked)"]),
        Ratio("blind-index lookup, in-database path (master key per transaction)", look_db, look_db_base, None,
              "lookups/s", ["app.master_key per transaction: keys unwrapped and blind index computed in SQL"]),
    ]  # fmt: skip
