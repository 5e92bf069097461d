"""Benchmarks for atlas-config: hot path, start-up, import, concurrency, fleet arithmetic.

Run them with ``make bench`` (``python -m benchmarks`` from the repository
root). They are not part of ``make test``. Each figure is measured side by
side with its reference *in the same run*, interleaved, because absolute
times drift on a shared machine while ratios hold. ``__main__`` prints every
figure with its target and writes ``docs/performance.md`` and
``docs/startup.png``.

Modules:

* ``_hot_path``: a cache hit against pydantic's plain ``SecretStr``;
* ``_startup``: ``AtlasSecrets().prefetch()`` against pydantic-settings'
  ``AzureKeyVaultSettingsSource`` on the emulator, at several latencies;
* ``_imports``: ``import atlas_config`` against ``import pydantic_settings``
  in fresh interpreters;
* ``_concurrency``: 64 threads and 64 tasks on one cold key;
* ``_fleet``: a fake-clock simulation of a fleet's Key Vault traffic;
* ``_report``: the markdown page and the chart.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

# Variables that would steer atlas-config or DefaultAzureCredential away from the emulator.
_FOREIGN_PREFIXES = ("ATLAS_", "KEYVAULT_", "AZURE_", "MSI_", "IDENTITY_", "IMDS_")
_SECRET_ENV_NAMES = ("SERVICE_BUS_CONNECTION_STRING", "MODEL_PROVIDER_API_KEY", "SIGNING_SECRET")


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure, with what it is compared against and its target."""

    section: str
    name: str
    value: str  # ours, formatted
    reference: str  # the side-by-side reference, formatted ("" when none)
    ratio: float | None  # ours / reference, when that is the figure
    target: str  # e.g. "<= 10x", "== 1"
    passed: bool | None  # None: informational

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "info"
        return "PASS" if self.passed else "MISS"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@contextmanager
def clean_environment(**extra: str) -> Iterator[None]:
    """Run with none of the caller's atlas-config/Azure settings, plus ``extra``; restore afterwards."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(_FOREIGN_PREFIXES) or name in _SECRET_ENV_NAMES or name == "NODE_ENV":
            del os.environ[name]
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
