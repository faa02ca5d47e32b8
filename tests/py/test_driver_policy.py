"""The driver's shared policy code on its own: routing, breakers, tokens, retries, settings (no server needed)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from clinicdb import (
    CausalToken,
    ClinicDB,
    CommitOutcomeUnknown,
    DriverConfig,
    NoClinicScope,
    NotSent,
    Options,
    PoolExhausted,
    clinic_scope,
)
from clinicdb._config import ENV_NAMES
from clinicdb._retry import delay, retryable
from clinicdb._routing import CAUSAL, NO_REPLICAS, UNAVAILABLE, Router
from clinicdb._scope import _plain_scope, make_scope, resolve
from clinicdb._url import seeks_standby, split_urls
from clinicdb.settings import SETTINGS


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _router(clock: Clock, n: int = 2) -> Router:
    router = Router(
        [f"r{i}" for i in range(n)], max_lag=1000, check_interval=0.5, backoff=1.0, max_backoff=8.0, clock=clock
    )
    router.observe_primary(10_000)
    for i in range(n):
        router.observe_replay(i, 10_000, measured=True)
    return router


def test_fit_replicas_take_reads_round_robin() -> None:
    """Healthy replicas within the lag limit are used in turn."""
    router = _router(Clock(), 3)
    assert [router.pick(None).replica for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_lagging_replica_gets_no_reads_and_all_lagging_means_primary() -> None:
    """A replica over max_lag is skipped; when none is fit the primary takes the read and says why."""
    router = _router(Clock())
    router.observe_primary(12_500)
    router.observe_replay(0, 12_000, measured=True)  # 500 behind: fit
    router.observe_replay(1, 10_000, measured=True)  # 2500 behind: not fit
    assert {router.pick(None).replica for _ in range(4)} == {0}
    router.observe_primary(20_000)
    router.observe_replay(0, 12_000, measured=True)
    assert router.pick(None) == router.pick(None)
    assert router.pick(None).reason == UNAVAILABLE


def test_stale_measurements_do_not_count_as_fit() -> None:
    """A lag measured long ago (the check is stuck) does not keep a replica in rotation."""
    clock = Clock()
    router = _router(clock)
    clock.now += 60
    assert router.pick(None).replica is None


def test_token_reads_need_a_replica_that_replayed_it() -> None:
    """A read with a token goes only to a replica whose replay position is at or past it."""
    router = _router(Clock())
    router.observe_replay(1, 10_500)
    assert {router.pick(CausalToken(10_400)).replica for _ in range(4)} == {1}
    decision = router.pick(CausalToken(11_000))
    assert decision.replica is None and decision.reason == CAUSAL


def test_breaker_opens_backs_off_and_closes() -> None:
    """A failure takes a replica out for a doubling back-off; only a successful probe brings it back."""
    clock = Clock()
    router = _router(clock, 1)
    assert router.record_failure(0, "boom") is True
    assert router.record_failure(0, "boom again") is False  # already open: not a new trip
    assert router.pick(None).reason == UNAVAILABLE
    assert not router.due_for_check(0)
    clock.now += 2.5 * 1.2  # second failure: 2 s back-off, at most +20% jitter
    assert router.due_for_check(0)
    assert router.pick(None).replica is None  # back-off over is not healthy yet
    router.record_recovery(0)
    router.observe_replay(0, 10_000, measured=True)
    assert router.pick(None).replica == 0


def test_no_replicas_is_not_a_failover() -> None:
    """Without replicas every read goes to the primary, for a reason that is not counted as failover."""
    assert Router([], max_lag=1, check_interval=1, backoff=1, max_backoff=1).pick(None).reason == NO_REPLICAS


def test_tokens_round_trip_and_order() -> None:
    """Tokens print as PostgreSQL LSNs, parse back and compare by position."""
    token = CausalToken.parse("16/B374D848")
    assert str(token) == "16/B374D848" and CausalToken.parse(str(token)) == token
    assert CausalToken.parse("0/10") < CausalToken.parse("1/0")
    with pytest.raises(ValueError):
        CausalToken.parse("nonsense")


def test_retry_covers_serialization_and_deadlock_and_read_connection_loss_only() -> None:
    """40001/40P01 retry both kinds; a lost connection retries reads only; unknown commits never."""
    assert retryable(psycopg.errors.SerializationFailure(), read=False)
    assert retryable(psycopg.errors.DeadlockDetected(), read=False)
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    assert retryable(lost, read=True) and not retryable(lost, read=False)
    assert not retryable(psycopg.errors.QueryCanceled(), read=True)
    assert not retryable(CommitOutcomeUnknown("x"), read=False)
    assert not retryable(psycopg.errors.UniqueViolation(), read=False)


def test_retry_covers_transactions_nothing_of_which_was_sent() -> None:
    """NotSent, and PoolExhausted because the server is down, retry writes too; a pool merely busy does not."""
    assert retryable(NotSent("the connection failed before the transaction started"), read=False)
    down, busy = PoolExhausted("no connection: the server is down"), PoolExhausted("every connection is busy")
    down.server_down = True
    assert retryable(down, read=False) and not retryable(busy, read=False)


def test_retry_delay_is_jittered_capped_and_growing() -> None:
    """Back-off delays stay within [0, min(cap, base * 2**(n-1))]."""
    for attempt in range(1, 12):
        for _ in range(50):
            assert 0 <= delay(attempt, base=0.01, cap=0.5) <= min(0.5, 0.01 * 2 ** (attempt - 1))


def test_scope_validation_names_the_argument() -> None:
    """Malformed ids and texts are ValueErrors naming the argument; settings values never appear in repr."""
    with pytest.raises(ValueError, match="clinic_id"):
        make_scope("x")
    with pytest.raises(ValueError, match="user_id"):
        make_scope(uuid.uuid4(), user_id=7)
    with pytest.raises(ValueError, match="request_id"):
        make_scope(uuid.uuid4(), request_id="a\x00b")
    scope = make_scope(uuid.uuid4(), settings={"clinicdb.master_key": "topsecret"})
    assert "topsecret" not in repr(scope) and "clinicdb.master_key" in repr(scope)


def test_resolve_fails_closed_and_scopes_nest() -> None:
    """No clinic anywhere raises NoClinicScope; the innermost clinic_scope wins and ends with its block."""
    a, b = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(NoClinicScope):
        resolve(None)
    with clinic_scope(a, user_id="u"):
        assert resolve(None).clinic_id == a
        with clinic_scope(b):
            assert resolve(None).clinic_id == b
        assert resolve(None, request_id="r").user_id == "u"
    with pytest.raises(NoClinicScope):
        resolve(None)


def test_resolve_validates_every_call_and_never_caches_extra_settings() -> None:
    """The per-(clinic, user, request) Scope cache holds validated scopes only, and nothing that carries settings.

    A malformed argument is rejected on every call (exceptions are not cached); extra settings (keys, for
    the encryption work) are built per transaction and kept by neither the scope nor the opening cache.
    """
    clinic = uuid.uuid4()
    for _ in range(2):
        with pytest.raises(ValueError, match="clinic_id"):
            resolve("not-a-uuid")
        with pytest.raises(ValueError, match="user_id"):
            resolve(clinic, user_id="a\x00b")
    assert resolve(clinic, user_id="u") is resolve(clinic, user_id="u")
    assert resolve(str(clinic), user_id="u") == resolve(clinic, user_id="u")
    db = ClinicDB("postgresql://nobody@127.0.0.1:1/none", open=False)
    db._opening_for(resolve(clinic), True, None)
    scopes = _plain_scope.cache_info().currsize
    openings = db._cached_opening.cache_info().currsize
    keyed = resolve(clinic, settings={"clinicdb.master_key": "topsecret"})
    assert keyed is not resolve(clinic, settings={"clinicdb.master_key": "topsecret"})
    opening = db._opening_for(keyed, True, None)
    assert b"topsecret" in opening.params and "topsecret" not in repr(opening)
    assert _plain_scope.cache_info().currsize == scopes
    assert db._cached_opening.cache_info().currsize == openings


def test_every_driver_setting_is_documented_with_its_default() -> None:
    """Each CLINICDB_* variable the driver reads is in settings.SETTINGS with the same default."""
    documented = {s.name: s.default for s in SETTINGS}
    for var, default in ENV_NAMES.values():
        assert documented.get(var) == default, var


def test_replica_urls_are_whitespace_separated_and_multi_host_urls_stay_whole() -> None:
    """CLINICDB_REPLICA_URLS splits on whitespace; a comma only between whole URLs, never inside a multi-host URL."""
    multi = "postgresql://app@db1.example:5432,db2.example:5432/clinicdb?target_session_attrs=standby"
    assert split_urls(f"  {multi}\n postgres://app@r3/clinicdb ") == [multi, "postgres://app@r3/clinicdb"]
    assert split_urls("postgresql://a/db,postgresql://b/db") == ["postgresql://a/db", "postgresql://b/db"]
    assert split_urls("postgresql://a:1,b:2/db") == ["postgresql://a:1,b:2/db"]
    assert split_urls("") == []
    with pytest.raises(ValueError, match="CLINICDB_REPLICA_URLS"):
        split_urls("host=a port=5432")


def test_a_url_seeks_a_standby_only_when_its_target_session_attrs_say_so() -> None:
    """standby, prefer-standby and read-only ask libpq for a standby; no setting, any or read-write do not."""
    base = "postgresql://app@h1:5432,h2:5432/clinicdb"
    for attrs in ("standby", "prefer-standby", "read-only", "Standby"):
        assert seeks_standby(f"{base}?target_session_attrs={attrs}"), attrs
    for url in (base, f"{base}?target_session_attrs=read-write", f"{base}?target_session_attrs=any", "not a url"):
        assert not seeks_standby(url), url
    assert seeks_standby("host=h1 target_session_attrs=standby")


def test_replica_urls_from_the_environment_reach_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """ClinicDB.from_env() gives each whitespace-separated URL, multi-host ones whole, a replica pool of its own."""
    multi = "postgresql://app@127.0.0.1:1,127.0.0.1:2/none"
    monkeypatch.setenv("CLINICDB_DATABASE_URL", "postgresql://app@127.0.0.1:1/none")
    monkeypatch.setenv("CLINICDB_REPLICA_URLS", f"{multi} postgresql://app@127.0.0.1:3/none")
    db = ClinicDB.from_env(open=False)
    assert [r.url for r in db.replicas] == [multi, "postgresql://app@127.0.0.1:3/none"]


def test_options_object_and_keywords_are_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """options=Options(...) and keywords set the same fields; keywords override options; DriverConfig is Options."""
    monkeypatch.setenv("CLINICDB_POOL_MAX_SIZE", "7")
    url = "postgresql://nobody@127.0.0.1:1/none"
    assert DriverConfig is Options
    assert ClinicDB(url, open=False).options.max_size == 7  # the environment, when no options object is given
    assert ClinicDB(url, options=Options(max_size=3), open=False).options.max_size == 3
    assert ClinicDB(url, options=Options(max_size=3), min_size=2, open=False).options == Options(min_size=2, max_size=3)
    assert ClinicDB(url, max_size=4, open=False).options.max_size == 4
    with pytest.raises(TypeError, match="unknown"):
        ClinicDB(url, options=Options(), pool_size=3, open=False)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLINICDB_* variables fill DriverConfig; keywords override them; a bad value names the variable."""
    monkeypatch.setenv("CLINICDB_POOL_MAX_SIZE", "3")
    monkeypatch.setenv("CLINICDB_ACQUIRE_TIMEOUT_MS", "250")
    monkeypatch.setenv("CLINICDB_PREPARE_THRESHOLD", "none")
    config = DriverConfig.from_env(min_size=2)
    assert (config.max_size, config.acquire_timeout, config.prepare_threshold, config.min_size) == (3, 0.25, None, 2)
    monkeypatch.setenv("CLINICDB_RETRY_ATTEMPTS", "many")
    with pytest.raises(ValueError, match="CLINICDB_RETRY_ATTEMPTS"):
        DriverConfig.from_env()
    with pytest.raises(TypeError, match="unknown"):
        DriverConfig.from_env(pool_size=3)
