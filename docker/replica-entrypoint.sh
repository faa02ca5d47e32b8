#!/usr/bin/env bash
# The replica: on first start, clone the primary with pg_basebackup (-R
# writes primary_conninfo and standby.signal), then run as a hot standby,
# exactly as `clinicdb dev up` does locally.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready -h primary -U "${POSTGRES_USER:-postgres}"; do sleep 1; done
    PGPASSWORD="$POSTGRES_PASSWORD" pg_basebackup -h primary -U "${POSTGRES_USER:-postgres}" \
        -D "$PGDATA" -R -X stream -c fast -S clinicdb_replica1
    echo "primary_slot_name = 'clinicdb_replica1'" >> "$PGDATA/postgresql.auto.conf"
    chmod 0700 "$PGDATA"
fi
exec docker-entrypoint.sh postgres
