"""Helpers for the Citus suites."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from clinicdb.citus import clinic_context_statements


@contextmanager
def scoped(url: str, clinic_id: uuid.UUID | None, **context: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection inside one transaction with ``clinic_id`` in force the way Citus propagates it (no clinic
    when None); committed on a clean exit."""
    with psycopg.connect(url) as conn:
        if clinic_id is not None:
            for statement in clinic_context_statements(clinic_id, **context):
                conn.execute(statement)
        yield conn
