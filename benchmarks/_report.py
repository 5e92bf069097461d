"""Turn the figures into docs/performance.md and docs/startup.png."""

from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import cast

from atlas_config._resolver import _REFRESH_FROM, _REFRESH_TO

from . import Figure
from ._fleet import LIMIT, LIMIT_SOURCE, READS_PER_SECOND, FleetResult
from ._startup import LATENCIES_MS, UNRELATED, Point

PACKAGES = (
    "atlas-config",
    "pydantic",
    "pydantic-settings",
    "azure-core",
    "azure-identity",
    "azure-keyvault-secrets",
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; {versions}"
    )


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def console_line(f: Figure) -> str:
    versus = f" vs {f.reference}" if f.reference else ""
    ratio = f"  {f.ratio:.2f}x" if f.ratio is not None else ""
    target = f"  target {f.target}" if f.target else ""
    return f"[{f.verdict:>4}] {f.section:<11} {f.name}: {f.value}{versus}{ratio}{target}"


def chart(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = [p.latency_ms for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(latencies, [p.theirs_ms for p in points], "o-", color="#c0504d", label="pydantic-settings")
    ax.plot(latencies, [p.ours_ms for p in points], "o-", color="#1f77b4", label="atlas-config prefetch()")
    for p in points:
        ax.annotate(
            f"{p.ours_ms / p.theirs_ms:.2f}x",
            (p.latency_ms, p.ours_ms),
            textcoords="offset points",
            xytext=(0, -15),
            ha="center",
            fontsize=8,
            color="#1f77b4",
        )
    ax.set_xlabel("latency added to every request (ms)")
    ax.set_ylabel("cold start, median (ms)")
    ax.set_title(f"Cold start: three secrets from a vault holding {UNRELATED + 3}")
    ax.set_xticks(latencies)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table(figures: list[Figure]) -> list[str]:
    lines = [
        "| Section | Figure | atlas-config | Reference | Ratio | Target | Verdict |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for f in figures:
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
        lines.append(
            f"| {f.section} | {f.name} | {f.value} | {f.reference or '-'} | {ratio} | "
            f"{f.target or '-'} | {f.verdict} |"
        )
    return lines


def _requests(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts.items() if n)


_PAGE = """\
# Performance

Three questions: does atlas-config slow my app, does it slow my start-up, and will it keep my
app up when Key Vault misbehaves? The first two are measured here; the third is
[docs/reliability.md](reliability.md). Every figure is measured side by side with its reference
in the same run, interleaved, on a shared machine: absolute times drift from run to run, the
ratios hold.

Reproduce with:

```console
make bench        # .venv/bin/python -m benchmarks: under a minute; rewrites this page and the chart
```

## Results

{table}

Machine: {machine}. Run on {date}.

## Hot path

A cache hit is what an app pays per request. The floor is the same expression on a plain
pydantic-settings model whose field is a `SecretStr`: `plain.signing_secret.get_secret_value()`
({floor_ns:.0f} ns here). `settings.signing_secret.get_secret_value()` on `AtlasSecrets` costs
{typed_ns:.0f} ns: it checks the entry's age against the TTL and Key Vault's expiry, counts the
hit, and skips telemetry when nobody listens. `get_secret("signing-secret")` costs
{get_ns:.0f} ns: it also checks the key against the allowlist and finds its memoised options.
`timeit`, 100,000 calls per repeat, 25 repeats interleaved; the fastest repeat of each.

## Start-up

![Cold start against latency](startup.png)

`AtlasSecrets().prefetch()` against a model using pydantic-settings'
`AzureKeyVaultSettingsSource`, both against the Key Vault emulator holding {unrelated} unrelated
secrets plus the three, with {latencies} ms added to every request (vault and token endpoint).
Both reach the vault the production way: `https://atlas-bench.vault.azure.net` routed in-process
to the emulator, TLS verified against that name, challenge-resource verification on.

Every run is a cold start for both: a new `DefaultAzureCredential` (so a token request), a new
client (so a TLS handshake), and the Azure SDK's process-wide challenge cache emptied (so the
401 challenge round trip), as in a fresh process. Imports are paid once, before timing. The
timed region is building the settings with every secret resolved (for pydantic-settings that
includes creating its credential, which atlas-config does inside its first read). 7 runs per
latency, alternating which side goes first; medians.

Requests per cold start: atlas-config {ours_requests}; pydantic-settings {theirs_requests}.
pydantic-settings lists the whole vault (25 per page, one page after another) and then GETs the
secrets its fields name, one after another. atlas-config never lists (its identity needs only
`get`) and GETs the allowlisted keys concurrently. It pays a challenge round trip per secret,
because its three first requests go out together and the SDK does not share an in-flight
challenge; the token request is shared (one per cold start), so a pod of workers starting
together does not run into the managed-identity endpoint's throttling.

| Latency | atlas-config | pydantic-settings | Ratio |
|---:|---:|---:|---:|
{latency_rows}

## Import

{samples} fresh `python -I` interpreters per module, alternating, each timing its own import
(interpreter start-up excluded). The verdict compares each module's fastest sample, the least
disturbed by other processes (as `timeit` advises); the medians are shown too, and run higher
and noisier on a shared machine. `atlas_config` imports pydantic-settings itself, so the ratio is
1 plus what it adds. The largest additions (`-X importtime`, self time by package): {additions}.

## Concurrency

64 threads calling `get_secret()`, then 64 tasks awaiting `aget_secret()`, on one cold key with
20 ms added latency: single-flight makes it one token request and one GET, and all 64 readers
have the value about when one reader alone would.

## Fleet arithmetic

A simulation (`benchmarks/_fleet.py`) of 24 hours of replicas x 3 secrets with the default TTL
of {ttl:.0f} s. It follows the resolver's policy, importing the refresh range from
`atlas_config._resolver`: each entry refreshes at a point drawn uniformly in {lo}-{hi} of the
TTL, on the first read past it (reads arrive at {reads:.0f} per second per replica and secret).
All replicas start at once and prefetch. The comparison policy refreshes every entry at the
middle of that range: the same number of requests, without jitter.

- **{per_day:,.0f} GETs per replica per day** for three secrets: one per secret every ~0.8 TTL,
  so about 25% more than `3 x 86,400 / TTL` = {naive:,.0f}, the price of refreshing before expiry.
- **Peak in any 10 s, 1,000 replicas started together: {burst:,}** with either policy: the
  cold-start burst, three GETs per replica.
- **After the first hour: {steady_jitter:,} with jitter, {steady_lockstep:,} in lockstep.**
  Without jitter the fleet keeps refreshing together, every ~4 minutes, all day.
- **Capacity under the limit** of {limit:,} transactions per 10 s per vault per region for
  secrets ([Azure Key Vault service limits]({limit_source})): at most {together:,} replicas
  starting within the same 10 s (the burst); in steady state about {carried_jitter:,} replicas
  with jitter (simulated peak {checked_jitter:,}) against about {carried_lockstep:,} in
  lockstep. The limit is shared with every other client of the vault.

Start-up bursts are the binding constraint: stagger rollouts, or mount the secrets with the CSI
driver for large fleets ([docs/scaling.md](scaling.md)).
"""


def page(
    figures: list[Figure],
    points: list[Point],
    import_extra: dict[str, object],
    fleet: FleetResult,
    hot_ns: dict[str, float],
) -> str:
    at20 = next(p for p in points if p.latency_ms == 20)
    additions = cast(list[tuple[str, float]], import_extra["additions"])
    jitter, lockstep = list(fleet.steady)
    rows = [
        f"| {p.latency_ms} ms | {p.ours_ms:.0f} ms | {p.theirs_ms:.0f} ms | {p.ours_ms / p.theirs_ms:.2f}x |"
        for p in points
    ]
    return _PAGE.format(
        table="\n".join(_table(figures)),
        machine=machine(),
        date=f"{dt.datetime.now(dt.UTC):%Y-%m-%d}",
        floor_ns=hot_ns["floor"],
        typed_ns=hot_ns["typed"],
        get_ns=hot_ns["get_secret"],
        unrelated=UNRELATED,
        latencies=", ".join(str(n) for n in LATENCIES_MS),
        ours_requests=_requests(at20.ours_requests),
        theirs_requests=_requests(at20.theirs_requests),
        latency_rows="\n".join(rows),
        samples=import_extra["samples"],
        additions=", ".join(f"{name} {ms:.1f} ms" for name, ms in additions),
        ttl=fleet.ttl,
        lo=_REFRESH_FROM,
        hi=_REFRESH_TO,
        reads=READS_PER_SECOND,
        per_day=fleet.per_replica_per_day,
        naive=3 * 86_400 / fleet.ttl,
        burst=fleet.burst[jitter],
        steady_jitter=fleet.steady[jitter],
        steady_lockstep=fleet.steady[lockstep],
        limit=LIMIT,
        limit_source=LIMIT_SOURCE,
        together=fleet.together,
        carried_jitter=fleet.carried[jitter],
        checked_jitter=fleet.checked[jitter],
        carried_lockstep=fleet.carried[lockstep],
    )
