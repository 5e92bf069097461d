"""Import time: ``import atlas_config`` against ``import pydantic_settings``, in fresh interpreters.

Each sample is a new ``python -I`` process that times its own import with
``perf_counter`` (interpreter start-up is excluded: it is the same for both).
Samples alternate between the two modules; the verdict uses the fastest
sample of each, and the median is reported beside it. ``atlas_config`` imports
pydantic-settings itself, so the ratio is 1 + what atlas-config adds; the
``-X importtime`` breakdown names the largest additions.
"""

from __future__ import annotations

import re
import subprocess
import sys

from . import Figure, median

TARGET = 1.3
_CODE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def _sample(module: str) -> float:
    result = subprocess.run(
        [sys.executable, "-I", "-c", _CODE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout)


def additions(limit: int = 6) -> list[tuple[str, float]]:
    """What ``import atlas_config`` loads beyond pydantic-settings: self time in ms, by top-level package."""
    result = subprocess.run(
        [sys.executable, "-I", "-X", "importtime", "-c", "import pydantic_settings; import atlas_config"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("| pydantic_settings"))
    by_package: dict[str, float] = {}
    for line in lines[start + 1 :]:
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)", line)
        if match:
            package = match.group(2).split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(match.group(1)) / 1000
    return sorted(by_package.items(), key=lambda item: -item[1])[:limit]


def run(*, quick: bool = False) -> tuple[list[Figure], dict[str, object]]:
    """The verdict uses each module's fastest sample, the least disturbed (as for timeit); the
    median is shown beside it, since other processes on a shared machine inflate both sides."""
    samples = 4 if quick else 21
    times: dict[str, list[float]] = {"atlas_config": [], "pydantic_settings": []}
    for n in range(samples):
        order = list(times) if n % 2 == 0 else list(reversed(times))
        for module in order:
            times[module].append(_sample(module))
    figures = []
    for label, pick in (("fastest", min), ("median", median)):
        ours, theirs = pick(times["atlas_config"]) * 1000, pick(times["pydantic_settings"]) * 1000
        ratio = ours / theirs
        verdict = label == "fastest"
        figures.append(
            Figure(
                "Import",
                f"import atlas_config vs import pydantic_settings ({label} of {samples})",
                f"{ours:.0f} ms",
                f"{theirs:.0f} ms",
                ratio,
                f"<= {TARGET}x" if verdict else "",
                ratio <= TARGET if verdict else None,
            )
        )
    return figures, {"samples": samples, "additions": additions()}
