"""Test helpers that touch atlas-config's global state: ``reset()`` and ``FakeClock``."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType

from .. import _clock
from .._resolver import RESOLVER
from .._telemetry import reset_handlers


def reset() -> None:
    """Forget all global state: cache, counters, clients, breakers, handlers, the environment decision,
    and the Azure SDK's process-wide challenge cache.

    Call it between tests (the pytest plugin's fixtures do), so each test reads
    the environment it set up and talks to its own emulator.
    """
    RESOLVER.reset()
    reset_handlers()
    # The Azure SDK caches each vault's auth challenge process-wide; a "cold"
    # test must not inherit one. Only touched if the SDK was ever loaded.
    challenges = sys.modules.get("azure.keyvault.secrets._shared.http_challenge_cache")
    if challenges is not None:
        challenges.clear()


class FakeClock:
    """Replace atlas-config's clock so TTLs, staleness and breaker cooldowns pass without sleeping.

    Example::

        with FakeClock() as clock:
            get_secret("signing-secret")
            clock.advance(301)          # the TTL has passed
            get_secret("signing-secret")  # fetched again

    Only atlas-config's cache decisions read this clock; retry back-off
    (stamina) and the Azure SDK keep real time.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self._lock = threading.Lock()
        self._mono = start
        self._wall_offset = time.time() - start
        self._saved = (_clock.now, _clock.wall)

    def now(self) -> float:
        """The fake monotonic time."""
        return self._mono

    def wall(self) -> float:
        """The fake epoch time, moving with ``advance``."""
        return self._mono + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        with self._lock:
            self._mono += seconds

    def __enter__(self) -> FakeClock:
        self._saved = (_clock.now, _clock.wall)
        _clock.now, _clock.wall = self.now, self.wall
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _clock.now, _clock.wall = self._saved
