"""A Hypothesis state machine drives reads, clock steps, rotations, outages, revocations and cache clears
against the emulator. After every read it checks that the value served is one the vault held recently
enough, never a revoked or expired one, fetched in at most max_attempts GETs, and that nothing said
(events, log lines, errors) holds a value."""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from loguru import logger

import atlas_config
from atlas_config import AtlasConfigError, AtlasSecrets, TelemetryEvent, add_telemetry_handler, get_secret
from atlas_config._resolver import RESOLVER
from atlas_config.testing import FakeClock, Fault, KeyVaultEmulator, RequestRecord, reset

KEYS = ("signing-secret", "model-provider-api-key")
TTL = 100.0  # fake-clock seconds
MAX_STALE = 300.0
MAX_ATTEMPTS = 3
TRANSIENT = (Fault(status=503), Fault(drop=True), Fault(status=500), Fault(status=429))
_serial = itertools.count()


@dataclass
class Version:
    """One value the vault held for a key; times are fake-clock seconds."""

    value: str
    enabled: bool
    set_at: float
    expires_at: float | None = None
    superseded_at: float | None = None

    def current_within(self, now: float, window: float) -> bool:
        """Whether the vault served this value at some moment of the last ``window`` seconds."""
        return self.enabled and (self.superseded_at is None or self.superseded_at > now - window)


@dataclass(frozen=True)
class Outcome:
    """What one read did, as the events and the emulator's request log tell it."""

    value: str | None
    from_cache: bool  # a Cache.Hit, or a stale value after a failed refresh
    stale: bool
    gets: list[RequestRecord]


class SecretsMachine(RuleBasedStateMachine):
    """The vault, the fake clock and atlas-config's cache driven at random, against a model of the vault."""

    kv: ClassVar[KeyVaultEmulator]

    def __init__(self) -> None:
        super().__init__()
        reset()
        self.kv.clear_faults()
        self.kv.clear_requests()
        self.clock = FakeClock().__enter__()
        self.history: dict[str, list[Version]] = {key: [] for key in KEYS}
        self.deleted: set[str] = set()
        # history[key][: revoked[key]] were set before the vault answered 403/404 for that key.
        self.revoked: dict[str, int] = dict.fromkeys(KEYS, 0)
        self.events: list[TelemetryEvent] = []
        self.said: list[str] = []  # log lines and error messages
        add_telemetry_handler(self.events.append)
        logger.enable("atlas_config")
        self.sink = logger.add(lambda message: self.said.append(str(message)), level="DEBUG")
        self.settings = AtlasSecrets()
        self.seen_requests = 0

    def teardown(self) -> None:
        logger.remove(self.sink)
        logger.disable("atlas_config")
        self.clock.__exit__(None, None, None)
        reset()

    # -- the vault ---------------------------------------------------------------------------------

    def _supersede(self, key: str) -> None:
        for version in self.history[key]:
            if version.superseded_at is None:
                version.superseded_at = self.clock.now()

    def _set(self, key: str, *, enabled: bool = True, expires_in: float | None = None) -> None:
        self._supersede(key)
        value = f"canary-{key}-{next(_serial)}-{uuid.uuid4().hex}"
        now = self.clock.now()
        if expires_in is None:
            self.kv.set_secret(key, value, enabled=enabled)
            self.history[key].append(Version(value, enabled, now))
        else:
            expires_on = datetime.fromtimestamp(self.clock.wall() + expires_in, UTC)
            self.kv.set_secret(key, value, enabled=enabled, expires_on=expires_on)
            self.history[key].append(Version(value, enabled, now, now + expires_in))
        self.deleted.discard(key)

    @initialize()
    def seed(self) -> None:
        for key in KEYS:
            self._set(key)

    @rule(key=st.sampled_from(KEYS), expires_in=st.sampled_from([None, None, 50.0, 150.0, 1e6]))
    def rotate(self, key: str, expires_in: float | None) -> None:
        """A new enabled version, sometimes with an ``exp`` (within the warning window or not)."""
        self._set(key, expires_in=expires_in)

    @precondition(lambda self: len(self.deleted) < len(KEYS))
    @rule(data=st.data(), delete=st.booleans())
    def revoke(self, data: st.DataObject, delete: bool) -> None:
        """Delete the secret (404 until set again) or add a disabled latest version (403)."""
        key = data.draw(st.sampled_from([k for k in KEYS if k not in self.deleted]))
        if not delete:
            self._set(key, enabled=False)
            return
        self._supersede(key)
        self.kv.delete_secret(key)
        self.deleted.add(key)

    @rule(faults=st.lists(st.sampled_from(TRANSIENT), min_size=1, max_size=4))
    def outage(self, faults: list[Fault]) -> None:
        """The next few authenticated requests, whichever key they are for, fail transiently."""
        self.kv.inject(*faults)

    @rule(seconds=st.sampled_from([1.0, 20.0, 50.0, 75.0, 85.0, 95.0, 100.0, 150.0, 250.0, 450.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def clear(self) -> None:
        atlas_config.clear_secret_cache()

    # -- reads, and the checks on each -------------------------------------------------------------

    @rule(key=st.sampled_from(KEYS), typed=st.booleans())
    def read(self, key: str, typed: bool) -> None:
        self._check(key, self._read(key, typed))

    @rule(
        seconds=st.sampled_from([1.0, 20.0, 50.0, 85.0, 101.0, 150.0, 301.0]),
        key=st.sampled_from(KEYS),
        typed=st.booleans(),
    )
    def advance_and_read(self, seconds: float, key: str, typed: bool) -> None:
        self.clock.advance(seconds)
        self._check(key, self._read(key, typed))

    @rule(
        seconds=st.sampled_from([1.0, 85.0, 101.0, 250.0, 450.0]),
        key=st.sampled_from(KEYS),
        typed=st.booleans(),
    )
    def outage_then_read(self, seconds: float, key: str, typed: bool) -> None:
        """Time passes, the vault fails a whole resolution's attempts, and a read comes in."""
        self.clock.advance(seconds)
        self.kv.inject(*[Fault(status=503)] * MAX_ATTEMPTS)
        self._check(key, self._read(key, typed))

    def _read(self, key: str, typed: bool) -> Outcome:
        """Read through get_secret or the typed field; wait for any background refresh it started."""
        first_event = len(self.events)
        value: str | None = None
        try:
            if typed:
                value = getattr(self.settings, key.replace("-", "_")).get_secret_value()
            else:
                value = get_secret(key)
        except AtlasConfigError as exc:
            self.said.append(f"{exc!r} {exc} {exc.__cause__!r}")
        deadline = time.monotonic() + 20
        while RESOLVER._refreshing:
            assert time.monotonic() < deadline, "a background refresh never finished"
            time.sleep(0.002)
        log = self.kv.requests
        gets = [r for r in log[self.seen_requests :] if r.operation == "get" and r.authenticated]
        self.seen_requests = len(log)
        names = [e.name for e in self.events[first_event:] if e.secret_key == key]
        stale = "Secret.Cache.Stale" in names
        # A background refresh emits no Miss, and may emit before the reader's Hit: look for the Miss.
        from_cache = stale or "Secret.Cache.Miss" not in names
        return Outcome(value, from_cache, stale, gets)

    def _check(self, key: str, outcome: Outcome) -> None:
        assert all((r.secret_name or "").lower() == key for r in outcome.gets), (
            "one key's read fetched another"
        )
        # One read is one resolution: a miss fetches in the foreground, or a hit refreshes behind.
        assert len(outcome.gets) <= MAX_ATTEMPTS, f"{len(outcome.gets)} GETs for one resolution"
        if outcome.value is not None:
            self._check_value(key, outcome)
        # Learn revocations only now: a refresh behind a served read may have met the 403/404 after it.
        if any(r.status in (403, 404) for r in outcome.gets):
            self.revoked[key] = len(self.history[key])

    def _check_value(self, key: str, outcome: Outcome) -> None:
        versions = self.history[key]
        index = next((i for i, v in enumerate(versions) if v.value == outcome.value), None)
        assert index is not None, "served a value the vault never held for this key"
        assert index >= self.revoked[key], "served a value after the vault revoked it (403/404)"
        version = versions[index]
        assert version.enabled, "served the value of a disabled version"
        now = self.clock.now()
        window = TTL + MAX_STALE if outcome.stale else TTL
        assert version.current_within(now, window), (
            f"served a value superseded at {version.superseded_at}, more than {window:.0f} s before {now}"
        )
        if outcome.from_cache and version.expires_at is not None:
            assert now < version.expires_at, "served a cached value past its Key Vault exp"

    @invariant()
    def nothing_leaks(self) -> None:
        values = [v.value for versions in self.history.values() for v in versions]
        said = [
            *self.said,
            *map(repr, self.events),
            repr(RESOLVER.cache),
            repr(atlas_config.get_secret_cache_stats()),
        ]
        for value in values:
            assert not any(value in line for line in said), "a secret value leaked"


def test_random_sequences_keep_the_invariants(
    keyvault_emulator: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random reads, rotations, outages, revocations, clears and clock steps never break the invariants."""
    for name, value in {
        "ATLAS_SECRETS_RETRY_DELAY": "0.001",
        "ATLAS_SECRETS_CACHE_TTL": str(TTL),
        "ATLAS_SECRETS_MAX_STALE": str(MAX_STALE),
        "ATLAS_SECRETS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    }.items():
        monkeypatch.setenv(name, value)
    SecretsMachine.kv = keyvault_emulator
    run_state_machine_as_test(
        SecretsMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
