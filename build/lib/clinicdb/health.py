"""``db.health()``: every server up or down, its latency and replica lag.

Checked on short-lived connections of their own (never the application's
pool, so a full pool cannot make a healthy server look down) with a connect
timeout, and cached by the driver for ``CLINICDB_HEALTH_CACHE_MS``.

Overall status: ``down`` when the primary is down; ``degraded`` when a replica
is down or lags more than ``max_replica_lag``; else ``healthy``.
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
    except (psycopg.Error, OSError, TimeoutError) as exc:
        result["error"] = _error_text(exc)
        return result
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    result["up"] = True
    if row is not None:
        result["in_recovery"], result["lsn"] = bool(row[0]), row[1]
    return result


def summarize(servers: list[dict[str, Any]], *, max_lag: int) -> dict[str, Any]:
    """Lag per replica and the overall status from per-server checks (primary first)."""
    primary = servers[0]
    primary_lsn = parse_lsn(primary["lsn"]) if primary["up"] and primary["lsn"] else None
    degraded = False
    for server in servers[1:]:
        if server["up"] and server["lsn"] and primary_lsn is not None:
            server["lag_bytes"] = max(primary_lsn - parse_lsn(server["lsn"]), 0)
        if not server["up"] or server["in_recovery"] is False or (server["lag_bytes"] or 0) > max_lag:
            degraded = True
    if not primary["up"]:
        status = "down"
    elif primary["in_recovery"]:
        status = "degraded"  # the "primary" URL points at a standby: writes will fail
    else:
        status = "degraded" if degraded else "healthy"
    return {"status": status, "checked_at": time.time(), "max_replica_lag_bytes": max_lag, "servers": servers}
