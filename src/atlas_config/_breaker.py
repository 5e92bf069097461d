"""A circuit breaker per vault: stop calling a vault that keeps failing, probe it after a cooldown.

Counts consecutive failed *resolutions* (each already retried), not attempts,
and only transient ones: a 404 or 403 is an answer from a healthy vault.
"""

from __future__ import annotations

import threading

from . import _clock
from ._errors import SecretFetchError
from ._telemetry import TelemetryEvent, emit


class CircuitOpenError(SecretFetchError):
    """The vault's breaker is open; no request was sent."""


class CircuitBreaker:
    """closed -> (threshold failures) -> open -> (cooldown) -> one probe -> closed or open again."""

    def __init__(self, vault_url: str, threshold: int, cooldown: float) -> None:
        self.vault_url = vault_url
        self.threshold = threshold
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def before_call(self, key: str) -> bool:
        """Raise ``CircuitOpenError`` if the call must not go out; return True if it is the probe."""
        with self._lock:
            if self._opened_at is None:
                return False
            waited = _clock.now() - self._opened_at
            if waited >= self.cooldown and not self._probing:
                self._probing = True
                return True
        left = self.cooldown - waited
        paused = f"paused for {left:.0f}s more" if left > 0 else "paused while one probe request checks it"
        raise CircuitOpenError(
            f"secret {key!r}: Key Vault {self.vault_url} failed {self.threshold} times in a row, "
            f"so calls are {paused} (circuit breaker); a cached value is served if there is one"
        )

    def success(self) -> None:
        with self._lock:
            was_open = self._opened_at is not None
            self._failures = 0
            self._opened_at = None
            self._probing = False
        if was_open:
            emit(TelemetryEvent("Secret.Circuit.Close", source="keyvault", detail=self.vault_url))

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            reopen = self._probing
            newly_open = self._opened_at is None and self._failures >= self.threshold
            if reopen or newly_open:
                self._opened_at = _clock.now()
            self._probing = False
        if newly_open:
            emit(TelemetryEvent("Secret.Circuit.Open", source="keyvault", detail=self.vault_url))

    def abandon(self, probe: bool) -> None:
        """The call ended without an answer (cancelled, interrupted): if it was the probe, the next
        call probes instead, or the breaker would stay open for good."""
        if probe:
            with self._lock:
                self._probing = False

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._probing = False
