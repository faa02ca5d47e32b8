"""Counters and latencies the drivers keep, as a plain dict or Prometheus text.

Recorded per route (``primary``/``replica``): transactions, errors and a
rolling window of durations for p50/p95/p99. Also retries, failovers (reads
that wanted a replica and went to the primary, by reason), breaker trips,
commits with unknown outcome and slow transactions. Slow transactions are
logged as a structured warning on the ``clinicdb.driver`` logger with the
clinic, route and duration, never statements or parameters.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("clinicdb.driver")

ROUTES = ("primary", "replica")
_WINDOW = 4096


def _percentile(ordered: list[float], pct: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


class Metrics:
    """Thread-safe counters; ``snapshot()`` is what ``db.metrics()`` returns (plus pool stats)."""

    def __init__(self, slow_threshold: float) -> None:
        self.slow_threshold = slow_threshold
        self._lock = threading.Lock()
        self._count = dict.fromkeys(ROUTES, 0)
        self._errors = dict.fromkeys(ROUTES, 0)
        self._durations: dict[str, deque[float]] = {r: deque(maxlen=_WINDOW) for r in ROUTES}
        self._retries = {"read": 0, "write": 0}
        self._failovers: dict[str, int] = {}
        self._breaker_trips = 0
        self._commit_unknown = 0
        self._reopened = 0
        self._slow = 0

    def transaction(self, route: str, seconds: float, ok: bool, clinic_id: uuid.UUID, kind: str) -> None:
        """One transaction ended (the hot path: one lock, no allocation but the deque slot)."""
        with self._lock:
            self._count[route] += 1
            self._durations[route].append(seconds)
            if not ok:
                self._errors[route] += 1
        if seconds >= self.slow_threshold > 0:
            with self._lock:
                self._slow += 1
            duration_ms = round(seconds * 1000, 1)
            logger.warning(
                "clinicdb slow transaction: kind=%s route=%s clinic_id=%s duration_ms=%.1f",
                kind,
                route,
                clinic_id,
                duration_ms,
                extra={"clinic_id": str(clinic_id), "duration_ms": duration_ms, "route": route, "kind": kind},
            )

    def retry(self, kind: str) -> None:
        with self._lock:
            self._retries[kind] += 1

    def failover(self, reason: str) -> None:
        with self._lock:
            self._failovers[reason] = self._failovers.get(reason, 0) + 1

    def breaker_trip(self) -> None:
        with self._lock:
            self._breaker_trips += 1

    def reopened(self) -> None:
        """An opening failed on a dead pooled connection and was sent again on another (nothing of the block ran)."""
        with self._lock:
            self._reopened += 1

    def commit_unknown(self) -> None:
        with self._lock:
            self._commit_unknown += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            routes: dict[str, Any] = {}
            for route in ROUTES:
                ordered = sorted(self._durations[route])
                routes[route] = {
                    "transactions": self._count[route],
                    "errors": self._errors[route],
                    "p50_ms": _ms(_percentile(ordered, 50)),
                    "p95_ms": _ms(_percentile(ordered, 95)),
                    "p99_ms": _ms(_percentile(ordered, 99)),
                    "window": len(ordered),
                }
            return {
                "routes": routes,
                "retries": dict(self._retries),
                "failovers": dict(self._failovers),
                "failovers_total": sum(self._failovers.values()),
                "breaker_trips": self._breaker_trips,
                "commit_outcome_unknown": self._commit_unknown,
                "reopened": self._reopened,
                "slow_transactions": self._slow,
                "slow_threshold_ms": round(self.slow_threshold * 1000, 1),
            }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def prometheus_text(snapshot: Mapping[str, Any]) -> str:
    """``db.metrics()`` in the Prometheus text exposition format (needs the ``prometheus`` extra)."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.registry import Collector
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError("Prometheus exposition needs the extra: pip install 'clinicdb[prometheus]'") from exc

    class _Snapshot(Collector):
        def collect(self) -> Any:
            tx = CounterMetricFamily("clinicdb_transactions", "Transactions by route.", labels=["route"])
            err = CounterMetricFamily("clinicdb_transaction_errors", "Failed transactions by route.", labels=["route"])
            lat = GaugeMetricFamily(
                "clinicdb_transaction_latency_seconds",
                "Transaction latency quantiles over the recent window.",
                labels=["route", "quantile"],
            )
            for route, data in snapshot["routes"].items():
                tx.add_metric([route], data["transactions"])
                err.add_metric([route], data["errors"])
                for q in ("50", "95", "99"):
                    value = data[f"p{q}_ms"]
                    if value is not None:
                        lat.add_metric([route, f"0.{q}"], value / 1000)
            retries = CounterMetricFamily("clinicdb_retries", "Transactions run again.", labels=["kind"])
            for kind, n in snapshot["retries"].items():
                retries.add_metric([kind], n)
            fail = CounterMetricFamily("clinicdb_failovers", "Reads sent to the primary instead.", labels=["reason"])
            for reason, n in snapshot["failovers"].items():
                fail.add_metric([reason], n)
            trips = CounterMetricFamily("clinicdb_breaker_trips", "Replica circuit breaker trips.")
            trips.add_metric([], snapshot["breaker_trips"])
            slow = CounterMetricFamily("clinicdb_slow_transactions", "Transactions over the slow threshold.")
            slow.add_metric([], snapshot["slow_transactions"])
            unknown = CounterMetricFamily("clinicdb_commit_outcome_unknown", "Writes whose commit outcome is unknown.")
            unknown.add_metric([], snapshot["commit_outcome_unknown"])
            pool = GaugeMetricFamily("clinicdb_pool", "Connection pool statistics.", labels=["server", "stat"])
            for server, stats in snapshot.get("pools", {}).items():
                for stat, n in stats.items():
                    if isinstance(n, int | float):
                        pool.add_metric([server, stat], n)
            yield from (tx, err, lat, retries, fail, trips, slow, unknown, pool)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())
    return generate_latest(registry).decode()
