"""Which clinic a transaction runs for: validation, the ``contextvars`` scope, and the one statement that sets it.

Everything here happens before any SQL is sent. A malformed clinic id is a
``ValueError`` naming the argument (``clinic_id_arg`` is the only place that
checks one); no clinic at all is ``NoClinicScope``. The scope lives in a
``ContextVar``, so each thread and each asyncio task sees its own (a task
inherits the scope of the code that created it).

``settings_select`` is the only code that writes ``set_config('app.clinic_id', ...)``:
the driver prepares it for its opening, ``scope_sql`` gives it with a scope's
values, ``set_scope`` runs it on a psycopg connection of your own (encryption.py
and ``clinicdb keys`` do), and ``scope_script`` inlines it for ``clinicdb psql``.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg import sql

from clinicdb.errors import NoClinicScope

# GUCs the driver owns, in the order scope_sql sets them; extra settings may not override them.
SCOPE_SETTINGS = ("app.clinic_id", "app.user_id", "app.request_id")
TIMEOUT_SETTINGS = ("statement_timeout", "idle_in_transaction_session_timeout")
RESERVED = frozenset(SCOPE_SETTINGS)
# Extra settings must be custom (dotted) names: that keeps role, session_authorization,
# search_path and every other server parameter out of reach of this door.
_CUSTOM_GUC = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$.]*$")
_MAX_TEXT = 1024
# Exact types whose values resolve() may cache the validated Scope of (hashable, immutable).
_PLAIN_ID = (uuid.UUID, str)
_PLAIN_TEXT = (str, type(None))


@dataclass(frozen=True)
class Scope:
    """One transaction's identity: clinic, acting user, request id and extra transaction-local settings.

    ``settings`` values are secrets as far as the driver knows (the encryption
    work passes a per-transaction key this way): ``repr`` never shows them.
    """

    clinic_id: uuid.UUID
    user_id: str | None = None
    request_id: str | None = None
    # Not hashed (a mapping is not hashable); still compared, so equal scopes have equal settings.
    settings: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False, hash=False)

    def __post_init__(self) -> None:
        # Hashed once: the driver looks its cached Opening up by scope in every transaction, and a UUID's
        # own __hash__ is Python code.
        object.__setattr__(self, "_hash", hash((self.clinic_id.int, self.user_id, self.request_id)))

    def __hash__(self) -> int:
        found: int = self.__dict__["_hash"]
        return found

    def with_settings(self, extra: Mapping[str, str]) -> Scope:
        """This scope with ``extra`` transaction-local settings added (validated like ``settings=``)."""
        return make_scope(
            self.clinic_id, user_id=self.user_id, request_id=self.request_id, settings={**self.settings, **extra}
        )

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.settings)) or "none"
        return (
            f"Scope(clinic_id={self.clinic_id}, user_id={self.user_id!r},"
            f" request_id={self.request_id!r}, settings=[{names}])"
        )


_current: ContextVar[Scope | None] = ContextVar("clinicdb_scope", default=None)


def clinic_id_arg(value: object, argument: str = "clinic_id") -> uuid.UUID:
    """``value`` as a UUID, or ValueError naming ``argument``; strings must be a canonical uuid."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            pass
        else:
            if len(value) in (32, 36):
                return parsed
    shown = repr(value)[:60]
    raise ValueError(f"{argument} must be a clinic uuid (uuid.UUID or its text form), got {shown}")


def _text_arg(value: object, argument: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{argument} must be a str or None, got {type(value).__name__}")
    if "\x00" in value or len(value) > _MAX_TEXT:
        raise ValueError(f"{argument} must be text without NUL bytes, at most {_MAX_TEXT} characters")
    return value


def _settings_arg(value: Mapping[str, str] | None) -> Mapping[str, str]:
    if not value:
        return MappingProxyType({})
    checked: dict[str, str] = {}
    for name, setting in value.items():
        if not isinstance(name, str) or not _CUSTOM_GUC.match(name):
            raise ValueError(
                f"settings: {str(name)[:60]!r} is not a custom setting name like 'clinicdb.master_key';"
                " only dotted names can be set this way"
            )
        if name.lower() in RESERVED:
            raise ValueError(f"settings: {name} is set by the driver; pass clinic_id/user_id/request_id instead")
        if not isinstance(setting, str) or "\x00" in setting:
            # Never echo the value: it may be a key.
            raise ValueError(f"settings: the value of {name} must be a str without NUL bytes")
        checked[name] = setting
    return MappingProxyType(checked)


@lru_cache(maxsize=4096)
def _plain_scope(clinic_int: int, user_id: str | None, request_id: str | None) -> Scope:
    # Keyed by the UUID's integer (hashing an int is C, hashing a UUID is a Python call). Validation runs on
    # the first call only: a malformed argument raises, and exceptions are never cached.
    return make_scope(uuid.UUID(int=clinic_int), user_id=user_id, request_id=request_id)


def make_scope(
    clinic_id: object,
    *,
    user_id: object = None,
    request_id: object = None,
    settings: Mapping[str, str] | None = None,
) -> Scope:
    """A validated ``Scope``; ValueError (naming the argument) on anything malformed."""
    return Scope(
        clinic_id=clinic_id_arg(clinic_id),
        user_id=_text_arg(user_id, "user_id"),
        request_id=_text_arg(request_id, "request_id"),
        settings=_settings_arg(settings),
    )


def resolve(
    clinic_id: object,
    *,
    user_id: object = None,
    request_id: object = None,
    settings: Mapping[str, str] | None = None,
) -> Scope:
    """The scope of one transaction: explicit arguments, else the active ``clinic_scope()``.

    Explicit ``user_id``/``request_id``/``settings`` override the active scope's,
    even when the clinic comes from the scope. No clinic anywhere fails closed.
    """
    if clinic_id is None:
        active = _current.get()
        if active is None:
            raise NoClinicScope(
                "no clinic for this transaction: pass clinic_id=..., or run inside"
                " `with clinicdb.clinic_scope(clinic_id): ...`; nothing was sent to the database"
            )
        if user_id is None and request_id is None and settings is None:
            return active
        merged = dict(active.settings)
        merged.update(settings or {})
        return make_scope(
            active.clinic_id,
            user_id=active.user_id if user_id is None else user_id,
            request_id=active.request_id if request_id is None else request_id,
            settings=merged,
        )
    if (
        settings is None
        and type(clinic_id) in _PLAIN_ID
        and type(user_id) in _PLAIN_TEXT
        and type(request_id) in _PLAIN_TEXT
    ):
        # The common call (no extra settings, which may hold keys and are never cached): one immutable Scope
        # per (clinic, user, request), validated once, instead of a new one per transaction.
        return _plain_scope(clinic_id_arg(clinic_id).int, user_id, request_id)
    return make_scope(clinic_id, user_id=user_id, request_id=request_id, settings=settings)


@contextlib.contextmanager
def clinic_scope(
    clinic_id: uuid.UUID | str,
    *,
    user_id: str | None = None,
    request_id: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> Iterator[Scope]:
    """Run a block of code for one clinic: ``db.read()``/``db.write()`` without a clinic use this one.

    Validates at once (ValueError naming the argument). Nests: the inner scope
    wins until its block ends. Correct across threads and asyncio tasks
    (``contextvars``); a new thread starts with no scope, so pass it on with
    ``contextvars.copy_context().run(...)`` when you start threads yourself.

    Example::

        with clinicdb.clinic_scope(clinic_id, user_id="dr-lee"):
            with db.read() as cur:
                cur.execute("select count(*) from patients")
    """
    scope = make_scope(clinic_id, user_id=user_id, request_id=request_id, settings=settings)
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def current_scope() -> Scope | None:
    """The active ``clinic_scope()``, or None outside one."""
    return _current.get()


def current_clinic_id() -> uuid.UUID:
    """The validated clinic of the active ``clinic_scope()``, for the application's own ``clinic_id = %s`` filter.

    On Citus that filter is what sends a query to one clinic's shard (the
    tenant policy alone keeps it safe but asks every shard; docs/citus.md).
    Raises ``NoClinicScope`` outside a scope, before anything is sent.

    Example::

        with clinicdb.clinic_scope(clinic_id), db.read() as cur:
            cur.execute("select * from patients where clinic_id = %s and id = %s",
                        (clinicdb.current_clinic_id(), patient_id))
    """
    active = _current.get()
    if active is None:
        raise NoClinicScope(
            "no clinic for this filter: run inside `with clinicdb.clinic_scope(clinic_id): ...`,"
            " or pass the clinic you gave db.read()/db.write()"
        )
    return active.clinic_id


@lru_cache(maxsize=64)
def settings_select(extra: int, *, timeouts: bool = False, local: bool = True, dollar: bool = False) -> str:
    """``select set_config('app.clinic_id', %s, true), ...`` for a scope with ``extra`` extra settings.

    Every value is a parameter (``$n`` with ``dollar``, for the driver's prepared
    opening; else ``%s``, for psycopg); extra settings pass name and value.
    ``timeouts`` adds the driver's two per-transaction timeouts; ``local=False``
    sets them for the session (``clinicdb psql``).
    """
    names = [*SCOPE_SETTINGS, *(TIMEOUT_SETTINGS if timeouts else ())]
    count = itertools.count(1)

    def arg() -> str:
        return f"${next(count)}" if dollar else "%s"

    flag = "true" if local else "false"
    calls = [f"set_config('{name}', {arg()}, {flag})" for name in names]
    calls += [f"set_config({arg()}, {arg()}, {flag})" for _ in range(extra)]
    return "select " + ", ".join(calls)


def scope_values(scope: Scope) -> list[str]:
    """The parameters of ``settings_select(len(scope.settings))``, without the timeouts."""
    values = [str(scope.clinic_id), scope.user_id or "", scope.request_id or ""]
    for name, value in scope.settings.items():
        values += [name, value]
    return values


def scope_sql(scope: Scope, *, local: bool = True) -> tuple[str, list[str]]:
    """The statement and parameters that put ``scope`` in force: ``conn.execute(*scope_sql(scope))``, sync or async."""
    return settings_select(len(scope.settings), local=local), scope_values(scope)


def scope_script(scope: Scope, *, local: bool = True) -> str:
    """``scope_sql`` with its values inlined as quoted literals, for a psql script (psql 15 cannot bind parameters)."""
    query, params = scope_sql(scope, local=local)
    return sql.SQL(query.replace("%s", "{}")).format(*map(sql.Literal, params)).as_string(None)


def set_scope(
    conn: psycopg.Connection[Any],
    clinic_id: object,
    *,
    user_id: object = None,
    request_id: object = None,
    settings: Mapping[str, str] | None = None,
) -> Scope:
    """Set the clinic (user, request, extra settings) for the current transaction of a psycopg connection of yours.

    For code outside ``ClinicDB`` (scripts, operators' tools). Validated like
    ``db.write()``; the values travel as bind parameters. On an async
    connection: ``await conn.execute(*scope_sql(make_scope(clinic_id, ...)))``.
    """
    scope = make_scope(clinic_id, user_id=user_id, request_id=request_id, settings=settings)
    conn.execute(*scope_sql(scope))
    return scope
