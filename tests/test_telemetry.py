"""Telemetry: the seed's event names, frozen events, handler safety, loguru quiet by default."""

from __future__ import annotations

import dataclasses

import pytest
from loguru import logger

import atlas_config
from atlas_config import TelemetryEvent, add_telemetry_handler, get_secret, remove_telemetry_handler
from atlas_config._telemetry import EVENT_NAMES
from atlas_config.testing import Fault, KeyVaultEmulator

SEED_EVENTS = {
    "Secret.Cache.Hit",
    "Secret.Cache.Miss",
    "Secret.Fetch.Success",
    "Secret.Fetch.Failure",
    "Secret.Fetch.Retry",
    "Secret.Fetch.Fallback",
    "Secret.Cache.Clear",
}


def test_seed_event_names_are_all_there() -> None:
    """The seven event names of the TypeScript helper exist with the same spelling."""
    assert set(EVENT_NAMES) >= SEED_EVENTS


def test_event_sequence_for_miss_hit_retry_clear(seeded: KeyVaultEmulator, fast_retries: None) -> None:
    """A cold read with one 503 emits Miss, Retry, Success; then Hit; clear emits Clear."""
    seen: list[TelemetryEvent] = []
    add_telemetry_handler(seen.append)
    seeded.inject(Fault(status=503))
    get_secret("signing-secret")
    get_secret("signing-secret")
    atlas_config.clear_secret_cache()
    names = [e.name for e in seen]
    assert names == [
        "Secret.Cache.Miss",
        "Secret.Fetch.Retry",
        "Secret.Fetch.Success",
        "Secret.Cache.Hit",
        "Secret.Cache.Clear",
    ]
    success = seen[2]
    assert (success.secret_key, success.source, success.attempt) == ("signing-secret", "keyvault", 2)
    assert success.version is not None and len(success.version) == 32
    assert success.duration_ms is not None and success.duration_ms > 0


def test_failure_event_names_the_error_type(seeded: KeyVaultEmulator) -> None:
    """A 404 emits Secret.Fetch.Failure with error_type and the attempt count."""
    seen: list[TelemetryEvent] = []
    add_telemetry_handler(seen.append)
    seeded.delete_secret("signing-secret")
    with pytest.raises(atlas_config.SecretNotFoundError):
        get_secret("signing-secret")
    failure = [e for e in seen if e.name == "Secret.Fetch.Failure"]
    assert len(failure) == 1
    assert (failure[0].error_type, failure[0].attempt) == ("SecretNotFoundError", 1)


def test_events_are_frozen() -> None:
    """TelemetryEvent is a frozen, slotted dataclass."""
    event = TelemetryEvent("Secret.Cache.Hit", "signing-secret")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.name = "x"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_handler_exceptions_never_fail_a_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that raises is logged and ignored; the read still returns."""
    monkeypatch.setenv("SIGNING_SECRET", "value")

    def broken(event: TelemetryEvent) -> None:
        raise RuntimeError("boom")

    add_telemetry_handler(broken)
    assert get_secret("signing-secret") == "value"
    assert get_secret("signing-secret") == "value"


def test_remove_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """A removed handler is not called again; adding twice registers once."""
    monkeypatch.setenv("SIGNING_SECRET", "value")
    seen: list[TelemetryEvent] = []
    add_telemetry_handler(seen.append)
    add_telemetry_handler(seen.append)
    get_secret("signing-secret")
    count = len(seen)
    assert count == 2  # Miss + Success, once each
    remove_telemetry_handler(seen.append)
    get_secret("signing-secret")
    assert len(seen) == count


def test_loguru_is_quiet_until_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library logs nothing until the app calls logger.enable('atlas_config')."""
    monkeypatch.setenv("SIGNING_SECRET", "value")
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}")
    try:
        get_secret("signing-secret")
        assert lines == []
        atlas_config.clear_secret_cache()
        logger.enable("atlas_config")
        get_secret("signing-secret")
        assert any("Secret.Fetch.Success" in line for line in lines)
        assert not any("Secret.Cache.Hit" in line for line in lines)
    finally:
        logger.disable("atlas_config")
        logger.remove(sink)
