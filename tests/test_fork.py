"""Fork safety: a child forked while a fetch is in flight keeps cached values but none of the parent's
locks, in-flight state or connections, so it neither deadlocks nor shares a socket with the parent."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

import atlas_config
from atlas_config import aget_secret, get_secret
from atlas_config._resolver import RESOLVER
from atlas_config.testing import FakeClock, Fault, KeyVaultEmulator

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

WARM = "signing-secret"
SLOW = "model-provider-api-key"
WATCHDOG = 20.0  # seconds the parent waits for a child before killing it


def fork_and_wait(child: Callable[[], None]) -> int:
    """Fork; run ``child`` there and exit 0 (1 on an assertion, 2 on any other error); return the status.

    The child also arms SIGALRM, and the parent kills a child that has not exited within WATCHDOG
    seconds, so a deadlock fails the test instead of hanging it.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns to pytest
        code = 2
        try:
            signal.alarm(int(WATCHDOG) - 5)
            child()
            code = 0
        except AssertionError:
            traceback.print_exc()
            code = 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + WATCHDOG
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child did not exit within {WATCHDOG:.0f} s (deadlock?)")


@contextmanager
def in_flight(target: Callable[[], object]) -> Iterator[list[object]]:
    """Run ``target`` in a thread until the emulator is holding its request; join it on exit."""
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(target()), daemon=True)
    thread.start()
    try:
        yield results
    finally:
        thread.join(timeout=WATCHDOG)
        assert not thread.is_alive()


def wait_for_request_held(kv: KeyVaultEmulator) -> None:
    """Wait until the delayed request has reached the emulator (its Fault was taken), plus a margin."""
    deadline = time.monotonic() + 10
    while kv._faults:
        assert time.monotonic() < deadline, "the slow request never reached the emulator"
        time.sleep(0.01)
    time.sleep(0.1)


def test_child_forked_mid_fetch_reads_cache_and_fetches_on_its_own(
    seeded: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """The child serves the warm key from cache and fetches the in-flight key itself, with a new client."""
    assert get_secret(WARM) == canaries[WARM]
    vault = RESOLVER.vault()
    assert vault is not None
    parent_client = vault.client()
    tokens_before = len(seeded.token_requests())
    seeded.inject(Fault(delay=2.0))  # the next GET (the thread's) is held for two seconds

    def child() -> None:
        hits = RESOLVER.hits
        assert get_secret(WARM) == canaries[WARM]
        assert RESOLVER.hits == hits + 1  # from the inherited cache, no request
        assert not RESOLVER._flights  # the parent's in-flight fetch is not waited on
        assert get_secret(SLOW) == canaries[SLOW]
        assert vault.client() is not parent_client

    with in_flight(lambda: get_secret(SLOW)) as parent_result:
        wait_for_request_held(seeded)
        assert (WARM, None) not in RESOLVER._flights and (SLOW, None) in RESOLVER._flights
        assert fork_and_wait(child) == 0
    assert parent_result == [canaries[SLOW]]
    # Two GETs of the slow key (the parent's and the child's), and the child's new credential asked
    # the identity endpoint for its own token: it did not reuse the parent's client.
    assert len(seeded.secret_requests(SLOW)) == 2
    assert len(seeded.token_requests()) == tokens_before + 1


def test_child_forked_mid_async_fetch_uses_its_own_aio_client(
    seeded: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """The same through aget_secret: a parent thread's event loop mid-fetch; the child runs its own loop."""

    async def aread(key: str) -> str:
        try:
            return await aget_secret(key)
        finally:
            await atlas_config.aclose()

    assert asyncio.run(aread(WARM)) == canaries[WARM]
    seeded.inject(Fault(delay=2.0))

    def child() -> None:
        assert asyncio.run(aread(WARM)) == canaries[WARM]
        assert not RESOLVER._aflights  # the parent thread's loop and its flight are forgotten
        assert asyncio.run(aread(SLOW)) == canaries[SLOW]

    with in_flight(lambda: asyncio.run(aread(SLOW))) as parent_result:
        wait_for_request_held(seeded)
        assert fork_and_wait(child) == 0
    assert parent_result == [canaries[SLOW]]
    assert len(seeded.secret_requests(SLOW)) == 2


def test_locks_held_at_fork_do_not_deadlock_the_child(
    seeded: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """Resolver, client and breaker locks held by a parent thread at fork time are fresh in the child."""
    get_secret(WARM)
    vault = RESOLVER.vault()
    assert vault is not None
    locks = [RESOLVER._lock, vault._lock, RESOLVER.breaker(vault.vault_url)._lock]
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        holding.set()
        release.wait()
        for lock in locks:
            lock.release()

    def child() -> None:
        assert get_secret(SLOW) == canaries[SLOW]  # needs all three locks, and builds a client
        atlas_config.clear_secret_cache()
        assert get_secret(WARM) == canaries[WARM]

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert holding.wait(timeout=10)
    try:
        assert fork_and_wait(child) == 0
    finally:
        release.set()
        holder.join(timeout=10)


def test_refresh_ahead_works_in_the_child(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """The parent's refresh thread does not exist in the child; the child starts its own and it completes."""
    with FakeClock() as clock:
        get_secret(WARM)
        clock.advance(280)  # past the refresh point (at most 90%) of the 300 s default TTL
        get_secret(WARM)  # the parent's background refresh: its executor now exists
        assert RESOLVER._executor is not None
        deadline = time.monotonic() + 10
        while RESOLVER._refreshing:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        seeded.set_secret(WARM, "rotated-for-the-child")

        def child() -> None:
            clock.advance(280)
            assert get_secret(WARM) == canaries[WARM]  # served at once, refreshed behind
            deadline = time.monotonic() + 10
            while RESOLVER._refreshing:
                assert time.monotonic() < deadline, "the child's refresh never finished"
                time.sleep(0.01)
            assert get_secret(WARM) == "rotated-for-the-child"

        assert fork_and_wait(child) == 0
    assert len(seeded.secret_requests(WARM)) == 3
