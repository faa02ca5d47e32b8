"""clinicdb: many clinics' patient data in one PostgreSQL database, kept apart by the database.

The public surface: ``ClinicDB`` and ``AsyncClinicDB`` (the driver) and their
``Options`` (``DriverConfig`` is its old name), ``clinic_scope`` and
``current_scope`` (the contextvars scope), ``current_clinic_id`` (its clinic, for
the application's own ``clinic_id = %s`` filter), ``set_scope`` (the clinic on a
psycopg connection of your own), ``CausalToken`` and the driver's exceptions.
"""

from importlib.metadata import PackageNotFoundError, version

from clinicdb._config import DriverConfig, Options
from clinicdb._scope import Scope, clinic_scope, current_clinic_id, current_scope, set_scope
from clinicdb._tokens import CausalToken
from clinicdb.asyncio import AsyncClinicDB
from clinicdb.errors import (
    ClinicDBError,
    CommitOutcomeUnknown,
    NoClinicScope,
    NotSent,
    PoolExhausted,
    TransactionAborted,
    UnsafeLogin,
)
from clinicdb.sync import ClinicDB

try:
    __version__ = version("clinicdb")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"

__all__ = [
    "AsyncClinicDB",
    "CausalToken",
    "ClinicDB",
    "ClinicDBError",
    "CommitOutcomeUnknown",
    "DriverConfig",
    "NoClinicScope",
    "NotSent",
    "Options",
    "PoolExhausted",
    "Scope",
    "TransactionAborted",
    "UnsafeLogin",
    "__version__",
    "clinic_scope",
    "current_clinic_id",
    "current_scope",
    "set_scope",
]
