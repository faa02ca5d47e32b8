"""Where a read goes: the routing policy shared by ``ClinicDB`` and ``AsyncClinicDB``.

Pure bookkeeping, no I/O: the drivers feed it observations (replay positions
from the background check and from each replica read's opening flight,
failures from connections) and ask it for a route. Rules:

* a replica is *fit* when its breaker is closed and its last measured lag
  (primary WAL position minus replica replay position, in bytes) is at most
  ``max_lag`` and that measurement is fresh;
* fit replicas take reads round-robin;
* a read carrying a causal token goes only to a fit replica whose known replay
  position is at or past the token (known positions only grow, so a cached one
  is a safe lower bound), else to the primary;
* a failure opens the replica's breaker for a back-off that doubles per
  consecutive failure up to a cap; only the background check probes it again,
  so no read ever waits on a dead replica;
* a replica found out of recovery (promoted) takes no reads until a check
  finds it a standby again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clinicdb._tokens import CausalToken, parse_lsn

# Why a read that could have gone to a replica went to the primary.
NO_REPLICAS = "no_replicas_configured"
UNAVAILABLE = "replicas_unavailable"
CAUSAL = "token_not_replayed"


@dataclass
class ReplicaState:
    """What the router knows about one replica."""

    index: int
    name: str
    breaker_open: bool = False
    open_until: float = 0.0
    failures: int = 0
    replay_lsn: int | None = None
    lag_bytes: int | None = None
    measured_at: float | None = None
    last_error: str | None = None
    trips: int = 0
    replay_text: str | None = None  # the last replay LSN an opening read, as text
    promoted: bool = False  # answered as a primary (out of recovery)


@dataclass(frozen=True)
class Route:
    """A routing decision: ``replica`` index or None for the primary, and why the primary."""

    replica: int | None
    reason: str | None = None


_TO_PRIMARY = {reason: Route(None, reason) for reason in (NO_REPLICAS, UNAVAILABLE, CAUSAL)}


class Router:
    """Round-robin over fit replicas, with lag limits, causal tokens and circuit breakers (thread-safe)."""

    def __init__(
        self,
        replica_names: Sequence[str],
        *,
        max_lag: int,
        check_interval: float,
        backoff: float,
        max_backoff: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replicas = [ReplicaState(i, name) for i, name in enumerate(replica_names)]
        self._routes = [Route(i) for i in range(len(self.replicas))]  # immutable: one per replica, reused
        self.max_lag = max_lag
        self.stale_after = max(5 * check_interval, 2.0)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.clock = clock
        self.primary_lsn: int | None = None
        self._next = 0
        self._fit: list[ReplicaState] = []
        self._fit_until = 0.0  # pick() recomputes the fit set after this (or after any change)
        self._lock = threading.Lock()
        self._rand = random.Random()  # noqa: S311 - jitter, not security

    # -- decisions ----------------------------------------------------------------
    def fit(self, state: ReplicaState, now: float) -> bool:
        return (
            not state.breaker_open
            and not state.promoted
            and state.lag_bytes is not None
            and state.lag_bytes <= self.max_lag
            and state.measured_at is not None
            and now - state.measured_at <= self.stale_after
        )

    def pick(self, token: CausalToken | None, *, exclude: frozenset[int] = frozenset()) -> Route:
        """The route for one read; ``exclude`` holds replicas that already failed this read."""
        if not self.replicas:
            return _TO_PRIMARY[NO_REPLICAS]
        now = self.clock()
        fit = self._fit
        if now >= self._fit_until or exclude or token is not None:
            with self._lock:
                fit = [s for s in self.replicas if s.index not in exclude and self.fit(s, now)]
                if not exclude and token is None:  # the common read: remember the fit set until it may change
                    self._fit, self._fit_until = fit, self._next_change(now)
        if not fit:
            return _TO_PRIMARY[UNAVAILABLE]
        if token is not None:
            fit = [s for s in fit if s.replay_lsn is not None and s.replay_lsn >= token.lsn]
            if not fit:
                return _TO_PRIMARY[CAUSAL]
        chosen = fit[self._next % len(fit)]
        self._next += 1  # a lost increment under a thread race only skews the round-robin
        return self._routes[chosen.index]

    def _next_change(self, now: float) -> float:
        """Until when the fit set just computed holds: the first measurement to go stale (observations reset it)."""
        measured = [s.measured_at for s in self.replicas if s.measured_at is not None]
        return min(measured) + self.stale_after if measured else now

    def waitable(self, token: CausalToken, *, exclude: frozenset[int] = frozenset()) -> int | None:
        """A fit replica (ignoring the token) worth waiting on for ``token``: the one furthest ahead."""
        now = self.clock()
        with self._lock:
            fit = [s for s in self.replicas if s.index not in exclude and self.fit(s, now)]
            if not fit:
                return None
            return max(fit, key=lambda s: s.replay_lsn or 0).index

    # -- observations -------------------------------------------------------------
    def observe_primary(self, lsn: int) -> None:
        with self._lock:
            self.primary_lsn = max(lsn, self.primary_lsn or 0)

    def observe_replay_text(self, index: int, text: str) -> None:
        """``observe_replay`` for the LSN text an opening read; parsed only when it moved since the last one."""
        state = self.replicas[index]
        if text != state.replay_text:
            state.replay_text = text
            self.observe_replay(index, parse_lsn(text))

    def observe_replay(self, index: int, lsn: int | None, *, measured: bool = False) -> None:
        """A replay position seen on replica ``index``; ``measured`` when paired with a fresh primary position."""
        if lsn is None:
            return
        with self._lock:
            state = self.replicas[index]
            state.replay_lsn = max(lsn, state.replay_lsn or 0)
            if measured and self.primary_lsn is not None:
                state.lag_bytes = max(self.primary_lsn - state.replay_lsn, 0)
                state.measured_at = self.clock()
                self._fit_until = 0.0

    def record_failure(self, index: int, error: str) -> bool:
        """Open the breaker of replica ``index``; True when it was closed (a new trip)."""
        with self._lock:
            state = self.replicas[index]
            state.failures += 1
            delay = min(self.max_backoff, self.backoff * 2 ** min(state.failures - 1, 30))
            # Jitter (0.8-1.2x) so several app processes do not probe in lockstep.
            state.open_until = self.clock() + delay * self._rand.uniform(0.8, 1.2)
            state.last_error = error[:200]
            tripped = not state.breaker_open
            state.breaker_open = True
            self._fit_until = 0.0
            state.lag_bytes = None
            state.measured_at = None
            if tripped:
                state.trips += 1
            return tripped

    def record_promoted(self, index: int, promoted: bool = True) -> bool:
        """Replica ``index`` answered out of recovery (or, with False, in recovery again); True when that is news."""
        with self._lock:
            state = self.replicas[index]
            news = state.promoted != promoted
            state.promoted = promoted
            self._fit_until = 0.0
            return news

    def record_recovery(self, index: int) -> None:
        """Close the breaker of replica ``index`` after a successful probe."""
        with self._lock:
            state = self.replicas[index]
            state.breaker_open = False
            self._fit_until = 0.0
            state.failures = 0
            state.last_error = None

    def due_for_check(self, index: int) -> bool:
        """The background check should contact this replica now (closed, or open and back-off over)."""
        state = self.replicas[index]
        return not state.breaker_open or self.clock() >= state.open_until

    def snapshot(self) -> list[dict[str, object]]:
        now = self.clock()
        with self._lock:
            return [
                {
                    "name": s.name,
                    "fit": self.fit(s, now),
                    "breaker_open": s.breaker_open,
                    "promoted": s.promoted,
                    "lag_bytes": s.lag_bytes,
                    "replay_lsn": s.replay_lsn,
                    "breaker_trips": s.trips,
                    "last_error": s.last_error,
                }
                for s in self.replicas
            ]
