"""``db.health()``: every server up or down, its latency and replica lag.

Checked on short-lived connections of their own (never the application's
pool, so a full pool cannot make a healthy server look down) with a connect
timeout, and cached by the driver for ``CLINICDB_HEALTH_CACHE_MS``.

Overall status: ``down`` when the server writes go to is down or answers as
a standby; ``degraded`` when writes went to a promoted replica (failover), or
a replica is down, promoted, lags more than ``max_replica_lag`` or has its
breaker open in the driver; else ``healthy``. ``server`` names the host that
answered, so a multi-host URL shows where it leads now.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from psycopg import conninfo

from clinicdb._tokens import parse_lsn

HEALTH_SQL = (
    "select pg_is_in_recovery(),"
    " case when pg_is_in_recovery() then pg_last_wal_replay_lsn()::text else pg_current_wal_lsn()::text end"
)


def describe_url(url: str) -> str:
    """``user@host:port/dbname`` without password or options, for display."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable url)"
    user = params.get("user") or ""
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{user}{'@' if user else ''}{host}:{port}/{params.get('dbname') or ''}"


def _answered(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], url: str) -> str:
    """``user@host:port/dbname`` of the server a connection reached (one host of a multi-host URL)."""
    info = conn.info
    return f"{info.user}@{info.host}:{info.port}/{info.dbname}" if info.host else describe_url(url)


def _server(name: str, role: str, url: str) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "server": describe_url(url),
        "up": False,
        "latency_ms": None,
        "in_recovery": None,
        "lsn": None,
        "lag_bytes": None,
        "error": None,
    }


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def check_server(name: str, role: str, url: str, timeout: float) -> dict[str, Any]:
    """One server's health on a fresh connection."""
    result = _server(name, role, url)
    started = time.perf_counter()
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout)), autocommit=True) as conn:
            row = conn.execute(HEALTH_SQL).fetchone()
            result["server"] = _answered(conn, url)
    except (psycopg.Error, OSError) as exc:
        result["error"] = _error_text(exc)
        return result
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    result["up"] = True
    if row is not None:
        result["in_recovery"], result["lsn"] = bool(row[0]), row[1]
    return result


async def acheck_server(name: str, role: str, url: str, timeout: float) -> dict[str, Any]:
    """One server's health on a fresh async connection."""
    result = _server(name, role, url)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout + 1):
            conn = await psycopg.AsyncConnection.connect(url, connect_timeout=max(1, round(timeout)), autocommit=True)
            async with conn:
                cur = await conn.execute(HEALTH_SQL)
                row = await cur.fetchone()
                result["server"] = _answered(conn, url)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        result["error"] = _error_text(exc)
        return result
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    result["up"] = True
    if row is not None:
        result["in_recovery"], result["lsn"] = bool(row[0]), row[1]
    return result


def summarize(
    servers: list[dict[str, Any]],
    *,
    max_lag: int,
    routing: list[dict[str, Any]] | None = None,
    write_target: str = "primary",
) -> dict[str, Any]:
    """Lag per replica and the overall status from per-server checks (the write target first).

    ``routing`` is the driver's view of each replica (breaker, promoted);
    ``write_target`` names the server writes go to now ("primary" unless a
    promoted replica took over).
    """
    primary = servers[0]
    primary_lsn = parse_lsn(primary["lsn"]) if primary["up"] and primary["lsn"] else None
    problems: list[str] = []
    if write_target != "primary":
        problems.append(f"failed over: writes go to {write_target}, promoted from replica")
    states = {r["name"]: r for r in routing or []}
    for server in servers[1:]:
        if server["up"] and server["lsn"] and primary_lsn is not None and server["in_recovery"]:
            server["lag_bytes"] = max(primary_lsn - parse_lsn(server["lsn"]), 0)
        state = states.get(server["name"], {})
        if server["up"] and server["in_recovery"] is False:
            server["role"] = "promoted"
        if not server["up"]:
            problems.append(f"{server['name']} is down")
        elif server["role"] == "promoted" and server["name"] != write_target:
            problems.append(f"{server['name']} answers as a primary (promoted) and takes no reads")
        elif (server["lag_bytes"] or 0) > max_lag:
            problems.append(f"{server['name']} lags {server['lag_bytes']} bytes")
        elif state.get("breaker_open"):
            problems.append(f"{server['name']} failed in the driver: {state.get('last_error')}")
    if not primary["up"]:
        status = "down"
        problems.insert(0, f"the write target is down: {primary['error']}")
    elif primary["in_recovery"]:
        status = "down"  # the URL writes go to reaches a standby: every write fails
        problems.insert(0, "the write target answers as a standby")
    else:
        status = "degraded" if problems else "healthy"
    return {
        "status": status,
        "problems": problems,
        "write_target": write_target,
        "checked_at": time.time(),
        "max_replica_lag_bytes": max_lag,
        "servers": servers,
        "routing": list(routing or []),
    }
