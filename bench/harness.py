"""What every benchmark shares: timing loops, ratios with targets, printing.

A benchmark module in bench/ is named ``bench_<area>.py`` and defines
``run(servers: ServerSet) -> list[Ratio]``. Each ratio divides the
candidate's throughput by a baseline's measured in the same run on the same
servers, so machine speed cancels out. Targets are printed, never asserted:
benchmarks are not tests.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Ratio:
    """candidate / baseline, with the target it should meet (higher is better)."""

    name: str
    candidate: float
    baseline: float
    target: float | None = None
    unit: str = "ops/s"
    notes: list[str] = field(default_factory=list)
    lower_is_better: bool = False  # a cost (CPU per transaction): the target is a ceiling

    @property
    def value(self) -> float:
        return self.candidate / self.baseline if self.baseline else float("nan")

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.lower_is_better else self.value >= self.target


def throughput(op: Callable[[], object], *, seconds: float = 2.0, warmup: float = 0.3) -> float:
    """Operations per second of ``op`` run back to back on this thread."""
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        op()
    count = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        op()
        count += 1
        now = time.perf_counter()
        if now >= end:
            return count / (now - start)


def threaded_throughput(
    make_op: Callable[[], Callable[[], object]], *, threads: int, seconds: float = 2.0
) -> tuple[float, list[float]]:
    """Total ops/s over ``threads`` threads, each running its own ``make_op()``; plus latencies (s)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        op = make_op()
        op()  # warm the connection and caches
        barrier.wait()
        while not stop.is_set():
            t0 = time.perf_counter()
            op()
            latencies[i].append(time.perf_counter() - t0)
            counts[i] += 1

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - start
    for t in pool:
        t.join()
    return sum(counts) / elapsed, [x for per in latencies for x in per]


def interleaved(
    baseline: Callable[[], float], candidate: Callable[[], float], *, rounds: int = 3
) -> tuple[float, float]:
    """Median of alternating baseline/candidate measurements, so drift hits both alike."""
    base: list[float] = []
    cand: list[float] = []
    for _ in range(rounds):
        base.append(baseline())
        cand.append(candidate())
    return statistics.median(base), statistics.median(cand)


@dataclass
class PairedRatio(Ratio):
    """A ratio taken as the median of per-round ratios (baseline and candidate measured back to back).

    The machine is shared: its speed drifts by tens of percent within seconds,
    so a round's two measurements, taken one after the other, are compared
    with each other rather than the median candidate with the median baseline.
    """

    per_round: list[float] = field(default_factory=list)

    @property
    def value(self) -> float:
        return statistics.median(self.per_round) if self.per_round else float("nan")

    @property
    def spread(self) -> str:
        """How the rounds ranged, for the printed notes."""
        low, high = min(self.per_round), max(self.per_round)
        return f"median of {len(self.per_round)} paired rounds; per round {low:.2f} to {high:.2f}"


def paired(
    baseline: Callable[[], float], candidate: Callable[[], float], *, rounds: int, alternate: bool = False
) -> tuple[float, float, list[float]]:
    """Median baseline, median candidate, and the per-round candidate/baseline ratios.

    ``alternate`` swaps which of the two runs first in every other round, so
    neither always runs on the heels of the other.
    """
    base: list[float] = []
    cand: list[float] = []
    for i in range(rounds):
        if alternate and i % 2:
            cand.append(candidate())
            base.append(baseline())
        else:
            base.append(baseline())
            cand.append(candidate())
    return statistics.median(base), statistics.median(cand), [c / b for b, c in zip(base, cand, strict=True)]


def percentile(samples: Sequence[float], pct: float) -> float:
    """The pct-th percentile (0-100) of samples, nearest rank."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def print_ratios(title: str, ratios: Sequence[Ratio]) -> None:
    """One aligned block per benchmark area."""
    print(f"\n== {title}")
    width = max((len(r.name) for r in ratios), default=10)
    for r in ratios:
        verdict = "" if r.meets_target is None else ("ok" if r.meets_target else "BELOW TARGET")
        target = f"target {'<=' if r.lower_is_better else '>='} {r.target:.2f}" if r.target is not None else ""
        print(
            f"  {r.name.ljust(width)}  ratio {r.value:6.3f}  {target:15}  {verdict:12}"
            f"  ({r.candidate:,.1f} vs {r.baseline:,.1f} {r.unit})"
        )
        for note in r.notes:
            print(f"      {note}")
