"""OpenTelemetry metrics for atlas-config's telemetry events (install ``atlas-config[otel]``).

One call turns every ``TelemetryEvent`` into OpenTelemetry metrics, so cache
hits, fetches, retries, stale serves and breaker trips reach Azure Monitor,
Prometheus or any backend through the app's own OpenTelemetry setup. Only
``opentelemetry-api`` is needed here; the SDK and exporter are the app's choice.

Example::

    from atlas_config import otel

    otel.instrument()  # after your MeterProvider is configured (e.g. configure_azure_monitor())

Metrics (``secret.key`` is the allowlisted key's name, never a value; ``secret.source`` is
where the value came from; ``error.type`` the exception class on failures):

==================================  ==============  =========================================
``atlas_config.cache.hits``         Counter         Secret.Cache.Hit
``atlas_config.cache.misses``       Counter         Secret.Cache.Miss
``atlas_config.cache.clears``       Counter         Secret.Cache.Clear
``atlas_config.cache.stale_served`` Counter         Secret.Cache.Stale
``atlas_config.fetch.successes``    Counter         Secret.Fetch.Success
``atlas_config.fetch.failures``     Counter         Secret.Fetch.Failure
``atlas_config.fetch.retries``      Counter         Secret.Fetch.Retry
``atlas_config.fetch.fallbacks``    Counter         Secret.Fetch.Fallback
``atlas_config.rotations``          Counter         Secret.Rotation.Detected
``atlas_config.expiry.warnings``    Counter         Secret.Expiry.Warning
``atlas_config.circuit.open``       UpDownCounter   1 while a vault's breaker is open (``vault.url``)
``atlas_config.fetch.duration``     Histogram (s)   fetch time, with ``outcome`` success/failure
==================================  ==============  =========================================
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ._telemetry import TelemetryEvent, add_telemetry_handler, remove_telemetry_handler

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider, UpDownCounter

__all__ = ["OpenTelemetryHandler", "instrument", "uninstrument"]

INSTALL_HINT: Final = "pip install 'atlas-config[otel]'"

#: Event name -> (counter name, description).
COUNTERS: Final[Mapping[str, tuple[str, str]]] = {
    "Secret.Cache.Hit": ("atlas_config.cache.hits", "Reads served from the in-memory cache"),
    "Secret.Cache.Miss": ("atlas_config.cache.misses", "Reads that had to resolve the secret"),
    "Secret.Cache.Clear": ("atlas_config.cache.clears", "Times the cache was emptied"),
    "Secret.Cache.Stale": (
        "atlas_config.cache.stale_served",
        "Reads served an expired value because the source failed transiently",
    ),
    "Secret.Fetch.Success": ("atlas_config.fetch.successes", "Secrets fetched from their source"),
    "Secret.Fetch.Failure": (
        "atlas_config.fetch.failures",
        "Key Vault resolutions that failed after retries",
    ),
    "Secret.Fetch.Retry": ("atlas_config.fetch.retries", "Key Vault attempts after the first"),
    "Secret.Fetch.Fallback": (
        "atlas_config.fetch.fallbacks",
        "Development reads that fell back to env/.env because Key Vault failed",
    ),
    "Secret.Rotation.Detected": ("atlas_config.rotations", "Refreshes that returned a new version"),
    "Secret.Expiry.Warning": (
        "atlas_config.expiry.warnings",
        "Fetched secrets close to their Key Vault expiry",
    ),
}

# Fetch durations are short: the SDK's default buckets (0, 5, 10, ... 10000) are meant for
# milliseconds. These are OpenTelemetry's HTTP client duration buckets, in seconds.
_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def _import_metrics() -> Any:
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ImportError(f"atlas_config.otel needs the OpenTelemetry API: {INSTALL_HINT}") from exc
    return metrics


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atlas-config")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return None


def _attributes(event: TelemetryEvent) -> dict[str, str]:
    """Low-cardinality attributes: key, source, error type. Never a value, never a version id."""
    attributes = {}
    if event.secret_key is not None:
        attributes["secret.key"] = event.secret_key
    if event.source is not None:
        attributes["secret.source"] = event.source
    if event.error_type is not None:
        attributes["error.type"] = event.error_type
    return attributes


class OpenTelemetryHandler:
    """A telemetry handler that records each ``TelemetryEvent`` as OpenTelemetry metrics.

    ``meter_provider`` defaults to the global one (``opentelemetry.metrics.get_meter_provider()``).
    Register it with ``add_telemetry_handler``, or let :func:`instrument` do it.

    Example::

        from opentelemetry.sdk.metrics import MeterProvider
        from atlas_config import add_telemetry_handler
        from atlas_config.otel import OpenTelemetryHandler

        add_telemetry_handler(OpenTelemetryHandler(MeterProvider(metric_readers=[reader])))
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        metrics = _import_metrics()
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter("atlas_config", _version())
        self._counters: dict[str, Counter] = {
            event: meter.create_counter(name, unit="{event}", description=description)
            for event, (name, description) in COUNTERS.items()
        }
        self._open: UpDownCounter = meter.create_up_down_counter(
            "atlas_config.circuit.open",
            unit="{breaker}",
            description="1 while the vault's circuit breaker is open",
        )
        self._duration: Histogram = self._histogram(meter)

    @staticmethod
    def _histogram(meter: Any) -> Histogram:
        name, unit, description = "atlas_config.fetch.duration", "s", "Duration of Key Vault fetches"
        try:
            histogram: Histogram = meter.create_histogram(
                name,
                unit=unit,
                description=description,
                explicit_bucket_boundaries_advisory=_BUCKETS,
            )
        except TypeError:  # opentelemetry-api before bucket advice; the app's View can set buckets
            histogram = meter.create_histogram(name, unit=unit, description=description)
        return histogram

    def __call__(self, event: TelemetryEvent) -> None:
        """Record ``event``; called by atlas-config on the reading thread."""
        attributes = _attributes(event)
        counter = self._counters.get(event.name)
        if counter is not None:
            counter.add(1, attributes)
        if event.name in ("Secret.Circuit.Open", "Secret.Circuit.Close"):
            delta = 1 if event.name == "Secret.Circuit.Open" else -1
            self._open.add(delta, {"vault.url": event.detail or "unknown"})
        elif event.duration_ms is not None and event.name in ("Secret.Fetch.Success", "Secret.Fetch.Failure"):
            outcome = "success" if event.name == "Secret.Fetch.Success" else "failure"
            self._duration.record(event.duration_ms / 1000, {**attributes, "outcome": outcome})


_lock = threading.Lock()
_installed: OpenTelemetryHandler | None = None


def instrument(meter_provider: MeterProvider | None = None) -> OpenTelemetryHandler:
    """Record atlas-config's telemetry as OpenTelemetry metrics; returns the registered handler.

    Calling it again replaces the previous handler (no double counting). Call it after the app's
    OpenTelemetry setup, or pass ``meter_provider`` explicitly.

    Example::

        from azure.monitor.opentelemetry import configure_azure_monitor
        from atlas_config import otel

        configure_azure_monitor()
        otel.instrument()
    """
    global _installed
    handler = OpenTelemetryHandler(meter_provider)
    with _lock:
        if _installed is not None:
            remove_telemetry_handler(_installed)
        _installed = handler
        add_telemetry_handler(handler)
    return handler


def uninstrument() -> None:
    """Stop recording metrics (the handler registered by :func:`instrument`); safe to call twice."""
    global _installed
    with _lock:
        if _installed is not None:
            remove_telemetry_handler(_installed)
        _installed = None
