"""``make bench``: run every bench/bench_*.py module against throwaway servers.

Usage: python -m bench [AREA ...]   (AREA: isolation, audit, encryption, driver)
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
        for area in chosen:
            module = importlib.import_module(f"bench.bench_{area}")
            started = time.perf_counter()
            ratios = module.run(servers)
            print_ratios(f"{area} ({time.perf_counter() - started:.0f}s)", ratios)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
