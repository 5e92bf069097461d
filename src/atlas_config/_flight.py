"""Single-flight: callers that ask for the same thing at the same moment share one call.

Used for secret reads (64 cold readers, one GET) and for Azure tokens (three
secrets read at once at start-up, one token request). The waiters get the
leader's result or its exception; nothing is cached here, the caller caches.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    """One call in progress that other threads wait on."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[K, V]):
    """For threads: ``run(key, fn)`` calls ``fn`` once however many threads ask for ``key`` together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[K, _Flight[V]] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    def run(self, key: K, fn: Callable[[], V]) -> V:
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value  # type: ignore[return-value]  # set by the leader when error is None
        try:
            flight.value = fn()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()
        return flight.value


class AsyncSingleFlight(Generic[K, V]):
    """For tasks of one event loop: ``await run(key, fn)`` awaits ``fn()`` once per ``key`` at a time."""

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: K, fn: Callable[[], Awaitable[V]]) -> V:
        existing = self._flights.get(key)
        if existing is not None:
            # shield: one impatient waiter's cancellation must not cancel the others' call.
            return await asyncio.shield(existing)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            value = await fn()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: there may be no waiters
            raise
        finally:
            self._flights.pop(key, None)
        future.set_result(value)
        return value
