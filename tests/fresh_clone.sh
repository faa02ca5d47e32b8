#!/usr/bin/env bash
# The README's two commands from a fresh clone in a `mktemp -d` folder (mode
# 0700: as root, a folder the postgres OS user cannot enter), the way a new
# user starts. Not part of `make test`, which it runs: `make test-fresh-clone`.
set -euo pipefail
source_repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
cleanup() {
    if [ -x "$work/clinicdb/.venv/bin/clinicdb" ]; then
        dev_dir="$(cd "$work/clinicdb" && .venv/bin/python -c 'from clinicdb.devcluster.bootstrap import dev_dir; print(dev_dir())')"
        (cd "$work/clinicdb" && .venv/bin/clinicdb dev down) || true
        rm -rf "$dev_dir"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
git clone --quiet "$source_repo" "$work/clinicdb"
cd "$work/clinicdb"
make demo
make test
echo "fresh clone in $work (mode $(stat -c %a "$work")): make demo and make test passed"
