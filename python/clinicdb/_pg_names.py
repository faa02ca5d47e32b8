"""PostgreSQL's names, as the scaffold needs them: which words it reserves, which type names it knows, quoting.

Pure knowledge of PostgreSQL, no clinicdb rules: ``clinicdb.scaffold`` decides
what a tenant table may be called and holds; this module says how PostgreSQL
reads a name and spells a type. test_scaffold.py compares the keyword lists
with the running server's ``pg_get_keywords()`` and creates a column of every
type spelling listed here.
"""

from __future__ import annotations

import re

# Words PostgreSQL reserves (pg_get_keywords() categories R and T, PostgreSQL
# 15, plus system_user, reserved since 16): a table or column named so needs
# double quotes in every query that names it, so the scaffold refuses them.
RESERVED = frozenset(
    """
    all analyse analyze and any array as asc asymmetric both case cast check collate column constraint create
    current_catalog current_date current_role current_time current_timestamp current_user default deferrable desc
    distinct do else end except false fetch for foreign from grant group having in initially intersect into lateral
    leading limit localtime localtimestamp not null offset on only or order placing primary references returning
    select session_user some symmetric system_user table then to trailing true union unique user using variadic
    when where window with
    authorization binary collation concurrently cross current_schema freeze full ilike inner is isnull join left
    like natural notnull outer overlaps right similar tablesample verbose
    """.split()  # noqa: SIM905 (a word list reads better than 120 quoted strings)
)
# Column-name keywords (category C; the json_* ones since 17): valid names,
# quoted anyway, as PostgreSQL's own quote_ident() does.
COLUMN_KEYWORDS = frozenset(
    """
    between bigint bit boolean char character coalesce dec decimal exists extract float greatest grouping inout int
    integer interval json json_array json_arrayagg json_exists json_object json_objectagg json_query json_scalar
    json_serialize json_table json_value least merge_action national nchar none normalize nullif numeric out overlay
    position precision real row setof smallint substring time timestamp treat trim values varchar xmlattributes
    xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
    """.split()  # noqa: SIM905 (a word list reads better than 120 quoted strings)
)
# Type names (and aliases) PostgreSQL knows, with the spelling the migration
# uses and how many modifiers each takes (varchar(40), numeric(10,2)).
TYPES: dict[str, tuple[str, int]] = {
    "text": ("text", 0),
    "varchar": ("varchar", 1),
    "character varying": ("varchar", 1),
    "char": ("char", 1),
    "character": ("char", 1),
    "smallint": ("smallint", 0),
    "int2": ("smallint", 0),
    "integer": ("integer", 0),
    "int": ("integer", 0),
    "int4": ("integer", 0),
    "bigint": ("bigint", 0),
    "int8": ("bigint", 0),
    "numeric": ("numeric", 2),
    "decimal": ("numeric", 2),
    "real": ("real", 0),
    "float4": ("real", 0),
    "double precision": ("double precision", 0),
    "float8": ("double precision", 0),
    "float": ("double precision", 0),
    "money": ("money", 0),
    "boolean": ("boolean", 0),
    "bool": ("boolean", 0),
    "date": ("date", 0),
    "time": ("time", 1),
    "time without time zone": ("time", 1),
    "timetz": ("timetz", 1),
    "time with time zone": ("timetz", 1),
    "timestamp": ("timestamp", 1),
    "timestamp without time zone": ("timestamp", 1),
    "timestamptz": ("timestamptz", 1),
    "timestamp with time zone": ("timestamptz", 1),
    "interval": ("interval", 1),
    "uuid": ("uuid", 0),
    "json": ("json", 0),
    "jsonb": ("jsonb", 0),
    "bytea": ("bytea", 0),
    "inet": ("inet", 0),
    "cidr": ("cidr", 0),
    "macaddr": ("macaddr", 0),
    "macaddr8": ("macaddr8", 0),
    "bit": ("bit", 1),
    "varbit": ("varbit", 1),
    "bit varying": ("varbit", 1),
    "xml": ("xml", 0),
    "tsvector": ("tsvector", 0),
    "int4range": ("int4range", 0),
    "int8range": ("int8range", 0),
    "numrange": ("numrange", 0),
    "daterange": ("daterange", 0),
    "tsrange": ("tsrange", 0),
    "tstzrange": ("tstzrange", 0),
}
MAX_IDENTIFIER = 63  # NAMEDATALEN - 1: a longer name is silently truncated

_BARE = re.compile(r"[a-z_][a-z0-9_]*")
_TYPE = re.compile(r"(?P<base>[a-z][a-z0-9 ]*?)\s*(?:\((?P<mods>[0-9 ,]+)\))?\s*(?P<array>(?:\[\])*)")


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier: bare when PostgreSQL reads it back unchanged, else double-quoted (what
    PostgreSQL's own ``quote_ident()`` returns)."""
    if _BARE.fullmatch(name) and name not in RESERVED and name not in COLUMN_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def type_spelling(text: str) -> str:
    """A type as written after a column name (``Character Varying(40)``, ``int[]``), spelled the way PostgreSQL
    prints it (``varchar(40)``, ``integer[]``); ``ValueError`` when it is not one of ``TYPES`` or its modifiers
    do not fit."""
    spelled = " ".join(text.strip().lower().split())
    found = _TYPE.fullmatch(spelled)
    if not found or found["base"].strip() not in TYPES:
        raise ValueError(
            f"{text!r} is not a PostgreSQL type clinicdb new knows: use one of text, varchar(n), integer, bigint, "
            "numeric(p,s), boolean, date, timestamptz, uuid, jsonb, bytea, ... (add [] for an array)"
        )
    name, allowed = TYPES[found["base"].strip()]
    mods = [m.strip() for m in found["mods"].split(",")] if found["mods"] is not None else []
    if len(mods) > allowed or not all(m.isdigit() for m in mods):
        takes = "no modifier" if not allowed else f"at most {allowed} number(s) in parentheses"
        raise ValueError(f"{name} takes {takes} (got {text!r})")
    modifier = f"({','.join(str(int(m)) for m in mods)})" if mods else ""
    return name + modifier + found["array"]
