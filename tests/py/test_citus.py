"""clinicdb.citus on a single node: the SET LOCAL form the driver sends to Citus is exact, injection-proof and free.

The Citus cluster itself is tested by ``make test-citus`` (tests/citus/);
these tests need only a plain PostgreSQL, where ``SET LOCAL app.clinic_id``
works the same and ``citus.propagate_set_commands`` is an inert placeholder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from clinicdb import ClinicDB
from clinicdb.citus import clinic_context_statements, context_commands, quote_literal
from clinicdb.devcluster.testing import ServerSet
from tcp_proxy import CountingProxy

AWKWARD = [
    "",
    "plain",
    "o'brien",
    "back\\slash",
    "\\'",
    "'; reset role; select '",
    "E'\\x41'",
    "$$dollar$$",
    "é ü 漢字 🙂",
    "line\nbreak\ttab",
    "trailing\\",
]


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_quote_literal_reads_back_exactly_whatever_standard_conforming_strings_says(
    admin: psycopg.Connection[Any], conforming: str
) -> None:
    """Every awkward value, quoted, is one literal whose value is the original text, in both string modes."""
    admin.execute(f"set standard_conforming_strings = {conforming}")
    try:
        for value in AWKWARD:
            assert admin.execute(f"select {quote_literal(value)}").fetchone() == (value,), value
    finally:
        admin.execute("reset standard_conforming_strings")


def test_quote_literal_refuses_nul() -> None:
    """A NUL byte, which no PostgreSQL text can hold, is refused before any SQL is built."""
    with pytest.raises(ValueError, match="NUL"):
        quote_literal("a\x00b")


def test_context_commands_take_only_a_uuid_for_the_clinic() -> None:
    """The clinic goes into the SET text only as a uuid.UUID: a string, even a valid one, is refused."""
    with pytest.raises(TypeError, match=r"uuid\.UUID"):
        context_commands("00000000-0000-0000-0000-000000000001")  # type: ignore[arg-type]
    clinic = uuid.uuid4()
    assert context_commands(clinic)[1] == f"set local app.clinic_id = '{clinic}'"


def test_context_statements_set_clinic_user_and_request_for_the_transaction_only(
    servers: ServerSet, clinic_pair: Any
) -> None:
    """The statements set the three settings verbatim inside the transaction; after it they are gone."""
    a, _ = clinic_pair
    with psycopg.connect(servers.app_url) as conn:
        for statement in clinic_context_statements(a, user_id="o'brien\\", request_id="r;1"):
            conn.execute(statement)
        row = conn.execute(
            "select current_setting('app.clinic_id'), current_setting('app.user_id'),"
            " current_setting('app.request_id'), clinicdb.current_clinic_id()"
        ).fetchone()
        assert row == (str(a), "o'brien\\", "r;1", a)
        conn.commit()
        assert conn.execute("select current_setting('app.clinic_id', true)").fetchone() in ((None,), ("",))


def test_citus_mode_driver_keeps_isolation_on_a_single_node(servers: ServerSet, clinic_pair: Any) -> None:
    """With citus=True forced, the driver's reads and writes see only their clinic, and the user id is audited
    exactly as given."""
    a, b = clinic_pair
    user = "dr o'brien\\'; --"
    mrn = f"CM-{uuid.uuid4().hex[:8]}"
    with ClinicDB(servers.app_url, [], min_size=1, max_size=1, citus=True) as db:
        with db.write(a, user_id=user) as cur:
            cur.execute("insert into patients (mrn, given_name, family_name) values (%s, 'Ann', 'Lee')", (mrn,))
        with db.read(a) as cur:
            assert cur.execute("select count(*) from patients where mrn = %s", (mrn,)).fetchone() == (1,)
        with db.read(b) as cur:
            assert cur.execute("select count(*) from patients where mrn = %s", (mrn,)).fetchone() == (0,)
    with psycopg.connect(servers.admin_url) as conn:
        row = conn.execute(
            "select app_user from clinicdb.audit_log where clinic_id = %s and new_values->>'mrn' = %s", (a, mrn)
        ).fetchone()
    assert row == (user,)


@pytest.fixture
def proxy(servers: ServerSet) -> Iterator[CountingProxy]:
    found = CountingProxy(servers.app_url)
    yield found
    found.close()


def test_citus_mode_opening_costs_no_extra_round_trip(
    proxy: CountingProxy, servers: ServerSet, clinic_pair: Any
) -> None:
    """The SET LOCAL statements ride in the opening's flight: a Citus-mode read makes as many round trips as a
    bare pool transaction."""
    a, _ = clinic_pair
    transactions = 12
    with ConnectionPool(proxy.url_for(servers.app_url), min_size=1, max_size=1, open=True) as pool:
        pool.wait()
        with pool.connection() as conn:
            conn.execute("select 1")
        before = proxy.flights
        for i in range(transactions):
            with pool.connection() as conn:
                conn.execute("select mrn from patients where mrn = %s", (f"RT-{i}",)).fetchone()
        bare = proxy.flights - before
    with ClinicDB(proxy.url_for(servers.app_url), [], min_size=1, max_size=1, citus=True) as db:
        with db.read(a) as cur:
            cur.execute("select 1")
        before = proxy.flights
        for i in range(transactions):
            with db.read(a, user_id="rt", request_id=f"req-{i}") as cur:
                cur.execute("select mrn from patients where mrn = %s", (f"RT-{i}",)).fetchone()
        assert proxy.flights - before == bare
