"""Refusing logins that row level security would not apply to.

A superuser, or a login that is (or can SET ROLE to) a role with BYPASSRLS,
sees every clinic's rows whatever ``app.clinic_id`` says. The driver checks
each new connection and refuses such a login with ``UnsafeLogin``, unless the
application passed the loudly named ``unsafe_allow_rls_bypass_login=True``.
"""

from __future__ import annotations

import logging

from clinicdb.errors import UnsafeLogin

logger = logging.getLogger("clinicdb.driver")

# pg_has_role(..., 'MEMBER') includes roles reachable by SET ROLE; a superuser is a member of every role.
BYPASS_SQL = (
    "select session_user::text, r.rolname::text, r.rolsuper from pg_roles r"
    " where (r.rolsuper or r.rolbypassrls) and pg_has_role(session_user, r.oid, 'MEMBER')"
    " order by r.rolname = session_user desc limit 1"
)


def judge(row: tuple[str, str, bool] | None, *, server: str, allow: bool) -> None:
    """Raise ``UnsafeLogin`` (or warn, when allowed) for a row of ``BYPASS_SQL``."""
    if row is None:
        return
    login, role, is_super = row
    what = "is a superuser" if is_super and role == login else "can bypass row level security"
    via = "" if role == login else f" (through role {role!r})"
    message = (
        f"login {login!r} on {server} {what}{via}, so tenant isolation would not apply to it;"
        " connect as a login that is a member of clinicdb_app (never superuser, never BYPASSRLS)"
    )
    if not allow:
        raise UnsafeLogin(message)
    logger.warning("clinicdb: unsafe_allow_rls_bypass_login is set: %s", message)
