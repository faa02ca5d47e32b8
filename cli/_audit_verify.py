"""What ``clinicdb audit verify`` runs: every part of a seal verification, then the anchors.

The SQL functions do the work (sql/functions/audit_verify.sql); this module
walks the parts clinicdb.audit_verify_plan() cuts, so the command can show
progress, keeps one limit on the rows listed across all parts, and checks the
heads kept outside the database (``--expect``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import psycopg

PART_ROWS = 100_000
NO_CLINIC = "none"
_NIL = uuid.UUID(int=0)
_COLUMNS = "scope, clinic_id, block_no, problem, audit_id, row_count, detail"


@dataclass(frozen=True)
class Anchor:
    """A head kept outside the database: a round (or a legacy block) when ``chain`` is None, else a chain's block."""

    number: int
    digest: str
    chain: uuid.UUID | None = None

    def __str__(self) -> str:
        if self.chain is None:
            return f"{self.number}:{self.digest}"
        return f"{label(self.chain)}:{self.number}:{self.digest}"


def label(chain: uuid.UUID | None) -> str:
    """A chain as anchors and seal output name it: the clinic's uuid, or ``none`` for rows without a clinic."""
    return NO_CLINIC if chain is None or chain == _NIL else str(chain)


def parse_anchor(value: str) -> Anchor:
    """``ROUND:HASH`` or ``CLINIC:BLOCK:HASH`` (CLINIC a uuid, or ``none``), as ``clinicdb audit seal`` prints them."""
    parts = value.strip().split(":")
    wrong = click.ClickException(
        "--expect wants ROUND:HASH or CLINIC:BLOCK:HASH as printed by `clinicdb audit seal` "
        f"(CLINIC a uuid, or {NO_CLINIC} for rows without a clinic), not {value!r}"
    )
    if len(parts) not in (2, 3) or not parts[-2].isdigit() or len(parts[-1]) != 64:
        raise wrong
    chain = None
    if len(parts) == 3:
        try:
            chain = _NIL if parts[0] == NO_CLINIC else uuid.UUID(parts[0])
        except ValueError:
            raise wrong from None
    return Anchor(int(parts[-2]), parts[-1].lower(), chain)


@dataclass
class Report:
    """Every problem found, the rows not listed (per kind), and what was covered."""

    problems: list[dict[str, Any]] = field(default_factory=list)
    not_listed: Counter[str] = field(default_factory=Counter)
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.not_listed


def _add(report: Report, rows: list[tuple[Any, ...]]) -> int:
    """Record problem rows; return how many row-level problems were listed."""
    listed = 0
    for scope, clinic, block, problem, audit_id, count, detail in rows:
        if audit_id is None and problem.startswith("rows "):
            report.not_listed[problem] += int(count)
            continue
        listed += audit_id is not None
        report.problems.append(
            {"scope": scope, "clinic": clinic, "block": block, "problem": problem, "audit_id": audit_id,
             "rows": count, "detail": detail}
        )  # fmt: skip
    return listed


def _check_anchor(conn: psycopg.Connection[Any], anchor: Anchor) -> str | None:
    """None when the anchor still matches; else what differs."""
    if anchor.chain is not None:
        row = conn.execute(
            "select encode(block_hash, 'hex') from clinicdb.audit_seals where clinic_id = %s and block_no = %s",
            (anchor.chain, anchor.number),
        ).fetchone()
        what = f"block {anchor.number} of {'the no-clinic chain' if anchor.chain == _NIL else f'clinic {anchor.chain}'}"
    else:
        # Round numbers continue the legacy chain's block numbers: a head kept
        # before the cut-over names a legacy block.
        cut = conn.execute("select legacy_block from clinicdb.audit_cutover()").fetchone()
        legacy = cut is not None and anchor.number <= cut[0]
        query = (
            "select encode(block_hash, 'hex') from clinicdb.audit_seals_legacy where block_no = %s"
            if legacy
            else "select encode(round_hash, 'hex') from clinicdb.audit_seal_rounds where round_no = %s"
        )
        row = conn.execute(query, (anchor.number,)).fetchone()
        what = f"block {anchor.number} of the legacy chain" if legacy else f"round {anchor.number}"
    if row is None:
        return f"{what} no longer exists; the head kept elsewhere was {anchor}"
    if row[0] != anchor.digest:
        return (
            f"{what} has hash {row[0]}, not the {anchor.digest} kept elsewhere: the chain was rewritten from there on"
        )
    return None


def plan(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """The parts of a verification: (part, first_clinic, last_clinic, first_no, last_no, rows)."""
    return conn.execute(
        "select part, first_clinic, last_clinic, first_no, last_no, rows from clinicdb.audit_verify_plan(%s)",
        (PART_ROWS,),
    ).fetchall()


def verify(
    conn: psycopg.Connection[Any],
    parts: list[tuple[Any, ...]],
    anchors: list[Anchor],
    max_rows: int,
    progress: Callable[[int], None],
) -> Report:
    """Run every part of the verification, then check the anchors; ``progress`` gets rows done per part."""
    report = Report()
    status = conn.execute(
        "select chains, blocks, sealed_rows, head_round, legacy_blocks, legacy_rows from clinicdb.audit_seal_status()"
    ).fetchone()
    assert status is not None
    report.status = dict(
        zip(("chains", "blocks", "rows", "head_round", "legacy_blocks", "legacy_rows"), status, strict=True)
    )
    _add(report, conn.execute(f"select {_COLUMNS} from clinicdb.verify_audit_rounds()").fetchall())
    _add(report, conn.execute(f"select {_COLUMNS} from clinicdb.verify_audit_months()").fetchall())
    left = max_rows
    for part, first_clinic, last_clinic, first_no, last_no, rows in parts:
        params: tuple[Any, ...]
        if part == "chains":
            call, params = "verify_audit_chains(%s, %s)", (first_clinic, last_clinic)
        elif part == "legacy":
            call, params = "verify_audit_legacy(%s, %s, %s)", (first_no, last_no, left)
        else:
            call, params = "verify_audit_rows(%s, %s, %s)", (first_no, last_no, left)
        found = conn.execute(f"select {_COLUMNS} from clinicdb.{call}", params).fetchall()
        left = max(left - _add(report, found), 0)
        progress(int(rows))
    for anchor in anchors:
        mismatch = _check_anchor(conn, anchor)
        if mismatch is not None:
            report.problems.append(
                {"scope": "anchor", "clinic": anchor.chain, "block": anchor.number, "problem": "anchor mismatch",
                 "audit_id": None, "rows": None, "detail": mismatch}
            )  # fmt: skip
    return report
