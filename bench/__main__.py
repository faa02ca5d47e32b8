"""``make bench``: run every bench/bench_*.py module against throwaway servers.

Usage: python -m bench [AREA ...]   (AREA: isolation, audit, encryption, driver, citus)
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

from bench.harness import print_ratios
from clinicdb.devcluster.testing import throwaway_servers


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    areas = sorted(m.name[len("bench_") :] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    chosen = argv or areas
    unknown = set(chosen) - set(areas)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(areas)}", file=sys.stderr)
        return 2
    print(f"clinicdb benchmarks: {', '.join(chosen)} (ratios: candidate / baseline, same run, higher is better)")
    with throwaway_servers(replicas=1) as servers:
        failed = []
        for area in chosen:
            module = importlib.import_module(f"bench.bench_{area}")
            started = time.perf_counter()
            try:
                ratios = module.run(servers)
            except Exception as exc:  # one broken area must not hide the others' ratios
                failed.append(area)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                print(f"\n== {area}: FAILED: {type(exc).__name__}: {first}", file=sys.stderr)
                continue
            print_ratios(f"{area} ({time.perf_counter() - started:.0f}s)", ratios)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
