"""Exceptions the driver raises on purpose; each says what to do instead.

Database errors (``psycopg.Error`` and its SQLSTATE subclasses) pass through
unchanged; these are the driver's own.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg
from psycopg_pool import PoolTimeout


class ClinicDBError(Exception):
    """Base class of every error the driver raises itself."""


class NoClinicScope(ClinicDBError, LookupError):
    """No clinic was given and no ``clinic_scope()`` is active: nothing was sent to the database.

    Pass ``clinic_id=`` or wrap the code in ``with clinicdb.clinic_scope(clinic_id): ...``.
    """


class PoolExhausted(ClinicDBError, PoolTimeout):
    """No connection became free (or could be opened) within the acquire timeout.

    The message has the pool's numbers and, when the pool could open no
    connection, what the server is doing (down, a standby, failing over).
    ``server_down`` is then True, and ``run_read``/``run_write`` retry: nothing was sent.
    """

    server_down: bool = False


class NotSent(ClinicDBError, psycopg.OperationalError):
    """The connection failed before any statement of the block was sent: nothing of the transaction ran.

    ``run_read`` and ``run_write`` run it again; inside ``db.read()``/``db.write()`` run the block again yourself.
    """


class CommitOutcomeUnknown(ClinicDBError):
    """The connection was lost while COMMIT was in flight: the write may or may not have been applied.

    The driver never retries such a write. Ask ``db.settle(exc.request_id, exc.clinic_id, since=exc.started_at)``
    whether it landed (the audit trail on the primary knows, when the write
    passed a ``request_id`` and changed an audited table) before doing it again.
    """

    def __init__(
        self,
        message: str,
        *,
        clinic_id: uuid.UUID | None = None,
        request_id: str | None = None,
        started_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.clinic_id, self.request_id, self.started_at = clinic_id, request_id, started_at


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
    "NotSent",
    "PoolExhausted",
    "TransactionAborted",
    "UnsafeLogin",
]
