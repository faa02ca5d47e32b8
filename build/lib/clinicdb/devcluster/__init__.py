"""The embedded local primary + streaming replica behind ``clinicdb dev``.

`LocalCluster` starts real PostgreSQL servers from the binaries on this
machine under a project folder, on free loopback ports; the test fixtures
and the benchmarks reuse it.
"""

from clinicdb.devcluster.binaries import PostgresNotFound, find_bindir
from clinicdb.devcluster.cluster import ClusterError, ClusterStatus, LocalCluster, ServerStatus

__all__ = [
    "ClusterError",
    "ClusterStatus",
    "LocalCluster",
    "PostgresNotFound",
    "ServerStatus",
    "find_bindir",
]
