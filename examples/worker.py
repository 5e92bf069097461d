"""A background worker: prefetch at start-up, a cached read per job, and no crash when Key Vault blips.

Run it against a local Key Vault emulator::

    atlas-config emulator --secrets-file .env.development.example   # then paste its export lines
    POLL_INTERVAL=0.5 python examples/worker.py --jobs 10             # in the shell with the exports

Without ``--jobs`` it runs until Ctrl-C or SIGTERM. Each job reads the signing secret through the
cache; past the TTL the read refreshes (in the background once 70-90% of the TTL has passed), and if
Key Vault is down a recent value is served stale. Only when no value can be had does a job wait and
try again.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import signal
import sys
import threading
from types import FrameType

import atlas_config
from atlas_config import AtlasSecrets, PrefetchError, SecretFetchError, get_secret_cache_stats


class Settings(AtlasSecrets):
    """The worker's settings: the allowlisted secrets plus its poll interval (``POLL_INTERVAL``)."""

    poll_interval: float = 1.0


def handle(job: str, settings: Settings) -> str:
    """Sign one job's payload; returns a short signature (never the key)."""
    key = settings.signing_secret.get_secret_value()
    return hmac.new(key.encode(), job.encode(), hashlib.sha256).hexdigest()[:12]


def run(settings: Settings, jobs: int | None, stop: threading.Event) -> int:
    done = 0
    while not stop.is_set() and (jobs is None or done < jobs):
        job = f"job-{done + 1}"
        try:
            signature = handle(job, settings)
        except SecretFetchError as exc:
            # Key Vault is unreachable and nothing recent is cached: wait, do not crash-loop.
            print(f"{job}: secrets unavailable ({type(exc).__name__}); retrying", flush=True)
            stop.wait(max(settings.poll_interval, 1.0))
            continue
        done += 1
        print(f"{job}: signed {signature}", flush=True)
        stop.wait(settings.poll_interval)
    stats = get_secret_cache_stats()
    counters = f"cache hits={stats.hits} misses={stats.misses} fetches={stats.fetch_successes}"
    print(f"processed {done} jobs; {counters}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, help="stop after this many jobs (default: run until stopped)")
    args = parser.parse_args(argv)
    try:
        settings = Settings().prefetch()
    except PrefetchError as exc:
        print(exc, file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return run(settings, args.jobs, stop)
    finally:
        atlas_config.close()


if __name__ == "__main__":
    sys.exit(main())
