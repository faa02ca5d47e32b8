"""Editing libpq URLs without dropping their other parts."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

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
