"""Single-flight: concurrent cold reads of one key cause exactly one Key Vault GET."""

from __future__ import annotations

import asyncio
import threading

import atlas_config
from atlas_config import AtlasSecrets, aget_secret, get_secret
from atlas_config.testing import KeyVaultEmulator


def test_32_threads_one_get(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """32 threads reading one cold key get the same value from a single GET."""
    seeded.latency = 0.2  # keep the first fetch in flight while the others arrive
    barrier = threading.Barrier(32)
    results: list[str] = []

    def read() -> None:
        barrier.wait()
        results.append(get_secret("signing-secret"))

    threads = [threading.Thread(target=read) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [canaries["signing-secret"]] * 32
    assert len(seeded.secret_requests("signing-secret")) == 1


def test_32_threads_typed_field_one_get(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """Typed-field reads from 32 threads on one settings object share one GET."""
    seeded.latency = 0.2
    settings = AtlasSecrets()
    barrier = threading.Barrier(32)
    results: list[str] = []

    def read() -> None:
        barrier.wait()
        results.append(settings.service_bus_connection_string.get_secret_value())

    threads = [threading.Thread(target=read) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [canaries["service-bus-connection-string"]] * 32
    assert len(seeded.secret_requests("service-bus-connection-string")) == 1


def test_16_tasks_one_get(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """16 tasks awaiting one cold key share a single GET through the aio client."""
    seeded.latency = 0.2

    async def main() -> list[str]:
        try:
            return list(await asyncio.gather(*(aget_secret("signing-secret") for _ in range(16))))
        finally:
            await atlas_config.aclose()

    assert asyncio.run(main()) == [canaries["signing-secret"]] * 16
    assert len(seeded.secret_requests("signing-secret")) == 1


def test_failure_is_shared_not_repeated(seeded: KeyVaultEmulator) -> None:
    """When the one in-flight fetch fails with 404, every waiting thread gets the error; one GET was sent."""
    seeded.delete_secret("signing-secret")
    seeded.latency = 0.2
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def read() -> None:
        barrier.wait()
        try:
            get_secret("signing-secret")
        except atlas_config.SecretNotFoundError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(errors) == 8
    assert len(seeded.secret_requests("signing-secret")) == 1


def test_cancelled_waiter_does_not_cancel_the_fetch(
    seeded: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """Cancelling one waiting task leaves the shared fetch running for the others."""
    seeded.latency = 0.3

    async def main() -> str:
        try:
            first = asyncio.create_task(aget_secret("signing-secret"))
            await asyncio.sleep(0.05)
            impatient = asyncio.create_task(aget_secret("signing-secret"))
            await asyncio.sleep(0.05)
            impatient.cancel()
            return await first
        finally:
            await atlas_config.aclose()

    assert asyncio.run(main()) == canaries["signing-secret"]
    assert len(seeded.secret_requests("signing-secret")) == 1
