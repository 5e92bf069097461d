"""Resilience against the emulator with injected faults and latency: stale-on-error, revocation, breaker,
refresh-ahead, rotation hooks, version pins, per-secret TTL and expiry, sync and async alike."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

import atlas_config
from atlas_config import (
    AtlasConfigError,
    AtlasSecrets,
    RotationEvent,
    SecretAccessDeniedError,
    SecretFetchError,
    SecretNotFoundError,
    SecretOptions,
    add_rotation_handler,
    aget_secret,
    clear_secret_cache,
    get_secret,
    get_secret_cache_stats,
)
from atlas_config._breaker import CircuitOpenError
from atlas_config._resolver import RESOLVER
from atlas_config.testing import FakeClock, Fault, KeyVaultEmulator
from conftest import Captured

KEY = "signing-secret"
OTHER = "model-provider-api-key"
TTL = 100.0  # fake-clock seconds
OUTAGE = [Fault(status=503)] * 3  # one resolution's worth: max_attempts is 3
STALE_WINDOW = 30.0  # after a stale serve, reads skip the vault this long: min(TTL, cooldown 30 s)
FAST = 0.15  # generous bound for "did not wait for a 0.3 s vault"

Read = Callable[..., str]


# -- helpers and fixtures ---------------------------------------------------------------------------


@pytest.fixture
def kv(seeded: KeyVaultEmulator, fast_retries: None, monkeypatch: pytest.MonkeyPatch) -> KeyVaultEmulator:
    """The seeded dev emulator, a 100 s TTL and millisecond retries; no env fallback is set."""
    monkeypatch.setenv("ATLAS_SECRETS_CACHE_TTL", str(TTL))
    return seeded


def gets(kv: KeyVaultEmulator, name: str = KEY) -> int:
    """Authenticated GETs of one secret that reached the emulator (challenge round-trips excluded)."""
    return len(kv.secret_requests(name))


def run(coro: Awaitable[Any]) -> Any:
    """Run ``coro`` in a fresh loop and close that loop's aio clients before it ends."""

    async def main() -> Any:
        try:
            return await coro
        finally:
            await atlas_config.aclose()

    return asyncio.run(main())


def sync_read(key: str, **kwargs: Any) -> str:
    return get_secret(key, **kwargs)


def async_read(key: str, **kwargs: Any) -> str:
    return str(run(aget_secret(key, **kwargs)))


@pytest.fixture(params=["sync", "async"])
def read(request: pytest.FixtureRequest) -> Read:
    """get_secret, or aget_secret in its own event loop: every behaviour must hold for both."""
    return sync_read if request.param == "sync" else async_read


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` in real time; fail if it stays false for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for a background refresh"
        time.sleep(0.01)


def refreshed() -> bool:
    """No background refresh is in flight."""
    return not RESOLVER._refreshing


def timed(fn: Callable[[], str]) -> tuple[str, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


# -- serve stale on outage ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outage",
    [OUTAGE, [Fault(status=429, retry_after=0)] * 3, [Fault(status=504)] * 3],
    ids=["503", "429", "504"],
)
def test_outage_after_warmup_serves_stale(
    kv: KeyVaultEmulator,
    clock: FakeClock,
    canaries: dict[str, str],
    captured: Captured,
    read: Read,
    outage: list[Fault],
) -> None:
    """After the TTL, a transient outage (503, dropped connection, 429) serves the cached value stale."""
    assert read(KEY) == canaries[KEY]
    clock.advance(TTL + 1)
    kv.inject(*outage)
    assert read(KEY) == canaries[KEY]
    assert gets(kv) == 4  # the warm-up, then all three attempts of the refresh
    stale = captured.named("Secret.Cache.Stale")
    assert len(stale) == 1
    assert (stale[0].secret_key, stale[0].source, stale[0].error_type) == (
        KEY,
        "keyvault",
        "SecretFetchError",
    )
    assert stale[0].version == captured.named("Secret.Fetch.Success")[0].version
    stats = get_secret_cache_stats()
    assert (stats.stale_served, stats.retries, stats.fetch_failures) == (1, 2, 1)


def test_dropped_connections_serve_stale(
    kv: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str], captured: Captured
) -> None:
    """Connections dropped without an answer are transient too: three attempts, then the stale value."""
    get_secret(KEY)
    clock.advance(TTL + 1)
    kv.inject(*[Fault(drop=True)] * 3)
    assert get_secret(KEY) == canaries[KEY]
    assert [r.status for r in kv.secret_requests(KEY)] == [200, None, None, None]
    assert len(captured.named("Secret.Cache.Stale")) == 1


@pytest.mark.xfail(
    strict=True,
    reason="aiohttp resends an idempotent request once when the connection drops "
    "(ClientSession._retry_connection), so an aio attempt can cost two GETs",
)
def test_async_dropped_connection_costs_one_get_per_attempt(kv: KeyVaultEmulator) -> None:
    """On the aio path, max_attempts=3 against dropped connections sends at most three GETs."""
    kv.inject(*[Fault(drop=True)] * 6)
    with pytest.raises(SecretFetchError):
        async_read(KEY)
    assert gets(kv) == 3


def test_vault_back_after_outage_is_read_again(
    kv: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str], read: Read
) -> None:
    """Once the outage ends, the first read after the stale window fetches the vault's current value."""
    read(KEY)
    clock.advance(TTL + 1)
    kv.inject(*OUTAGE)
    assert read(KEY) == canaries[KEY]
    kv.set_secret(KEY, "after-the-outage")
    clock.advance(STALE_WINDOW)
    assert read(KEY) == "after-the-outage"
    assert gets(kv) == 5


@pytest.mark.parametrize(("cooldown", "window"), [(30.0, 30.0), (500.0, TTL)], ids=["cooldown", "ttl"])
def test_stale_window_spares_the_vault(
    kv: KeyVaultEmulator,
    clock: FakeClock,
    canaries: dict[str, str],
    captured: Captured,
    monkeypatch: pytest.MonkeyPatch,
    read: Read,
    cooldown: float,
    window: float,
) -> None:
    """After a failed refresh, reads get the stale value at once for min(TTL, breaker cooldown), with
    no request to the vault (not even a token request), each an event but only the first a log line;
    then one read tries again."""
    monkeypatch.setenv("ATLAS_SECRETS_BREAKER_COOLDOWN", str(cooldown))
    read(KEY)
    clock.advance(TTL + 1)
    kv.inject(*OUTAGE, *OUTAGE)
    assert read(KEY) == canaries[KEY]
    before = len(kv.requests)
    for _ in range(10):
        clock.advance((window - 1) / 10)
        assert read(KEY) == canaries[KEY]
    assert len(kv.requests) == before
    stale = captured.named("Secret.Cache.Stale")
    assert len(stale) == 11 and {e.error_type for e in stale} == {"SecretFetchError"}
    assert get_secret_cache_stats().stale_served == 11
    assert sum("Secret.Cache.Stale" in line for line in captured.logs) == 1
    clock.advance(1)  # the window is over: this read waits for the vault (still failing)
    assert read(KEY) == canaries[KEY]
    assert gets(kv) == 7  # the warm-up, then two refreshes of three attempts
    clock.advance(window)
    kv.set_secret(KEY, "after-the-outage")
    assert read(KEY) == "after-the-outage"


def test_stale_window_never_serves_past_max_stale(
    kv: KeyVaultEmulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window does not stretch max stale: a value TTL + max stale old is not served from it."""
    monkeypatch.setenv("ATLAS_SECRETS_MAX_STALE", "10")
    get_secret(KEY)
    clock.advance(TTL + 5)
    kv.inject(*OUTAGE, *OUTAGE)
    get_secret(KEY)  # stale, opening a 30 s window
    clock.advance(6)  # 111 s old: past TTL + max stale, inside the window
    with pytest.raises(SecretFetchError, match="503"):
        get_secret(KEY)
    assert gets(kv) == 7


def test_clear_ends_the_stale_window(kv: KeyVaultEmulator, clock: FakeClock) -> None:
    """clear_secret_cache() forgets the stale value: the next read asks the vault."""
    get_secret(KEY)
    clock.advance(TTL + 1)
    kv.inject(*OUTAGE)
    get_secret(KEY)
    clear_secret_cache()
    kv.set_secret(KEY, "fresh")
    assert get_secret(KEY) == "fresh"


def test_stale_is_bounded_by_max_stale(
    kv: KeyVaultEmulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, read: Read
) -> None:
    """A value older than ttl + ATLAS_SECRETS_MAX_STALE is not served: the outage's error is raised."""
    monkeypatch.setenv("ATLAS_SECRETS_MAX_STALE", "50")
    read(KEY)
    clock.advance(TTL + 49)
    kv.inject(*OUTAGE)
    read(KEY)  # 149 s old: still within 100 + 50
    clock.advance(2)
    kv.inject(*OUTAGE)
    with pytest.raises(SecretFetchError, match="503") as info:
        read(KEY)
    assert info.value.transient


def test_default_max_stale_is_an_hour(kv: KeyVaultEmulator, clock: FakeClock, read: Read) -> None:
    """By default a value is served stale up to an hour past its TTL, not beyond."""
    read(KEY)
    clock.advance(TTL + 3599)
    kv.inject(*OUTAGE)
    read(KEY)
    clock.advance(2)
    kv.inject(*OUTAGE)
    with pytest.raises(SecretFetchError):
        read(KEY)


def test_cold_read_during_outage_raises(kv: KeyVaultEmulator, read: Read) -> None:
    """With nothing cached there is nothing to serve stale: the transient error is raised."""
    kv.inject(*OUTAGE)
    with pytest.raises(SecretFetchError, match="503"):
        read(KEY)
    assert get_secret_cache_stats().stale_served == 0


def test_typed_field_serves_stale(kv: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str]) -> None:
    """AtlasSecrets fields ride out an outage too, through get_secret_value and aget_secret_value."""
    settings = AtlasSecrets().prefetch()
    clock.advance(TTL + 1)
    kv.inject(*OUTAGE)
    assert settings.signing_secret.get_secret_value() == canaries[KEY]
    kv.inject(*OUTAGE)
    assert run(settings.model_provider_api_key.aget_secret_value()) == canaries[OTHER]
    assert get_secret_cache_stats().stale_served == 2


def test_prefetch_during_outage_serves_stale(
    kv: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """prefetch() and aprefetch() after the TTL succeed on stale values while the vault is down."""
    monkeypatch.setenv("ATLAS_SECRETS_BREAKER_THRESHOLD", "100")  # every resolution reaches the vault
    settings = AtlasSecrets().prefetch()
    clock.advance(TTL + 1)
    kv.inject(*[Fault(status=503)] * 9)
    settings.prefetch()
    clock.advance(TTL + 1)
    kv.inject(*[Fault(status=503)] * 9)
    run(settings.aprefetch())
    assert get_secret_cache_stats().stale_served == 6
    assert (
        settings.service_bus_connection_string.get_secret_value() == canaries["service-bus-connection-string"]
    )


# -- 403 / 404 drop the stale value ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("revoke", "error"),
    [
        (lambda kv: kv.delete_secret(KEY), SecretNotFoundError),
        (lambda kv: kv.set_secret(KEY, "disabled-value", enabled=False), SecretAccessDeniedError),
        (lambda kv: kv.inject(Fault(status=403, code="ForbiddenByRbac")), SecretAccessDeniedError),
        (lambda kv: kv.inject(Fault(status=404)), SecretNotFoundError),
    ],
    ids=["deleted", "disabled", "rbac-403", "404"],
)
def test_revocation_drops_the_stale_value(
    kv: KeyVaultEmulator,
    clock: FakeClock,
    captured: Captured,
    read: Read,
    revoke: Callable[[KeyVaultEmulator], object],
    error: type[AtlasConfigError],
) -> None:
    """A 403 or 404 after the TTL raises and drops the cached value; a later outage cannot resurrect it."""
    read(KEY)
    clock.advance(TTL + 1)
    revoke(kv)
    with pytest.raises(error):
        read(KEY)
    assert RESOLVER.entry(KEY) is None
    assert gets(kv) == 2  # not retried
    kv.inject(*OUTAGE)
    with pytest.raises(AtlasConfigError):
        read(KEY)
    assert captured.named("Secret.Cache.Stale") == []
    assert get_secret_cache_stats().stale_served == 0


def test_read_while_still_404_raises_and_vault_back_refetches(
    kv: KeyVaultEmulator, clock: FakeClock, read: Read
) -> None:
    """After a 404 every read asks the vault again: it raises while deleted, and gets the new value after."""
    read(KEY)
    clock.advance(TTL + 1)
    kv.delete_secret(KEY)
    for _ in range(2):
        with pytest.raises(SecretNotFoundError, match="404"):
            read(KEY)
    assert gets(kv) == 3
    kv.set_secret(KEY, "recreated")
    assert read(KEY) == "recreated"
    assert gets(kv) == 4


def test_revocation_seen_by_refresh_ahead_stops_serving(
    kv: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str]
) -> None:
    """A background refresh that meets a 404 drops the entry, so the next read raises instead of serving."""
    settings = AtlasSecrets()
    assert settings.signing_secret.get_secret_value() == canaries[KEY]
    clock.advance(TTL * 0.95)
    kv.delete_secret(KEY)
    assert settings.signing_secret.get_secret_value() == canaries[KEY]  # served at once, refresh behind
    wait_until(refreshed)
    assert RESOLVER.entry(KEY) is None
    with pytest.raises(SecretNotFoundError):
        settings.signing_secret.get_secret_value()


# -- circuit breaker ------------------------------------------------------------------------------


@pytest.fixture
def breaker_env(kv: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch) -> KeyVaultEmulator:
    """Open after 2 failed resolutions, for 30 fake seconds."""
    monkeypatch.setenv("ATLAS_SECRETS_BREAKER_THRESHOLD", "2")
    monkeypatch.setenv("ATLAS_SECRETS_BREAKER_COOLDOWN", "30")
    return kv


def trip(kv: KeyVaultEmulator, clock: FakeClock, read: Read) -> None:
    """Warm KEY, let its TTL pass, and fail two resolutions so the breaker opens (both served stale)."""
    read(KEY)
    clock.advance(TTL + 1)
    kv.inject(*OUTAGE, *OUTAGE)
    read(KEY)
    clock.advance(STALE_WINDOW)  # inside the window a read would not ask the vault at all
    read(KEY)


def slow_probe_due(kv: KeyVaultEmulator, clock: FakeClock) -> KeyVaultEmulator:
    """Trip the breaker, let its cooldown pass, and make the probe's answer take a real second."""
    trip(kv, clock, sync_read)
    clock.advance(30)
    kv.inject(Fault(delay=1.0))
    return kv


def test_breaker_stops_all_traffic_then_recovers(
    breaker_env: KeyVaultEmulator,
    clock: FakeClock,
    canaries: dict[str, str],
    captured: Captured,
    read: Read,
) -> None:
    """Open: no request reaches the vault; warm keys are served stale, cold ones fail fast; a probe closes."""
    kv = breaker_env
    trip(kv, clock, read)
    assert [e.detail for e in captured.named("Secret.Circuit.Open")] == [kv.vault_url]
    assert RESOLVER.breaker(kv.vault_url).is_open
    before = len(kv.requests)
    for _ in range(5):
        assert read(KEY) == canaries[KEY]
    with pytest.raises(CircuitOpenError, match="paused for 30s more") as info:
        read(OTHER)
    assert isinstance(info.value, SecretFetchError) and info.value.transient
    clock.advance(28)
    assert read(KEY) == canaries[KEY]
    assert len(kv.requests) == before  # not even a token request
    assert captured.named("Secret.Circuit.Close") == []

    clock.advance(2)  # the cooldown is over: the next read is the probe
    kv.set_secret(KEY, "after-recovery")
    assert read(KEY) == "after-recovery"
    assert gets(kv) == 8  # the warm-up, 2 x 3 failed attempts, then the probe
    assert [e.detail for e in captured.named("Secret.Circuit.Close")] == [kv.vault_url]
    assert not RESOLVER.breaker(kv.vault_url).is_open
    assert read(OTHER) == canaries[OTHER]


def test_failed_probe_reopens_for_another_cooldown(
    breaker_env: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str], captured: Captured, read: Read
) -> None:
    """A failed probe is a single attempt; the breaker stays open for a new cooldown, then probes again."""
    kv = breaker_env
    trip(kv, clock, read)
    clock.advance(30)
    kv.inject(*OUTAGE)
    before = gets(kv)
    assert read(KEY) == canaries[KEY]
    assert gets(kv) == before + 1  # the probe had one attempt
    kv.clear_faults()
    clock.advance(29)
    assert read(KEY) == canaries[KEY]
    assert gets(kv) == before + 1
    clock.advance(1)
    assert read(KEY) == canaries[KEY]
    assert gets(kv) == before + 2
    assert len(captured.named("Secret.Circuit.Open")) == 1
    assert len(captured.named("Secret.Circuit.Close")) == 1


def test_breaker_counts_consecutive_failures_only(breaker_env: KeyVaultEmulator, read: Read) -> None:
    """A success between failures resets the count; a 404 is an answer, not a failure."""
    kv = breaker_env
    kv.inject(*OUTAGE)
    with pytest.raises(SecretFetchError):
        read(KEY)
    read(OTHER)
    kv.inject(*OUTAGE)
    with pytest.raises(SecretFetchError):
        read(KEY)
    kv.delete_secret("service-bus-connection-string")
    with pytest.raises(SecretNotFoundError):
        read("service-bus-connection-string")
    kv.inject(*OUTAGE)
    with pytest.raises(SecretFetchError):
        read(KEY)
    assert not RESOLVER.breaker(kv.vault_url).is_open
    kv.inject(*OUTAGE)
    with pytest.raises(SecretFetchError):
        read(KEY)
    assert RESOLVER.breaker(kv.vault_url).is_open


def test_default_threshold_is_five(kv: KeyVaultEmulator, captured: Captured) -> None:
    """Without settings, the fifth consecutive failed resolution opens the breaker."""
    for _ in range(5):
        assert not RESOLVER._breakers.get(kv.vault_url, None) or not RESOLVER.breaker(kv.vault_url).is_open
        kv.inject(*OUTAGE)
        with pytest.raises(SecretFetchError):
            get_secret(KEY)
    assert RESOLVER.breaker(kv.vault_url).is_open
    assert len(captured.named("Secret.Circuit.Open")) == 1


def test_only_one_probe_goes_through(
    breaker_env: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str]
) -> None:
    """While the probe is in flight, other reads are refused at once rather than sent."""
    kv = slow_probe_due(breaker_env, clock)
    probe_result: list[str] = []
    probe = threading.Thread(target=lambda: probe_result.append(get_secret(KEY)))
    probe.start()
    wait_until(lambda: RESOLVER.breaker(kv.vault_url)._probing)
    with pytest.raises(CircuitOpenError, match="paused while one probe request checks it"):
        get_secret(OTHER)
    probe.join(timeout=20)
    assert probe_result == [canaries[KEY]]
    assert gets(kv, OTHER) == 0
    assert get_secret(OTHER) == canaries[OTHER]


def test_cancelled_async_probe_does_not_wedge_the_breaker(
    breaker_env: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str]
) -> None:
    """A probe cancelled mid-request (a request timeout in an async app) lets a later read probe again."""
    kv = slow_probe_due(breaker_env, clock)

    async def cancel_the_probe() -> None:
        task = asyncio.create_task(aget_secret(OTHER))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancel_the_probe())
    assert get_secret(OTHER) == canaries[OTHER]
    assert not RESOLVER.breaker(kv.vault_url).is_open


# -- refresh-ahead ---------------------------------------------------------------------------------


def test_warm_read_past_refresh_point_does_not_wait_for_a_slow_vault(
    kv: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str]
) -> None:
    """With 300 ms vault latency, a read past the refresh point returns at once; the refresh lands behind."""
    kv.latency = 0.3
    settings = AtlasSecrets()
    assert get_secret(KEY) == canaries[KEY]
    clock.advance(TTL * 0.95)
    kv.set_secret(KEY, "rotated-behind")
    value, took = timed(lambda: get_secret(KEY))
    assert value == canaries[KEY]
    assert took < FAST
    value, took = timed(settings.signing_secret.get_secret_value)
    assert value == canaries[KEY] and took < FAST
    wait_until(refreshed)
    assert gets(kv) == 2
    value, took = timed(lambda: get_secret(KEY))
    assert value == "rotated-behind" and took < FAST


def test_async_warm_read_past_refresh_point_does_not_wait(
    kv: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str]
) -> None:
    """aget_secret and aget_secret_value return at once past the refresh point; a task refreshes behind."""
    kv.latency = 0.3
    settings = AtlasSecrets()

    async def main() -> list[tuple[str, float]]:
        await aget_secret(KEY)
        clock.advance(TTL * 0.95)
        kv.set_secret(KEY, "rotated-behind")
        results = []
        for reader in (lambda: aget_secret(KEY), settings.signing_secret.aget_secret_value):
            started = time.perf_counter()
            value = await reader()
            results.append((value, time.perf_counter() - started))
        while not refreshed():
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        results.append((await aget_secret(KEY), time.perf_counter() - started))
        return results

    results = run(main())
    assert [value for value, _ in results] == [canaries[KEY], canaries[KEY], "rotated-behind"]
    assert all(took < FAST for _, took in results)
    assert gets(kv) == 2


def test_one_background_refresh_per_key(kv: KeyVaultEmulator, clock: FakeClock) -> None:
    """Many threads reading past the refresh point start exactly one refresh of that key."""
    kv.latency = 0.2
    settings = AtlasSecrets()
    settings.signing_secret.get_secret_value()
    clock.advance(TTL * 0.95)
    barrier = threading.Barrier(16)

    def read() -> None:
        barrier.wait()
        for _ in range(10):
            settings.signing_secret.get_secret_value()

    threads = [threading.Thread(target=read) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    wait_until(refreshed)
    assert gets(kv) == 2


def test_refresh_point_is_jittered_between_70_and_90_percent(kv: KeyVaultEmulator, clock: FakeClock) -> None:
    """Each entry draws its refresh point in [0.7, 0.9] of the TTL: none before 70%, always after 90%."""
    points = set()
    for _ in range(8):
        clear_secret_cache()
        get_secret(KEY)
        entry = RESOLVER.entry(KEY)
        assert entry is not None
        points.add(entry.refresh_at)
    assert all(0.7 <= p <= 0.9 for p in points) and len(points) > 1
    clock.advance(TTL * 0.69)
    get_secret(KEY)
    wait_until(refreshed)
    assert gets(kv) == 8
    clock.advance(TTL * 0.22)
    get_secret(KEY)
    wait_until(refreshed)
    assert gets(kv) == 9


def test_after_the_ttl_a_read_waits_for_the_current_value(
    kv: KeyVaultEmulator, clock: FakeClock, read: Read
) -> None:
    """Past the TTL a healthy vault is read synchronously: no value older than the TTL is returned."""
    read(KEY)
    kv.set_secret(KEY, "rotated")
    clock.advance(TTL)
    assert read(KEY) == "rotated"


def test_failed_refresh_ahead_keeps_serving_until_the_ttl(
    kv: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str], captured: Captured
) -> None:
    """A background refresh that fails transiently is not retried on every read before the TTL."""
    settings = AtlasSecrets()
    settings.signing_secret.get_secret_value()
    clock.advance(TTL * 0.95)
    kv.inject(*OUTAGE)
    settings.signing_secret.get_secret_value()
    wait_until(refreshed)
    assert gets(kv) == 4
    for _ in range(5):
        assert settings.signing_secret.get_secret_value() == canaries[KEY]
    wait_until(refreshed)
    assert gets(kv) == 4
    # Nothing was served stale: the value is within its TTL.
    assert captured.named("Secret.Cache.Stale") == [] and get_secret_cache_stats().stale_served == 0
    assert len(captured.named("Secret.Fetch.Failure")) == 1
    clock.advance(TTL * 0.1)  # past the TTL now: read synchronously
    kv.set_secret(KEY, "after-the-ttl")
    assert settings.signing_secret.get_secret_value() == "after-the-ttl"
    assert gets(kv) == 5


# -- rotation hooks -------------------------------------------------------------------------------


def test_rotation_handler_fires_once_with_versions(
    kv: KeyVaultEmulator, clock: FakeClock, captured: Captured, read: Read
) -> None:
    """A refresh that returns a new version emits Rotation.Detected and calls handlers once, versions only."""
    read(KEY)
    first = captured.named("Secret.Fetch.Success")[0].version
    new = kv.set_secret(KEY, "rotated-value")
    clock.advance(TTL + 1)
    assert read(KEY) == "rotated-value"
    clock.advance(TTL + 1)
    read(KEY)  # same version again: no rotation
    assert captured.rotations == [RotationEvent(KEY, first, new, "keyvault")]
    detected = captured.named("Secret.Rotation.Detected")
    assert len(detected) == 1 and detected[0].version == new and detected[0].secret_key == KEY


def test_rotation_through_refresh_ahead_fires_once(
    kv: KeyVaultEmulator, clock: FakeClock, captured: Captured
) -> None:
    """A rotation picked up by the background refresh calls the handler once, however many reads ran."""
    kv.latency = 0.1
    settings = AtlasSecrets()
    settings.signing_secret.get_secret_value()
    new = kv.set_secret(KEY, "rotated-value")
    clock.advance(TTL * 0.95)
    for _ in range(20):
        settings.signing_secret.get_secret_value()
    wait_until(refreshed)
    assert settings.signing_secret.get_secret_value() == "rotated-value"
    assert [r.new_version for r in captured.rotations] == [new]


def test_every_rotation_handler_is_called_and_a_failing_one_is_contained(
    kv: KeyVaultEmulator, clock: FakeClock
) -> None:
    """Two handlers both see the rotation even if the first raises; the read still returns."""
    calls: list[str] = []

    def broken(event: RotationEvent) -> None:
        calls.append("broken")
        raise RuntimeError("handler bug")

    add_rotation_handler(broken)
    add_rotation_handler(lambda event: calls.append(f"ok:{event.new_version}"))
    get_secret(KEY)
    new = kv.set_secret(KEY, "rotated-value")
    clock.advance(TTL + 1)
    assert get_secret(KEY) == "rotated-value"
    assert calls == ["broken", f"ok:{new}"]


# -- version pinning ------------------------------------------------------------------------------


@pytest.fixture
def versions(kv: KeyVaultEmulator) -> tuple[str, str]:
    """KEY with an old version ('pinned-value') and a newer latest ('latest-value')."""
    old = kv.set_secret(KEY, "pinned-value")
    new = kv.set_secret(KEY, "latest-value")
    kv.clear_requests()
    return old, new


def test_pinned_version_is_never_refetched(
    kv: KeyVaultEmulator, clock: FakeClock, versions: tuple[str, str], read: Read
) -> None:
    """get_secret(version=) reads that version once and serves it forever, through outages and rotations."""
    old, _ = versions
    assert read(KEY, version=old) == "pinned-value"
    assert read(KEY) == "latest-value"
    assert [r.version for r in kv.secret_requests(KEY)] == [old, None]
    entry = RESOLVER.entry(KEY, old)
    assert entry is not None and entry.pinned
    kv.set_secret(KEY, "even-newer")
    kv.inject(*OUTAGE)
    for _ in range(3):
        clock.advance(10 * 24 * 3600)
        assert read(KEY, version=old.upper()) == "pinned-value"
    assert len(kv.secret_requests(KEY)) == 2


def test_pinned_version_by_secret_options(
    kv: KeyVaultEmulator, clock: FakeClock, versions: tuple[str, str]
) -> None:
    """SecretOptions(version=) pins a typed field; its siblings keep reading the latest version."""
    old, _ = versions

    class Settings(AtlasSecrets):
        atlas_secret_options: ClassVar = {KEY: SecretOptions(version=old)}

    settings = Settings()
    assert settings.signing_secret.get_secret_value() == "pinned-value"
    clock.advance(10 * TTL)
    assert settings.signing_secret.get_secret_value() == "pinned-value"
    assert run(settings.signing_secret.aget_secret_value()) == "pinned-value"
    assert [r.version for r in kv.secret_requests(KEY)] == [old]
    assert get_secret(KEY) == "latest-value"


def test_pinned_version_by_env(
    kv: KeyVaultEmulator, clock: FakeClock, versions: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATLAS_SECRETS_VERSION__SIGNING_SECRET pins both the typed field and get_secret."""
    old, _ = versions
    monkeypatch.setenv("ATLAS_SECRETS_VERSION__SIGNING_SECRET", old)
    settings = AtlasSecrets()
    assert settings.signing_secret.get_secret_value() == "pinned-value"
    assert get_secret(KEY) == "pinned-value"
    clock.advance(10 * TTL)
    assert async_read(KEY) == "pinned-value"
    assert [r.version for r in kv.secret_requests(KEY)] == [old]


def test_unknown_pinned_version_is_not_found(kv: KeyVaultEmulator, read: Read) -> None:
    """A pin to a version the vault does not have raises SecretNotFoundError naming the key."""
    with pytest.raises(SecretNotFoundError, match=KEY):
        read(KEY, version="0" * 32)


# -- per-secret TTL -------------------------------------------------------------------------------


def test_per_secret_ttl_from_env(
    kv: KeyVaultEmulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATLAS_SECRETS_CACHE_TTL__SIGNING_SECRET shortens that key's TTL only."""
    monkeypatch.setenv("ATLAS_SECRETS_CACHE_TTL__SIGNING_SECRET", "10")
    settings = AtlasSecrets().prefetch()
    clock.advance(11)
    settings.prefetch()
    get_secret(KEY)
    get_secret(OTHER)
    wait_until(refreshed)
    assert (gets(kv), gets(kv, OTHER)) == (2, 1)


def test_per_secret_ttl_from_secret_options(kv: KeyVaultEmulator, clock: FakeClock) -> None:
    """SecretOptions(ttl=) sets one field's TTL; get_secret(cache_ttl=) does the same per call."""

    class Settings(AtlasSecrets):
        atlas_secret_options: ClassVar = {OTHER: SecretOptions(ttl=timedelta(seconds=10))}

    settings = Settings().prefetch()
    clock.advance(11)
    settings.prefetch()
    wait_until(refreshed)
    assert (gets(kv), gets(kv, OTHER)) == (1, 2)
    get_secret(KEY, cache_ttl=10)
    assert gets(kv) == 2


# -- expiry awareness -----------------------------------------------------------------------------


def expiring(kv: KeyVaultEmulator, seconds: float, value: str = "expiring-value") -> str:
    return kv.set_secret(KEY, value, expires_on=datetime.now(UTC) + timedelta(seconds=seconds))


def test_never_cached_past_exp(kv: KeyVaultEmulator, clock: FakeClock, read: Read) -> None:
    """A secret whose exp comes before the TTL is refetched at exp, not at the TTL."""
    expiring(kv, 50)
    read(KEY)
    clock.advance(30)
    read(KEY)
    assert gets(kv) == 1
    clock.advance(40)  # past exp (with room for real seconds spent so far), before the TTL
    kv.set_secret(KEY, "renewed")
    assert read(KEY) == "renewed"
    assert gets(kv) == 2


def test_expired_value_is_never_served_stale(kv: KeyVaultEmulator, clock: FakeClock, read: Read) -> None:
    """An outage after exp raises: a value past its Key Vault expiry is not served stale."""
    expiring(kv, 50)
    read(KEY)
    clock.advance(70)
    kv.inject(*OUTAGE)
    with pytest.raises(SecretFetchError):
        read(KEY)


def test_expiry_warning_within_the_window(
    kv: KeyVaultEmulator, clock: FakeClock, captured: Captured, read: Read
) -> None:
    """Secret.Expiry.Warning is emitted for a secret expiring within 7 days, not for one 30 days out."""
    version = expiring(kv, 6 * 24 * 3600)
    kv.set_secret(OTHER, "far-future", expires_on=datetime.now(UTC) + timedelta(days=30))
    read(KEY)
    read(OTHER)
    warnings = captured.named("Secret.Expiry.Warning")
    assert [(w.secret_key, w.version) for w in warnings] == [(KEY, version)]
    detail = warnings[0].detail or ""
    assert re.fullmatch(r"expires in \d+s", detail)
    assert abs(int(detail[len("expires in ") : -1]) - 6 * 24 * 3600) < 60


def test_expiry_warning_window_from_env(
    kv: KeyVaultEmulator, captured: Captured, monkeypatch: pytest.MonkeyPatch, read: Read
) -> None:
    """ATLAS_SECRETS_EXPIRY_WARNING sets the window in seconds."""
    monkeypatch.setenv("ATLAS_SECRETS_EXPIRY_WARNING", "60")
    expiring(kv, 120)
    kv.set_secret(OTHER, "soon", expires_on=datetime.now(UTC) + timedelta(seconds=50))
    read(KEY)
    read(OTHER)
    assert [w.secret_key for w in captured.named("Secret.Expiry.Warning")] == [OTHER]


# -- no value leaks -------------------------------------------------------------------------------


def test_no_value_in_events_logs_or_errors(
    breaker_env: KeyVaultEmulator, clock: FakeClock, canaries: dict[str, str], captured: Captured
) -> None:
    """Stale, revocation, breaker, rotation, pin and expiry paths never put a value in what they say."""
    kv = breaker_env
    planted = dict(canaries)
    messages: list[str] = []

    def attempt(fn: Callable[[], object]) -> None:
        try:
            fn()
        except AtlasConfigError as exc:
            messages.append(f"{exc!r} {exc} {exc.__cause__!r}")

    settings = AtlasSecrets().prefetch()
    planted["rotated"] = "canary-rotated-0d5e"
    pinned = kv.set_secret(OTHER, planted["rotated"], expires_on=datetime.now(UTC) + timedelta(days=1))
    attempt(lambda: get_secret(OTHER, version=pinned))
    clock.advance(TTL + 1)
    attempt(settings.model_provider_api_key.get_secret_value)  # rotation
    kv.inject(*OUTAGE, *OUTAGE)
    attempt(settings.signing_secret.get_secret_value)  # stale
    attempt(lambda: async_read(KEY))  # stale, breaker opens
    attempt(lambda: get_secret("service-bus-connection-string"))  # stale, breaker open
    clock.advance(TTL + 30)
    kv.delete_secret("service-bus-connection-string")
    attempt(lambda: get_secret("service-bus-connection-string"))  # probe: 404, dropped
    kv.set_secret(KEY, planted[KEY], enabled=False)
    attempt(settings.signing_secret.get_secret_value)  # 403, dropped
    said = [
        *messages,
        *captured.logs,
        *map(repr, captured.events),
        *map(repr, captured.rotations),
        repr(RESOLVER.cache),
        repr(get_secret_cache_stats()),
    ]
    assert len(messages) == 2
    assert {e.name for e in captured.events} >= {
        "Secret.Cache.Stale",
        "Secret.Circuit.Open",
        "Secret.Circuit.Close",
        "Secret.Rotation.Detected",
        "Secret.Expiry.Warning",
    }
    for value in planted.values():
        assert not any(value in line for line in said)
