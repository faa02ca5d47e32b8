#!/usr/bin/env bash
# Installs what clinicdb needs from Debian, and only what is missing:
# the PostgreSQL 15 server (pgcrypto ships with it), pgTAP, pg_prove,
# Python's venv module, pgbouncer (for the driver's tests) and pg_auto_failover
# (for `clinicdb dev up --ha` and `make soak`; optional: its tests skip without it). Shared by `make system-deps`, .ci/run and
# docker/Dockerfile, so the three cannot drift apart.
set -euo pipefail

need=()
have_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
have_server || need+=(postgresql-15 postgresql-contrib)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client-15)
ls /usr/share/postgresql/*/extension/pgtap.control >/dev/null 2>&1 || need+=(postgresql-15-pgtap)
command -v pg_prove >/dev/null 2>&1 || need+=(libtap-parser-sourcehandler-pgtap-perl)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
# For the driver's tests behind a real pgbouncer in transaction mode (tests/py/test_driver_pgbouncer.py).
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
# Optional: pg_auto_failover's keeper/CLI and the monitor's extension (docs/ha.md).
optional=()
command -v pg_autoctl >/dev/null 2>&1 || optional+=(pg-auto-failover-cli)
ls /usr/share/postgresql/15/extension/pgautofailover.control >/dev/null 2>&1 || optional+=(postgresql-15-auto-failover)

if [ "$(id -u)" -ne 0 ]; then
    if [ ${#optional[@]} -ne 0 ]; then
        echo "for clinicdb dev up --ha and make soak: sudo apt-get install -y ${optional[*]}" >&2
    fi
    if [ ${#need[@]} -ne 0 ]; then
        echo "clinicdb needs these Debian packages: ${need[*]}" >&2
        echo "install them with: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    exit 0
fi
need+=("${optional[@]}")
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# A package install must not start a system-wide cluster we do not use.
mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/clinicdb.conf
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]; then
    apt-get update -q
fi
apt-get install -y -q --no-install-recommends "${need[@]}"
