"""Load: 10,000 reads from 32 threads while Key Vault answers 503 to every 50th request.

A 20 ms TTL (real time) makes the vault serve hundreds of refreshes during
the run, so the 503s land on real fetches, background refreshes included.
"""

from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path

import pytest

from atlas_config import AtlasSecrets, TelemetryEvent, add_telemetry_handler, get_secret
from atlas_config._resolver import _REFRESH_FROM
from atlas_config.testing import Fault, KeyVaultEmulator

READS = 10_000
THREADS = 32
FAULT_EVERY = 50
TTL = 0.02
PAUSE = 0.006  # between one thread's reads, so the run spans many TTLs
JOIN_TIMEOUT = 60.0


def test_10000_reads_32_threads_faults_every_50_requests(
    seeded_production: KeyVaultEmulator, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No wrong value, no error, no deadlock, and vault GETs within the bound the TTL sets."""
    kv = seeded_production
    monkeypatch.setenv("ATLAS_SECRETS_CACHE_TTL", str(TTL))
    monkeypatch.setenv("ATLAS_SECRETS_RETRY_DELAY", "0.001")
    # One 503 per 50 authenticated requests, for far more requests than the run makes.
    kv.inject(*([Fault()] * (FAULT_EVERY - 1) + [Fault(status=503)]) * 100)
    settings = AtlasSecrets()
    keys = list(canaries)
    fields = {key: getattr(settings, key.replace("-", "_")) for key in keys}
    seen: list[TelemetryEvent] = []
    add_telemetry_handler(seen.append)
    wrong: list[str] = []
    errors: list[BaseException] = []
    done = [0] * THREADS
    barrier = threading.Barrier(THREADS)

    def reader(n: int) -> None:
        barrier.wait()
        for i in range(n, READS, THREADS):
            key = keys[i % len(keys)]
            try:
                # Half the reads go through get_secret(), half through the typed field.
                value = get_secret(key) if i % 2 else fields[key].get_secret_value()
            except BaseException as exc:
                errors.append(exc)
                continue
            if value != canaries[key]:
                wrong.append(key)
            done[n] += 1
            time.sleep(PAUSE)

    threads = [threading.Thread(target=reader, args=(n,), daemon=True) for n in range(THREADS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN_TIMEOUT)
    elapsed = time.monotonic() - started

    assert not [t for t in threads if t.is_alive()], "a reader is stuck: deadlock"
    assert errors == [] and wrong == []
    assert sum(done) == READS
    gets = kv.secret_requests()
    throttled = sum(1 for r in gets if r.status == 503)
    # The vault was really exercised: many refreshes, several of them hit a 503.
    assert len(gets) >= 3 * FAULT_EVERY and throttled >= 3
    # Each key is fetched at most once per REFRESH_FROM x TTL (the earliest refresh-ahead point),
    # plus its first fetch; each 503 adds one retry GET.
    bound = len(keys) * (math.ceil(elapsed / (_REFRESH_FROM * TTL)) + 1) + throttled
    assert len(gets) <= bound
    retries = sum(1 for e in seen if e.name == "Secret.Fetch.Retry")
    assert retries == throttled  # every 503 was retried, and only those


def test_reliability_doc_quotes_the_load() -> None:
    """docs/reliability.md states this test's reads, threads and fault rate."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")

    def quoted(label: str) -> int:
        match = re.search(rf"^\| {re.escape(label)} \| ([\d,]+) \|", text, re.M)
        assert match, f"docs/reliability.md has no '{label}' row"
        return int(match.group(1).replace(",", ""))

    assert (quoted("Load reads"), quoted("Load threads"), quoted("Load: a 503 every N vault requests")) == (
        READS,
        THREADS,
        FAULT_EVERY,
    )
