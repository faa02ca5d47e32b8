"""``clinicdb audit``: read the trail, keep its partitions, prune, archive, seal and verify it.

Every command is a thin wrapper around SQL functions a DBA or a scheduler can
call directly (clinicdb.ensure_audit_partitions, prune_audit, seal_audit,
verify_audit); see docs/audit.md.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import sql

from clinicdb.settings import env

from . import _audit_verify
from ._common import (
    admin_url_option,
    friendly_errors,
    output_options,
    print_rows,
    print_table,
    require_clinic,
    resolve_admin_url,
)

DEFAULT_RETENTION_DAYS = 2555
MANIFEST = "MANIFEST.sha256"
MANIFEST_JSON = "manifest.json"

_JSON_KEYS = [
    "id",
    "logged_at",
    "clinic_id",
    "table_name",
    "row_id",
    "action",
    "old_values",
    "new_values",
    "purpose",
    "app_user",
    "acting_role",
    "session_role",
    "request_id",
    "txid",
    "client_addr",
    "application_name",
]
_TRAIL_COLUMNS = ["logged_at", "clinic_id", "table", "row_id", "action", "changes", "app_user", "role", "request_id"]


def _retention_days(value: int | None) -> int:
    if value is not None:
        return value
    raw = env("CLINICDB_AUDIT_RETENTION_DAYS", str(DEFAULT_RETENTION_DAYS)) or str(DEFAULT_RETENTION_DAYS)
    if not raw.isdigit() or int(raw) < 1:
        raise click.ClickException(f"CLINICDB_AUDIT_RETENTION_DAYS must be a whole number of days >= 1, not {raw!r}")
    return int(raw)


def _changes(action: str, old: dict[str, Any] | None, new: dict[str, Any] | None, purpose: str | None) -> str:
    """A one-line summary of what an audit row says changed (keys only for inserts and deletes)."""
    if action == "access":
        return f"read: {purpose or ''}"
    if action == "update" and old is not None and new is not None:
        return ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v)
    image = new if action == "insert" else old
    if image is None:
        return json.dumps(new or old or {}, default=str)
    return f"{len(image)} columns"


def _trail_rows(rows: list[tuple[Any, ...]], as_json: bool) -> None:
    if as_json:
        keys = _JSON_KEYS
        click.echo(json.dumps([dict(zip(keys, r, strict=True)) for r in rows], default=str, indent=2))
        return
    table = [
        (
            r[1].strftime("%Y-%m-%d %H:%M:%S") if r[1] else "",
            str(r[2])[:8] if r[2] else "-",
            r[3],
            r[4] or "",
            r[5],
            _changes(r[5], r[6], r[7], r[8])[:70],
            r[9] or "",
            r[10],
            r[12] or "",
        )
        for r in rows
    ]
    print_table(_TRAIL_COLUMNS, table)


_SELECT_ROWS_FROM = (
    "select id, logged_at, clinic_id, table_name, row_id, action, old_values, new_values, purpose,"
    " app_user, acting_role, session_role, request_id, txid, client_addr, application_name from "
)
_SELECT_TRAIL = _SELECT_ROWS_FROM + "clinicdb.audit_log"
# On Citus the rows without a clinic (truncate, prune) are in a table of their own (migration 0046, docs/citus.md).
_UNSCOPED = "clinicdb.audit_log_unscoped"
_SELECT_UNSCOPED = _SELECT_ROWS_FROM + _UNSCOPED


def _has_unscoped(conn: psycopg.Connection[Any]) -> bool:
    """True when the database keeps the rows without a clinic apart (Citus, after migration 0046)."""
    found = conn.execute("select to_regclass(%s) is not null", (_UNSCOPED,)).fetchone()
    return bool(found and found[0])


@click.group()
def audit() -> None:
    """Read, maintain and verify the audit trail.

    Example:

        clinicdb audit tail --clinic 0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b11
        clinicdb audit seal && clinicdb audit verify
    """


@audit.command()
@click.option("--clinic", "clinic_id", type=click.UUID, help="Only this clinic's rows.")
@click.option("--table", "table_name", help="Only this table (schema.table, or a table in public).")
@click.option("--user", "app_user", help="Only rows of this application user (app.user_id).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000), help="How many rows.")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 3650), help="How far back to look.")
@admin_url_option
@output_options
@friendly_errors
def tail(
    clinic_id: uuid.UUID | None,
    table_name: str | None,
    app_user: str | None,
    limit: int,
    days: int,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Show the newest audit rows, newest last.

    On Citus the rows without a clinic (truncate, prune records) are listed
    with the others, unless --clinic is given.

    Example:

        clinicdb audit tail --clinic 0b9a5f4e-8a47-4c1e-9a57-1d3f0e7c2b11 --user dr-who --limit 50
    """
    if table_name and "." not in table_name:
        table_name = f"public.{table_name}"
    newest = (
        " where logged_at >= now() - make_interval(days => %(days)s)"
        " and (%(clinic)s::uuid is null or clinic_id = %(clinic)s::uuid)"
        " and (%(table)s::text is null or table_name = %(table)s::text)"
        " and (%(user)s::text is null or app_user = %(user)s::text)"
        " order by logged_at desc, id desc limit %(limit)s"
    )
    params = {"days": days, "clinic": clinic_id, "table": table_name, "user": app_user, "limit": limit}
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        rows = conn.execute(sql.SQL(_SELECT_TRAIL + newest), params).fetchall()
        if clinic_id is None and _has_unscoped(conn):
            rows += conn.execute(sql.SQL(_SELECT_UNSCOPED + newest), params).fetchall()
            rows = sorted(rows, key=lambda r: (r[1], r[0]), reverse=True)[:limit]
        if not rows:
            require_clinic(conn, clinic_id)
            if table_name:
                _known_table(conn, table_name, f"in the last {days} days")
    _trail_rows(list(reversed(rows)), as_json)


def _known_table(conn: psycopg.Connection[Any], table_name: str, window: str) -> None:
    """No rows for a table: fine if it is audited; a typo (no such table) or a table whose changes the trail
    never records is an error that says so."""
    found = conn.execute(
        "select t is not null, exists (select 1 from pg_trigger where tgrelid = t and tgname = 'clinicdb_audit_insert')"
        "  from to_regclass(%s) t",
        (table_name,),
    ).fetchone()
    if not (found and found[0]):
        raise click.ClickException(
            f"no table {table_name} exists, and the trail has no rows of it {window}: check the name (schema.table)"
        )
    if not found[1]:
        raise click.ClickException(
            f"{table_name} is not audited, and the trail has no rows of it {window}: "
            f"its changes are not recorded until it is protected (clinicdb protect {table_name})"
        )


@audit.command()
@click.argument("table_name")
@click.argument("row_id")
@admin_url_option
@output_options
@friendly_errors
def history(table_name: str, row_id: str, database_url: str | None, as_json: bool) -> None:
    """Show every audit row about one row of a table, oldest first.

    Example:

        clinicdb audit history patients 3f0c2b11-8a47-4c1e-9a57-1d3f0e7c2b11
    """
    if "." not in table_name:
        table_name = f"public.{table_name}"
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        rows = conn.execute(
            _SELECT_TRAIL + " where row_id = %s and table_name = %s order by logged_at, id", (row_id, table_name)
        ).fetchall()
        if not rows:
            _known_table(conn, table_name, "for that row")
    if not rows and not as_json:
        click.echo(f"no audit rows for {table_name} {row_id}")
        return
    _trail_rows(rows, as_json)


@audit.command()
@click.option("--months-ahead", default=3, show_default=True, type=click.IntRange(0, 120),
              help="Create partitions up to this many months ahead.")  # fmt: skip
@admin_url_option
@output_options
@friendly_errors
def partitions(months_ahead: int, database_url: str | None, as_json: bool) -> None:
    """Create the coming months' partitions (moving rows out of the default one), then list them all.

    Run daily from a scheduler, or rely on the default partition catching
    rows of a month nobody prepared (the next run moves them).

    Example:

        clinicdb audit partitions --months-ahead 6
    """
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        created = conn.execute(
            "select partition_name, moved_rows from clinicdb.ensure_audit_partitions(%s)", (months_ahead,)
        ).fetchall()
        listed = conn.execute(
            "select partition_name, range_from, range_to, estimated_rows, pg_size_pretty(total_bytes)"
            " from clinicdb.audit_partitions()"
        ).fetchall()
    if not as_json:
        for name, moved in created:
            click.echo(f"created {name}" + (f" (moved {moved} rows from the default partition)" if moved else ""))
    print_rows(["partition", "from", "to", "rows (estimate)", "size"], listed, as_json)


def _archived(directory: Path) -> dict[str, dict[str, Any]]:
    path = directory / MANIFEST_JSON
    if not path.exists():
        return {}
    entries: list[dict[str, Any]] = json.loads(path.read_text())
    return {e["partition"]: e for e in entries}


@audit.command()
@click.option(
    "--retention-days",
    type=click.IntRange(1),
    help="Keep this many days (default: CLINICDB_AUDIT_RETENTION_DAYS, 2555).",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be dropped.")
@click.option("--require-archive", type=click.Path(file_okay=False, path_type=Path),
              help="Refuse unless every partition to drop is in this archive with the same row count.")  # fmt: skip
@admin_url_option
@output_options
@friendly_errors
def prune(
    retention_days: int | None, dry_run: bool, require_archive: Path | None, database_url: str | None, as_json: bool
) -> None:
    """Drop whole audit partitions that ended before the retention period, sealing what it drops.

    Says what it will drop first; never touches a month inside retention or
    the default partition. Seals every final row first and refuses a month
    with rows not sealed yet, or whose rows differ from their seals; writes a
    sealed prune record into each chain that held rows of the month (so
    `clinicdb audit verify` can tell it from a month someone truncated) and a
    'prune' row into the trail, then prints the new head to keep elsewhere.

    Example:

        clinicdb audit archive --to /backup/audit && clinicdb audit prune --require-archive /backup/audit
    """
    days = _retention_days(retention_days)
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        plan = conn.execute(
            "select partition_name, range_from, range_to, row_count, action"
            " from clinicdb.prune_audit(make_interval(days => %s), true)",
            (days,),
        ).fetchall()
        if require_archive is not None:
            archived = _archived(require_archive)
            for name, _, _, rows, _ in plan:
                entry = archived.get(name)
                if entry is None or entry["rows"] != rows:
                    raise click.ClickException(
                        f"{name} is not archived in {require_archive} with {rows} rows; "
                        f"run: clinicdb audit archive --to {require_archive}"
                    )
        if not as_json:
            if not plan:
                click.echo(f"nothing to prune: no partition ended more than {days} days ago")
                return
            click.echo(f"partitions that ended more than {days} days ago:")
            print_table(["partition", "from", "to", "rows", "action"], plan)
        if dry_run:
            if as_json:
                print_rows(["partition", "from", "to", "rows", "action"], plan, True)
            return
        done = conn.execute(
            "select partition_name, range_from, range_to, row_count, action"
            " from clinicdb.prune_audit(make_interval(days => %s), false)",
            (days,),
        ).fetchall()
        conn.commit()
        head, _ = _seal_head(conn)
    if as_json:
        print_rows(["partition", "from", "to", "rows", "action"], done, True)
    else:
        click.echo(
            f"dropped {len(done)} partition(s), {sum(r[3] for r in done)} rows; each month is sealed as pruned in "
            "the chains that held its rows"
        )
        click.echo(f"{head}  (keep it elsewhere, as after `clinicdb audit seal`)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@audit.command()
@click.option("--to", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the compressed files and the manifest.")  # fmt: skip
@click.option("--all", "everything", is_flag=True, help="Every monthly partition, not just those past retention.")
@click.option(
    "--retention-days", type=click.IntRange(1), help="Which partitions prune would drop (default: the setting)."
)
@admin_url_option
@output_options
@friendly_errors
def archive(
    directory: Path, everything: bool, retention_days: int | None, database_url: str | None, as_json: bool
) -> None:
    """Export audit partitions to gzip-compressed CSV files with a SHA-256 manifest.

    By default exports the partitions `clinicdb audit prune` would drop.
    Writes PARTITION.csv.gz, MANIFEST.sha256 (check with `sha256sum -c`) and
    manifest.json (rows, range, checksum). A partition already archived with
    the same row count is skipped. On Citus each file also holds the month's
    rows without a clinic, which prune drops with the partition.

    Example:

        clinicdb audit archive --to /backup/audit-2026
    """
    days = _retention_days(retention_days)
    directory.mkdir(parents=True, exist_ok=True)
    entries = _archived(directory)
    written: list[tuple[str, int, str]] = []
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        if everything:
            parts = conn.execute(
                "select partition_name, range_from, range_to from clinicdb.audit_partitions() where not is_default"
            ).fetchall()
        else:
            parts = conn.execute(
                "select partition_name, range_from, range_to"
                " from clinicdb.prune_audit(make_interval(days => %s), true)",
                (days,),
            ).fetchall()
        unscoped = _has_unscoped(conn)
        with click.progressbar(parts, label="archiving", show_pos=True, file=sys.stderr) as bar:
            for name, start, end in bar:
                month: sql.Composable = sql.Identifier(*name.split("."))
                if unscoped:
                    # On Citus the month's rows without a clinic are elsewhere, and prune drops them with it.
                    month = sql.SQL(
                        "(select * from {} union all select * from clinicdb.audit_log_unscoped u"
                        " where u.logged_at >= {} and u.logged_at < {}) m"
                    ).format(month, sql.Literal(start), sql.Literal(end))
                count_row = conn.execute(sql.SQL("select count(*) from {}").format(month)).fetchone()
                rows = int(count_row[0]) if count_row else 0
                if name in entries and entries[name]["rows"] == rows:
                    continue
                target = directory / f"{name}.csv.gz"
                tmp = target.with_suffix(".gz.part")
                copy = sql.SQL("copy (select * from {} order by txid, id) to stdout with (format csv, header)").format(
                    month
                )
                with gzip.open(tmp, "wb") as out, conn.cursor().copy(copy) as cp:
                    for chunk in cp:
                        out.write(bytes(chunk))
                tmp.replace(target)
                checksum = _sha256(target)
                entries[name] = {
                    "partition": name,
                    "file": target.name,
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                    "rows": rows,
                    "sha256": checksum,
                    "bytes": target.stat().st_size,
                    "archived_at": dt.datetime.now(dt.UTC).isoformat(),
                }
                written.append((name, rows, checksum))
    ordered = sorted(entries.values(), key=lambda e: str(e["partition"]))
    (directory / MANIFEST_JSON).write_text(json.dumps(ordered, indent=2) + "\n")
    (directory / MANIFEST).write_text("".join(f"{e['sha256']}  {e['file']}\n" for e in ordered))
    if as_json:
        print_rows(["partition", "rows", "sha256"], written, True)
    elif written:
        print_table(["partition", "rows", "sha256"], written)
        click.echo(f"manifest: {directory / MANIFEST}")
    else:
        click.echo("nothing new to archive")


def _seal_head(conn: psycopg.Connection[Any]) -> tuple[str, dict[str, Any]]:
    """The round head to keep elsewhere, as a line and as fields."""
    status = conn.execute(
        "select head_round, head_hash, chains, blocks, sealed_rows, unsealed_rows, oldest_unsealed_at,"
        " legacy_blocks, legacy_rows from clinicdb.audit_seal_status()"
    ).fetchone()
    assert status is not None
    fields = dict(
        zip(
            ("head_round", "head_hash", "chains", "blocks", "sealed_rows", "unsealed_rows", "oldest_unsealed_at",
             "legacy_blocks", "legacy_rows"),
            status,
            strict=True,
        )
    )  # fmt: skip
    line = f"head: {fields['head_round']}:{fields['head_hash']}"
    return line, fields


@audit.command()
@click.option("--block-rows", default=10_000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Rows per hash block.")  # fmt: skip
@click.option("--min-rows", default=1_000, show_default=True, type=click.IntRange(1),
              help="Seal a clinic's chain once it has this many final rows waiting...")  # fmt: skip
@click.option("--max-wait", default=60, show_default=True, type=click.IntRange(0), metavar="MINUTES",
              help="...or once its oldest waiting row is this many minutes old.")  # fmt: skip
@click.option("--all", "everything", is_flag=True, help="Seal every final row now (--min-rows 1 --max-wait 0).")
@admin_url_option
@output_options
@friendly_errors
def seal(
    block_rows: int, min_rows: int, max_wait: int, everything: bool, database_url: str | None, as_json: bool
) -> None:
    """Hash-chain the final audit rows of each clinic's chain that is due; print the heads.

    One chain per clinic, and one for rows without a clinic. A chain is
    sealed when it has --min-rows rows waiting or its oldest waiting row is
    --max-wait minutes old, so quiet clinics do not make a tiny block every
    run. Prints one `chain CLINIC:BLOCK:HASH` line per chain extended, then
    `head: ROUND:HASH`, the round that names every chain's head: copy that
    line somewhere the database's administrators cannot write, and check it
    later with `clinicdb audit verify --expect ROUND:HASH`.

    Example:

        clinicdb audit seal            # e.g. every 5 minutes from cron
        clinicdb audit seal --all      # everything final, now
    """
    if everything:
        min_rows, max_wait = 1, 0
    with psycopg.connect(resolve_admin_url(database_url)) as conn:
        blocks = conn.execute(
            "select clinic_id, block_no, row_count, block_hash"
            " from clinicdb.seal_audit(%s, %s, make_interval(mins => %s))",
            (block_rows, min_rows, max_wait),
        ).fetchall()
        conn.commit()
        head, fields = _seal_head(conn)
    heads: dict[uuid.UUID, tuple[int, str]] = {}
    for clinic, block, _, digest in blocks:
        heads[clinic] = (block, digest)
    new_rows = sum(r[2] for r in blocks)
    if as_json:
        result = {
            "new_blocks": len(blocks),
            "new_rows": new_rows,
            **fields,
            "head_block": fields["head_round"],  # the name before 0020: round numbers continue block numbers
            "chains_extended": [
                {"clinic": _audit_verify.label(c), "block": b, "hash": h} for c, (b, h) in sorted(heads.items())
            ],
        }
        # One line per run, for a log of heads (`>> seal-heads.jsonl`).
        click.echo(json.dumps(result, default=str))
        return
    click.echo(f"sealed {new_rows} rows in {len(blocks)} new blocks of {len(heads)} chains")
    for clinic, (block, digest) in sorted(heads.items()):
        click.echo(f"chain {_audit_verify.label(clinic)}:{block}:{digest}")
    waiting = f", {fields['unsealed_rows']} waiting" if fields["unsealed_rows"] else ""
    click.echo(f"{head}  ({fields['sealed_rows']} rows sealed in {fields['chains']} chains{waiting})")


@audit.command()
@click.option("--expect", "expected", multiple=True, metavar="ROUND:HASH | CLINIC:BLOCK:HASH",
              help="A head printed by an earlier `audit seal` and kept elsewhere (repeatable). A BLOCK:HASH kept "
                   "before migration 0020 names a block of the legacy chain and is checked against it.")  # fmt: skip
@click.option("--max-rows", default=50, show_default=True, type=click.IntRange(0),
              help="List at most this many altered, inserted, deleted or unsealed rows; count the rest.")  # fmt: skip
@admin_url_option
@output_options
@friendly_errors
def verify(expected: tuple[str, ...], max_rows: int, database_url: str | None, as_json: bool) -> None:
    """Recompute every seal chain and sealed row; print every problem, one line each, and exit 1 if any.

    Reports missing blocks and ranges (with the hash each had and what to
    do), months gone without a sealed prune record, altered, inserted and
    deleted rows, forged prune records, and heads that no longer match the
    ones kept elsewhere.

    Example:

        clinicdb audit verify --expect 42:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    """
    anchors = [_audit_verify.parse_anchor(v) for v in expected]
    with psycopg.connect(resolve_admin_url(database_url), autocommit=True) as conn:
        parts = _audit_verify.plan(conn)
        with click.progressbar(length=sum(p[-1] for p in parts), label="verifying", file=sys.stderr) as bar:
            report = _audit_verify.verify(conn, parts, anchors, max_rows, bar.update)
    status = report.status
    if as_json:
        summary = {
            "ok": report.ok,
            **status,
            "problems": report.problems,
            "not_listed": dict(report.not_listed),
        }
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        for found in report.problems:
            click.echo(f"{found['problem']}: {found['detail']}")
        for kind, count in sorted(report.not_listed.items()):
            click.echo(f"{kind}: {count} more not listed (--max-rows {max_rows}); see clinicdb.verify_audit()")
        covered = (
            f"{status['chains']} chains, {status['blocks']} blocks, {status['rows']} sealed rows"
            + (f", legacy chain {status['legacy_blocks']} blocks" if status["legacy_blocks"] else "")
            + f" (round {status['head_round']})"
        )
        if report.ok:
            click.echo(f"ok: {covered} verified")
        else:
            found_count = len(report.problems) + sum(report.not_listed.values())
            click.echo(f"TAMPERED: {found_count} problems in {covered}")
    if not report.ok:
        raise SystemExit(1)


def demo_audit_history(admin_url: str, clinic_id: uuid.UUID) -> None:
    """Print a short audit history of one clinic for `clinicdb demo` (the newest changes and reads)."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            _SELECT_TRAIL + " where clinic_id = %s order by logged_at desc, id desc limit 8", (clinic_id,)
        ).fetchall()
    if not rows:
        click.echo("  (no audit rows yet)")
        return
    _trail_rows(list(reversed(rows)), as_json=False)


def register(cli: click.Group) -> None:
    cli.add_command(audit)
