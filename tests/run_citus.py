"""``make test-citus``: the Citus suites (tests/citus/) when this PostgreSQL has Citus; one line and exit 0 when not."""

from __future__ import annotations

import sys

import pytest

from clinicdb.devcluster.citus import citus_installed


def main() -> int:
    if not citus_installed():
        print("test-citus: skipped, Citus is not installed in this PostgreSQL (docs/citus.md says how to install it)")
        return 0
    return int(pytest.main(["tests/citus", "-p", "no:cacheprovider", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
