"""What a retry may repeat, and how long it waits: shared by both drivers.

A whole transaction is retried (never a single statement) on:

* serialization failure (40001) and deadlock (40P01), reads and writes: the
  server rolled the transaction back, so running it again is exactly right;
* for reads only, a connection lost before commit (SQLSTATE class 08, admin
  shutdown 57P01-57P03, or no SQLSTATE at all): a read changed nothing;
* reads and writes, a transaction none of whose statements was sent
  (``NotSent``: the connection failed during the opening, or the primary
  turned out to be a standby; ``PoolExhausted`` because the server is down).

Never retried: ``CommitOutcomeUnknown`` (the write may have happened), any
other error, and anything raised by a context manager block (only the
``run_read``/``run_write`` callables retry).
"""

from __future__ import annotations

import random

import psycopg

from clinicdb.errors import CommitOutcomeUnknown, NotSent, PoolExhausted

RETRY_SQLSTATES = frozenset({"40001", "40P01"})
_LOST = frozenset({"57P01", "57P02", "57P03"})


def connection_lost(exc: BaseException) -> bool:
    """The error means the connection (or the server) went away."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _LOST


def retryable(exc: BaseException, *, read: bool) -> bool:
    """May the whole transaction be run again after ``exc``?"""
    if isinstance(exc, CommitOutcomeUnknown):
        return False
    if isinstance(exc, NotSent) or (isinstance(exc, PoolExhausted) and exc.server_down):
        return True
    if isinstance(exc, psycopg.Error) and exc.sqlstate in RETRY_SQLSTATES:
        return True
    return read and connection_lost(exc)


def delay(attempt: int, *, base: float, cap: float, rand: random.Random | None = None) -> float:
    """Seconds to sleep before retry number ``attempt`` (1-based): full jitter over a capped exponential."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return (rand or random).uniform(0, ceiling)
