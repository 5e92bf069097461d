"""Fleet arithmetic by simulation: Key Vault GETs of N replicas x 3 secrets over 24 simulated hours.

The simulation follows the resolver's own policy, imported from it:

* every cached entry draws its refresh point uniformly in
  ``[_REFRESH_FROM, _REFRESH_TO]`` of the TTL (300 s by default);
* the first read at or past that point returns the cached value and refreshes
  it in the background: one GET. Reads arrive as a Poisson stream (one per
  second per replica and secret by default), so the GET goes out at the
  refresh point plus the wait for the next read;
* the new entry counts its age from when the GET completed (``FETCH`` later).

Every replica starts at t = 0 and prefetches its three secrets (the cold-start
burst). The lockstep policy for comparison refreshes every entry at the same
point, the middle of the jitter range, so both policies send the same number
of requests and differ only in when.

The published limit (4,000 transactions per 10 s per vault per region for
secrets GETs) is from https://learn.microsoft.com/en-us/azure/key-vault/general/service-limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from atlas_config._environment import Defaults
from atlas_config._resolver import _REFRESH_FROM, _REFRESH_TO

from . import Figure

SECRETS = 3
DAY = 86_400.0
WINDOW = 10.0
LIMIT = 4_000  # Key Vault secrets transactions per 10 s per vault per region
LIMIT_SOURCE = "https://learn.microsoft.com/en-us/azure/key-vault/general/service-limits"
FETCH = 0.05  # seconds a GET takes
READS_PER_SECOND = 1.0  # per replica and secret
FLEET = 1_000
STEADY_FROM = 3_600.0  # "steady state": after the first hour


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    jitter: bool


JITTERED = Policy("atlas-config (refresh at U(0.7, 0.9) x TTL)", jitter=True)
LOCKSTEP = Policy("lockstep (refresh at 0.8 x TTL, no jitter)", jitter=False)


def simulate(replicas: int, policy: Policy, *, ttl: float, horizon: float = DAY, seed: int = 7) -> np.ndarray:
    """Sorted times of every GET the fleet sends in ``[0, horizon)``."""
    rng = np.random.default_rng(seed)
    chains = replicas * SECRETS
    cycles = math.ceil(horizon / (_REFRESH_FROM * ttl)) + 2
    if policy.jitter:
        points = rng.uniform(_REFRESH_FROM, _REFRESH_TO, size=(chains, cycles))
    else:
        points = np.full((chains, cycles), (_REFRESH_FROM + _REFRESH_TO) / 2)
    waits = rng.exponential(1 / READS_PER_SECOND, size=(chains, cycles))
    gaps = FETCH + points * ttl + waits
    gaps[:, 0] = 0.0  # the first GET: the prefetch at start-up
    times = np.cumsum(gaps, axis=1).ravel()
    return np.sort(times[times < horizon])


def peak(times: np.ndarray, *, start: float = 0.0, window: float = WINDOW) -> int:
    """The most GETs in any ``window`` seconds (sliding) at or after ``start``."""
    times = times[times >= start]
    if times.size == 0:
        return 0
    ends = np.searchsorted(times, times + window, side="left")
    return int((ends - np.arange(times.size)).max())


@dataclass(frozen=True, slots=True)
class FleetResult:
    ttl: float
    per_replica_per_day: float
    burst: dict[str, int]  # peak in any 10 s, start-up burst included
    steady: dict[str, int]  # peak in any 10 s after the first hour
    together: int  # replicas started within one window that the limit allows
    carried: dict[str, int]  # replicas the limit carries in steady state (found by simulation)
    checked: dict[str, int]  # the steady peak simulated at that fleet size


def _carried(policy: Policy, steady_peak: int, ttl: float) -> tuple[int, int]:
    """The largest fleet (to 5%) whose simulated steady peak stays under the limit, and that peak.

    Starts from the 1,000-replica peak scaled to the limit; two hours after the first are
    enough to see the steady pattern at each size.
    """

    def steady_peak_of(replicas: int) -> int:
        times = simulate(replicas, policy, ttl=ttl, horizon=STEADY_FROM + 7_200)
        return peak(times, start=STEADY_FROM)

    size = max(int(LIMIT * FLEET / steady_peak), 1)
    seen = steady_peak_of(size)
    while seen > LIMIT and size > 1:
        size = int(size * 0.95)
        seen = steady_peak_of(size)
    while True:
        bigger = int(size * 1.05) + 1
        bigger_peak = steady_peak_of(bigger)
        if bigger_peak > LIMIT:
            return size, seen
        size, seen = bigger, bigger_peak


def run(*, quick: bool = False) -> tuple[list[Figure], FleetResult]:
    ttl = Defaults().cache_ttl
    burst: dict[str, int] = {}
    steady: dict[str, int] = {}
    carried: dict[str, int] = {}
    checked: dict[str, int] = {}
    per_day = 0.0
    for policy in (JITTERED, LOCKSTEP):
        times = simulate(FLEET, policy, ttl=ttl, horizon=DAY / 4 if quick else DAY)
        if policy is JITTERED:
            per_day = times.size / FLEET * (4 if quick else 1)
        burst[policy.name] = peak(times)
        steady[policy.name] = peak(times, start=STEADY_FROM)
        carried[policy.name], checked[policy.name] = _carried(policy, steady[policy.name], ttl)
    together = LIMIT // SECRETS
    result = FleetResult(ttl, per_day, burst, steady, together, carried, checked)

    j, lock = JITTERED.name, LOCKSTEP.name
    figures = [
        Figure(
            "Fleet", "Key Vault GETs per replica per day (3 secrets)", f"{per_day:,.0f}", "", None, "", None
        ),
        Figure(
            "Fleet",
            f"peak GETs in any 10 s, {FLEET:,} replicas started together",
            f"{burst[j]:,}",
            f"{burst[lock]:,}",
            None,
            "",
            None,
        ),
        Figure(
            "Fleet",
            f"peak GETs in any 10 s after the first hour, {FLEET:,} replicas",
            f"{steady[j]:,}",
            f"{steady[lock]:,}",
            steady[j] / steady[lock],
            "< lockstep",
            steady[j] < steady[lock],
        ),
        Figure(
            "Fleet",
            "replicas one vault carries, started within 10 s",
            f"{together:,}",
            f"{together:,}",
            None,
            "",
            None,
        ),
        Figure(
            "Fleet",
            "replicas one vault carries in steady state",
            f"{carried[j]:,}",
            f"{carried[lock]:,}",
            None,
            "",
            None,
        ),
    ]
    return figures, result
