#!/usr/bin/env bash
# Runs once, when the official image initialises an empty primary: include
# the clinicdb settings mounted from python/clinicdb/devcluster/clinicdb.conf
# (the file `clinicdb dev up` includes too) and let the replica stream WAL.
set -euo pipefail
echo "include '/etc/clinicdb/clinicdb.conf'" >> "$PGDATA/postgresql.conf"
echo "host replication ${POSTGRES_USER:-postgres} all scram-sha-256" >> "$PGDATA/pg_hba.conf"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -c "select pg_create_physical_replication_slot('clinicdb_replica1')"
