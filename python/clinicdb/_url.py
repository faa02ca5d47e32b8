"""Editing libpq URLs without dropping their other parts."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import conninfo


def replace_url(url: str, *, user: str | None = None, database: str | None = None) -> str:
    """``url`` with another user and/or database; key=value conninfo becomes a URL."""
    if "://" not in url:
        params = conninfo.conninfo_to_dict(url)
        host = str(params.pop("host", "127.0.0.1"))
        port = str(params.pop("port", "5432"))
        login = str(params.pop("user", ""))
        dbname = str(params.pop("dbname", ""))
        query = "&".join(f"{k}={quote(str(v))}" for k, v in params.items())
        url = f"postgresql://{quote(login)}@{host}:{port}/{quote(dbname)}" + (f"?{query}" if query else "")
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        hostpart = netloc.rsplit("@", 1)[-1]
        netloc = f"{quote(user)}@{hostpart}"
    path = f"/{quote(database)}" if database is not None else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


_SCHEMES = ("postgresql://", "postgres://")
_STANDBY_ATTRS = frozenset({"standby", "prefer-standby", "read-only"})


def seeks_standby(url: str) -> bool:
    """True when ``url`` asks libpq for a standby (``target_session_attrs=standby``, ``prefer-standby``, ``read-only``).

    Such a replica URL, usually multi-host (pg_auto_failover's, ``clinicdb dev
    env --ha``), leads to whichever node is a standby when it connects. A
    connection of it whose server was then promoted no longer goes where the
    URL leads: a new connection finds the standby, and the URL is never a place
    to send writes.
    """
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return False
    return str(params.get("target_session_attrs", "")).strip().lower() in _STANDBY_ATTRS


def split_urls(text: str, *, what: str = "CLINICDB_REPLICA_URLS") -> list[str]:
    """Whitespace-separated libpq URLs; a comma separates URLs only where every piece is a whole URL.

    ``postgresql://a:5432,b:5432/db`` (one multi-host URL) stays one URL;
    ``postgresql://a/db,postgresql://b/db`` is two. ValueError (naming
    ``what``) for a piece that is not a URL: key=value strings hold spaces,
    so they cannot be listed this way.
    """
    urls: list[str] = []
    for token in text.split():
        pieces = [p for p in token.split(",") if p]
        if len(pieces) > 1 and all(p.startswith(_SCHEMES) for p in pieces):
            urls.extend(pieces)
        elif token.startswith(_SCHEMES):
            urls.append(token)
        else:
            raise ValueError(
                f"{what}: {token[:60]!r} is not a postgresql:// URL; list URLs separated by spaces"
                " (a multi-host URL such as postgresql://h1:5432,h2:5432/db counts as one)"
            )
    return urls
