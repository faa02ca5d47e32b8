"""Exceptions the driver raises on purpose; each says what to do instead.

Database errors (``psycopg.Error`` and its SQLSTATE subclasses) pass through
unchanged; these are the driver's own.
"""

from __future__ import annotations

from psycopg_pool import PoolTimeout


class ClinicDBError(Exception):
    """Base class of every error the driver raises itself."""


class NoClinicScope(ClinicDBError, LookupError):
    """No clinic was given and no ``clinic_scope()`` is active: nothing was sent to the database.

    Pass ``clinic_id=`` or wrap the code in ``with clinicdb.clinic_scope(clinic_id): ...``.
    """


class PoolExhausted(ClinicDBError, PoolTimeout):
    """No connection became free (or could be opened) within the acquire timeout; the message has the pool's numbers."""


class CommitOutcomeUnknown(ClinicDBError):
    """The connection was lost while COMMIT was in flight: the write may or may not have been applied.

    The driver never retries such a write. Check the data (ideally through an
    idempotency key your application chose) before doing it again.
    """


class TransactionAborted(ClinicDBError):
    """An error inside the block was caught and the block went on: the database rolled the transaction back."""


class UnsafeLogin(ClinicDBError):
    """The login is a superuser or can bypass row level security, so tenant isolation would not apply.

    Connect as a login that is a member of ``clinicdb_app`` instead.
    """


__all__ = [
    "ClinicDBError",
    "CommitOutcomeUnknown",
    "NoClinicScope",
    "PoolExhausted",
    "TransactionAborted",
    "UnsafeLogin",
]
