"""clinicdb: many clinics' patient data in one PostgreSQL database, kept apart by the database.

The public surface: ``ClinicDB`` and ``AsyncClinicDB`` (the driver),
``clinic_scope`` and ``current_scope`` (the contextvars scope),
``CausalToken``, ``DriverConfig`` and the driver's exceptions.
"""

from importlib.metadata import PackageNotFoundError, version

from clinicdb._config import DriverConfig
from clinicdb._scope import Scope, clinic_scope, current_scope
from clinicdb._tokens import CausalToken
from clinicdb.asyncio import AsyncClinicDB
from clinicdb.errors import (
    ClinicDBError,
    CommitOutcomeUnknown,
    NoClinicScope,
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
    "PoolExhausted",
    "Scope",
    "TransactionAborted",
    "UnsafeLogin",
    "__version__",
    "clinic_scope",
    "current_scope",
]
