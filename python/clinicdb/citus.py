"""clinicdb on a Citus cluster (issue #16, docs/citus.md).

On a Citus coordinator the migrations run with ``citus.enable_ddl_propagation``
off, so they build the layer on the coordinator exactly as on a single node;
then ``clinicdb.citus_distribute()`` (sql/functions/citus_profile.sql) makes
the layer's tables reference tables and distributes the audit trail and every
protected table by ``clinic_id``, which carries the layer's functions, roles
and policies to the workers. ``clinicdb migrate`` does this when it finds the
citus extension (or is given ``--citus``).

Clinic context on Citus: ``set_config(..., true)`` does not reach the
workers; ``SET LOCAL`` does when ``citus.propagate_set_commands = 'local'``.
:func:`clinic_context_statements` builds those statements from a validated
uuid only, never from free text.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import conninfo, sql

# Set per transaction, before the clinic: makes the SET LOCAL below reach every worker the transaction uses.
PROPAGATE = "set local citus.propagate_set_commands = 'local'"
# One row, one boolean: does the connected database have the citus extension (the sync and async drivers ask it).
INSTALLED_SQL = "select exists (select 1 from pg_extension where extname = 'citus')"
# What distribute() calls after citus_distribute(), in order, each once its migration exists:
# sealing and verification over the distributed trail (0031); Citus's internal functions and reference-table
# writes closed to the application roles (0040); no node logging a failing statement or a bound parameter (0041);
# every staff login whose mapping is its own marked on every node, mappings granted before 0044 included (0044);
# the audit rows without a clinic (truncate, prune) in a reference table sealed in the no-clinic chain (0046).
# citus_sync_functions last: it sends the workers every function the steps before it replaced (0045).
# First, every login that belongs to the layer's roles on every node (0049: logins made on a single node before
# Citus came are not on the workers, and the app's queries through the coordinator fail there).
_PROFILE_STEPS = (
    "citus_propagate_logins",
    "citus_audit_profile",
    "citus_harden",
    "citus_protect_logs",
    "citus_mark_staff",
    "citus_unscoped_audit",
    "citus_sync_functions",
)
_ALIGN_STEP = "citus_align_txids"


class CitusError(RuntimeError):
    """The database is not a Citus coordinator clinicdb can distribute onto; the message says what is missing."""


def is_citus(conn: psycopg.Connection[Any]) -> bool:
    """True when the connected database has the citus extension."""
    row = conn.execute(INSTALLED_SQL).fetchone()
    return bool(row and row[0])


def migration_conninfo(url: str) -> str:
    """``url`` with ``citus.enable_ddl_propagation`` off for every statement: migrations build the layer on the
    coordinator only, and ``citus_distribute()`` carries it to the workers afterwards."""
    return conninfo.make_conninfo(url, options="-c citus.enable_ddl_propagation=off")


def distribute(url: str) -> None:
    """Run ``clinicdb.citus_align_txids()`` and ``clinicdb.citus_distribute()``, then
    ``citus_propagate_logins()``, ``citus_audit_profile()``, ``citus_harden()``, ``citus_protect_logs()``,
    ``citus_mark_staff()``, ``citus_unscoped_audit()`` and ``citus_sync_functions()``, on the coordinator at
    ``url`` (a superuser URL)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if not is_citus(conn):
            raise CitusError("the citus extension is not installed in this database: create extension citus first")
        # Before any table is distributed: every node's txid counter above the sealed ranges, so no audit row a
        # worker writes can land inside a range sealed earlier (on a single node before Citus came, or before a
        # node was added) (0049).
        _call_if_present(conn, _ALIGN_STEP)
        conn.execute("call clinicdb.citus_distribute()")
        for step in _PROFILE_STEPS:
            _call_if_present(conn, step)
        _require_functions_in_sync(conn)


def _has_function(conn: psycopg.Connection[Any], signature: str) -> bool:
    """True when the routine ``signature`` exists (its migration has run)."""
    found = conn.execute("select to_regprocedure(%s) is not null", (signature,)).fetchone()
    return bool(found and found[0])


def _call_if_present(conn: psycopg.Connection[Any], step: str) -> None:
    """``call clinicdb.<step>()`` when its migration has run (each step takes an ``undo`` boolean)."""
    if _has_function(conn, f"clinicdb.{step}(boolean)"):
        conn.execute(sql.SQL("call clinicdb.{}()").format(sql.Identifier(step)))


def _require_functions_in_sync(conn: psycopg.Connection[Any]) -> None:
    """Raise when a worker still holds another version of a layer function after the profile ran (asked after
    the steps committed: the workers apply the definitions at commit)."""
    if not _has_function(conn, "clinicdb._citus_function_drift()"):
        return
    left = conn.execute(
        "select format('%s on %s (%s)', function_name, node, problem) from clinicdb._citus_function_drift()"
    )
    drift = [r[0] for r in left.fetchall()]
    if drift:
        raise CitusError(
            f"the layer's functions still differ on the workers: {', '.join(drift)}; check that every worker is"
            " reachable and runs the same PostgreSQL and Citus versions, then run clinicdb migrate again"
        )


def detect(url: str) -> bool:
    """True when the database at ``url`` has the citus extension (``clinicdb migrate`` then uses the profile)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return is_citus(conn)


def migrate(url: str, **options: Any) -> list[str]:
    """``schema.apply`` for a Citus coordinator: the migrations with DDL propagation off, then
    ``citus_distribute()``. ``options`` are ``schema.apply``'s; returns the migrations applied."""
    from clinicdb import schema

    applied = schema.apply(migration_conninfo(url), **options)
    distribute(url)
    return applied


def quote_literal(value: str) -> str:
    """``value`` as an escape-string literal (``E'...'``) that reads back as exactly ``value``.

    ``SET LOCAL`` takes no bind parameters, so on Citus the user and request
    ids must travel inside the statement text. In an ``E''`` literal every
    backslash is doubled and every quote doubled, and it means the same
    whatever ``standard_conforming_strings`` says: no value can end the literal
    early. NUL (which no PostgreSQL text holds) is refused.
    """
    if not isinstance(value, str):
        raise TypeError(f"a setting value must be a str, not {type(value).__name__}")
    if "\x00" in value:
        raise ValueError("a setting value cannot contain NUL")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def context_commands(clinic_id: uuid.UUID, user_id: str | None = None, request_id: str | None = None) -> list[str]:
    """The ``SET LOCAL`` statements, as text, that put a clinic (user, request) in force on every node Citus uses.

    The first makes ``SET LOCAL`` propagate; the clinic is a checked ``uuid.UUID`` (hex digits and dashes); the
    user and request ids are :func:`quote_literal` literals. One statement each: Citus replays them one by one on
    every worker connection the transaction opens. The driver sends them in its opening flight.
    """
    if not isinstance(clinic_id, uuid.UUID):
        raise TypeError(f"clinic_id must be a uuid.UUID, not {type(clinic_id).__name__}")
    commands = [PROPAGATE, f"set local app.clinic_id = '{clinic_id}'"]
    for name, value in (("app.user_id", user_id), ("app.request_id", request_id)):
        if value is not None:
            commands.append(f"set local {name} = {quote_literal(str(value))}")
    return commands


def clinic_context_statements(
    clinic_id: uuid.UUID, *, user_id: str | None = None, request_id: str | None = None
) -> list[sql.Composed | sql.SQL]:
    """The statements that set the clinic (and user, request) for one transaction on Citus, for ``conn.execute``.

    :func:`context_commands` as ``psycopg.sql`` objects: the clinic is a ``uuid.UUID`` (checked), the user and
    request ids are quoted by :func:`quote_literal`. Run each as a separate statement, in an open transaction.
    """
    return [sql.SQL(command) for command in context_commands(clinic_id, user_id, request_id)]


__all__ = [
    "INSTALLED_SQL",
    "PROPAGATE",
    "CitusError",
    "clinic_context_statements",
    "context_commands",
    "detect",
    "distribute",
    "is_citus",
    "migrate",
    "migration_conninfo",
    "quote_literal",
]
