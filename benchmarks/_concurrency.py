"""Concurrency: 64 threads, and 64 tasks, read one cold key at once; single-flight makes it one GET.

The emulator adds 20 ms to every request (vault and token endpoint), so a
cold read costs a token request and a GET. Each run starts cold (new client,
new credential, empty challenge cache); the time is from the moment all
readers are released until the last has its value, against one reader alone.
"""

from __future__ import annotations

import asyncio
import threading
import time

from . import Figure, clean_environment, median

READERS = 64
LATENCY_MS = 20
KEY = "signing-secret"


def run(*, quick: bool = False) -> tuple[list[Figure], dict[str, float]]:
    import os

    from azure.keyvault.secrets._shared import http_challenge_cache

    import atlas_config
    from atlas_config import aget_secret, get_secret
    from atlas_config.testing import KeyVaultEmulator, reset

    repeats = 1 if quick else 3
    with KeyVaultEmulator() as kv, clean_environment(ATLAS_ENV="production"):
        os.environ.update(kv.environ(vault_name="atlas-bench"))
        kv.set_secret(KEY, "concurrency-value")

        def cold() -> None:
            reset()
            http_challenge_cache.clear()
            kv.clear_requests()

        def threads(readers: int) -> float:
            cold()
            barrier = threading.Barrier(readers + 1)
            results: list[str] = []

            def read() -> None:
                barrier.wait()
                results.append(get_secret(KEY))

            pool = [threading.Thread(target=read) for _ in range(readers)]
            for t in pool:
                t.start()
            barrier.wait()
            started = time.perf_counter()
            for t in pool:
                t.join()
            elapsed = time.perf_counter() - started
            assert results == ["concurrency-value"] * readers
            return elapsed

        def tasks(readers: int) -> float:
            cold()

            async def main() -> float:
                try:
                    started = time.perf_counter()
                    values = await asyncio.gather(*(aget_secret(KEY) for _ in range(readers)))
                    elapsed = time.perf_counter() - started
                finally:
                    await atlas_config.aclose()
                assert values == ["concurrency-value"] * readers
                return elapsed

            return asyncio.run(main())

        threads(1)  # warm-up: imports (aiohttp for the tasks)
        tasks(1)
        kv.latency = LATENCY_MS / 1000
        measured: dict[str, float] = {}
        requests: dict[str, tuple[int, int]] = {}
        for name, reader in (("threads", threads), ("tasks", tasks)):
            for readers in (1, READERS):
                times = []
                for _ in range(repeats):
                    times.append(reader(readers))
                    requests[f"{name}-{readers}"] = (len(kv.secret_requests(KEY)), len(kv.token_requests()))
                measured[f"{name}-{readers}"] = median(times) * 1000
        kv.latency = 0
        reset()

    figures = []
    for name in ("threads", "tasks"):
        gets, tokens = requests[f"{name}-{READERS}"]
        alone, crowd = measured[f"{name}-1"], measured[f"{name}-{READERS}"]
        figures.append(
            Figure(
                "Concurrency",
                f"{READERS} {name}, one cold key: GETs (token requests)",
                f"{gets} ({tokens})",
                "",
                None,
                "1 GET",
                gets == 1,
            )
        )
        figures.append(
            Figure(
                "Concurrency",
                f"{READERS} {name} served, vs 1 reader alone",
                f"{crowd:.0f} ms",
                f"{alone:.0f} ms",
                crowd / alone,
                "",
                None,
            )
        )
    return figures, measured
