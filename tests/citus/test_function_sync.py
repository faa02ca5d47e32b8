"""The layer's functions on every worker are the coordinator's (migration 0045, clinicdb.citus_sync_functions()).

Migrations run with DDL propagation off and create_distributed_function() does
not send an already distributed function again, so a migration that replaces
a function would leave the workers' shards on the old body. These tests make
that drift on purpose, the way a migration does, and prove that `clinicdb
check` reports it and the profile step `clinicdb migrate` runs last repairs it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from citus_helpers import run_clinicdb

from clinicdb import citus as citus_profile
from clinicdb.devcluster.citus import CitusSet

# An equivalent body with other text: what a migration replacing the function looks like to the catalog.
REPLACED = """create or replace function clinicdb.key_version(p_value bytea)
returns integer language sql immutable parallel safe
return case when get_byte(p_value, 0) = 1 and octet_length(p_value) >= 3  -- replaced by a later migration
            then (get_byte(p_value, 1) << 8) | get_byte(p_value, 2) end"""


def _worker_definitions(admin: psycopg.Connection[Any], function: str) -> set[str]:
    rows = admin.execute(
        "select result from run_command_on_workers("
        "format('select md5(pg_get_functiondef(%%L::regprocedure))', %s::text))",
        (function,),
    ).fetchall()
    return {r[0] for r in rows}


def test_a_function_replaced_on_the_coordinator_only_is_reported_and_sent_to_every_worker(
    citus: CitusSet, admin: psycopg.Connection[Any]
) -> None:
    """Replaced with propagation off (as migrations run): check names the function on each worker and exits 1;
    the profile steps of `clinicdb migrate` send the coordinator's definition; check passes again."""
    original = admin.execute("select pg_get_functiondef('clinicdb.key_version(bytea)'::regprocedure)").fetchone()
    assert original
    with admin.transaction():
        admin.execute("set local citus.enable_ddl_propagation = off")
        admin.execute(REPLACED)
    try:
        found = run_clinicdb("check", "--database-url", citus.admin_url)
        assert found.returncode == 1, found.stdout + found.stderr
        assert found.stdout.count("clinicdb.key_version(bytea) differs from the coordinator's") == 2, found.stdout
        citus_profile.distribute(citus.admin_url)
        mine = admin.execute("select md5(pg_get_functiondef('clinicdb.key_version(bytea)'::regprocedure))").fetchone()
        assert mine and _worker_definitions(admin, "clinicdb.key_version(bytea)") == {mine[0]}
        assert run_clinicdb("check", "--database-url", citus.admin_url).returncode == 0
    finally:
        admin.execute(original[0])  # propagation on: every node gets the original back


def test_a_function_created_on_the_coordinator_only_reaches_every_worker(
    citus: CitusSet, admin: psycopg.Connection[Any]
) -> None:
    """A new layer function a migration created on the coordinator only is reported missing, then distributed."""
    with admin.transaction():
        admin.execute("set local citus.enable_ddl_propagation = off")
        admin.execute("create function clinicdb._sync_probe() returns integer language sql immutable return 7")
    try:
        found = admin.execute("select node, problem from clinicdb._citus_function_drift()").fetchall()
        assert sorted(p for _, p in found) == ["missing", "missing"]
        admin.execute("call clinicdb.citus_sync_functions()")  # autocommit: the workers apply it at commit
        assert admin.execute("select count(*) from clinicdb._citus_function_drift()").fetchone() == (0,)
        assert {
            r[0] for r in admin.execute("select result from run_command_on_workers('select clinicdb._sync_probe()')")
        } == {"7"}
    finally:
        admin.execute("drop function clinicdb._sync_probe()")
