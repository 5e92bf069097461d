"""Shared fixtures: every test starts from a clean process state and an empty working directory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from loguru import logger

from atlas_config import (
    ALLOWED_SECRET_KEYS,
    RotationEvent,
    TelemetryEvent,
    add_rotation_handler,
    add_telemetry_handler,
)
from atlas_config._keys import env_name
from atlas_config.testing import FakeClock, KeyVaultEmulator, reset

_OWN_PREFIXES = ("ATLAS_", "KEYVAULT_", "AZURE_", "MSI_", "IDENTITY_", "IMDS_")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Clear atlas-config and Azure variables, run in an empty directory, reset global state around it."""
    for name in list(os.environ):
        if name.startswith(_OWN_PREFIXES) or name == "NODE_ENV":
            monkeypatch.delenv(name)
    for key in ALLOWED_SECRET_KEYS:
        monkeypatch.delenv(env_name(key), raising=False)
    monkeypatch.chdir(tmp_path)
    reset()
    yield
    reset()


@pytest.fixture
def canaries() -> dict[str, str]:
    """A distinct, searchable canary value per allowlisted key."""
    return {key: f"canary-{key}-{uuid.uuid4().hex}" for key in ALLOWED_SECRET_KEYS}


@pytest.fixture
def seeded(keyvault_emulator: KeyVaultEmulator, canaries: dict[str, str]) -> KeyVaultEmulator:
    """The dev-mode emulator holding a canary for every allowlisted key."""
    for key, value in canaries.items():
        keyvault_emulator.set_secret(key, value)
    return keyvault_emulator


@pytest.fixture
def seeded_production(production_keyvault: KeyVaultEmulator, canaries: dict[str, str]) -> KeyVaultEmulator:
    """The production-mode emulator (KEYVAULT_NAME routed, verification on) holding the canaries."""
    for key, value in canaries.items():
        production_keyvault.set_secret(key, value)
    return production_keyvault


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Millisecond retry delays, so retry tests do not sleep for seconds."""
    monkeypatch.setenv("ATLAS_SECRETS_RETRY_DELAY", "0.001")


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """A fake clock, so TTLs, staleness and cooldowns pass without sleeping."""
    with FakeClock() as fake:
        yield fake


@dataclass
class Captured:
    """Everything atlas-config said during a test: events, rotations and log lines."""

    events: list[TelemetryEvent] = field(default_factory=list)
    rotations: list[RotationEvent] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def named(self, name: str) -> list[TelemetryEvent]:
        return [e for e in self.events if e.name == name]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Telemetry and rotation handlers plus a loguru sink; logging is switched off again afterwards."""
    seen = Captured()
    add_telemetry_handler(seen.events.append)
    add_rotation_handler(seen.rotations.append)
    logger.enable("atlas_config")
    sink = logger.add(lambda message: seen.logs.append(str(message)), level="DEBUG")
    try:
        yield seen
    finally:
        logger.remove(sink)
        logger.disable("atlas_config")
