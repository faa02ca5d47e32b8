"""Causal tokens: a WAL position that a later read must not travel back before.

A token is the primary's WAL insert position right after a write committed.
A replica whose ``pg_last_wal_replay_lsn()`` is at or past it has replayed that
commit, so a read there sees the write. Tokens are plain values: compare them,
store them (``str(token)`` is the usual ``16/B374D848`` form), parse them back.
"""

from __future__ import annotations

from dataclasses import dataclass


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` as an integer byte position; ValueError when malformed."""
    high, sep, low = text.partition("/")
    if not sep or not high or not low:
        raise ValueError(f"not a WAL position (expected 'X/Y' in hex): {text[:40]!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    """The integer position in PostgreSQL's ``X/Y`` text form."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(frozen=True, order=True)
class CausalToken:
    """The primary's WAL position after a commit; reads given it see that commit."""

    lsn: int

    @classmethod
    def parse(cls, text: str) -> CausalToken:
        """A token from its ``str()`` form (for carrying it across requests, e.g. in a cookie)."""
        return cls(parse_lsn(text))

    def __str__(self) -> str:
        return format_lsn(self.lsn)


def later(a: CausalToken | None, b: CausalToken | None) -> CausalToken | None:
    """The later of two optional tokens (reads must see both writes)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a.lsn >= b.lsn else b
