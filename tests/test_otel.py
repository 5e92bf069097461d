"""atlas_config.otel: real reads against the emulator become OpenTelemetry metrics, never values."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from atlas_config import get_secret, otel
from atlas_config.testing import FakeClock, Fault, KeyVaultEmulator


@pytest.fixture
def reader(keyvault_emulator: KeyVaultEmulator) -> Iterator[InMemoryMetricReader]:
    """An in-memory metric reader atlas-config is instrumented with, after the emulator fixture's reset()."""
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader])
    otel.instrument(meter_provider=provider)
    yield metric_reader
    otel.uninstrument()
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Every data point by metric name: (attributes, value or histogram point)."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", point)
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


def total(reader: InMemoryMetricReader, name: str, **attributes: str) -> int:
    """The sum of a counter's points whose attributes include ``attributes`` (``_`` stands for ``.``)."""
    wanted = {k.replace("_", "."): v for k, v in attributes.items()}
    return sum(
        value
        for attrs, value in points(reader).get(name, [])
        if all(attrs.get(k) == v for k, v in wanted.items())
    )


def test_reads_become_counters_and_a_duration(reader: InMemoryMetricReader, seeded: KeyVaultEmulator) -> None:
    """A miss, a Key Vault fetch and a hit are counted per secret.key, and the fetch time is recorded."""
    get_secret("signing-secret")
    get_secret("signing-secret")
    assert total(reader, "atlas_config.cache.misses", secret_key="signing-secret") == 1
    assert (
        total(reader, "atlas_config.fetch.successes", secret_key="signing-secret", secret_source="keyvault")
        == 1
    )
    assert total(reader, "atlas_config.cache.hits", secret_key="signing-secret") == 1
    [(attrs, histogram)] = points(reader)["atlas_config.fetch.duration"]
    assert attrs == {"secret.key": "signing-secret", "secret.source": "keyvault", "outcome": "success"}
    assert histogram.count == 1 and histogram.sum > 0


def test_outage_counts_retries_failure_and_stale_serve(
    reader: InMemoryMetricReader, seeded: KeyVaultEmulator, fast_retries: None
) -> None:
    """Three 503s after the TTL give two retries, one failure with error.type and one stale serve."""
    with FakeClock() as clock:
        get_secret("model-provider-api-key")
        clock.advance(301)
        seeded.inject(Fault(status=503), Fault(status=503), Fault(status=503))
        get_secret("model-provider-api-key")
    key = "model-provider-api-key"
    assert total(reader, "atlas_config.fetch.retries", secret_key=key) == 2
    assert total(reader, "atlas_config.fetch.failures", secret_key=key, error_type="SecretFetchError") == 1
    assert total(reader, "atlas_config.cache.stale_served", secret_key=key) == 1
    outcomes = {attrs["outcome"] for attrs, _ in points(reader)["atlas_config.fetch.duration"]}
    assert outcomes == {"success", "failure"}


def test_breaker_state_goes_up_and_back_down(
    reader: InMemoryMetricReader,
    seeded: KeyVaultEmulator,
    monkeypatch: pytest.MonkeyPatch,
    fast_retries: None,
) -> None:
    """The circuit.open UpDownCounter is 1 while the vault's breaker is open and 0 after it closes."""
    monkeypatch.setenv("ATLAS_SECRETS_BREAKER_THRESHOLD", "1")
    monkeypatch.setenv("ATLAS_SECRETS_MAX_ATTEMPTS", "1")
    with FakeClock() as clock:
        seeded.inject(Fault(status=503))
        with pytest.raises(Exception, match="503"):
            get_secret("signing-secret")
        assert total(reader, "atlas_config.circuit.open", vault_url=seeded.vault_url) == 1
        clock.advance(31)
        get_secret("signing-secret")  # the probe succeeds and closes the breaker
    assert total(reader, "atlas_config.circuit.open", vault_url=seeded.vault_url) == 0


def test_fallback_rotation_and_clear_are_counted(
    reader: InMemoryMetricReader,
    seeded: KeyVaultEmulator,
    monkeypatch: pytest.MonkeyPatch,
    fast_retries: None,
) -> None:
    """A development fallback to env, a rotation after the TTL and a cache clear each reach their counter."""
    monkeypatch.setenv("SIGNING_SECRET", "local-value")
    seeded.inject(Fault(status=503), Fault(status=503), Fault(status=503))
    get_secret("signing-secret")
    assert (
        total(reader, "atlas_config.fetch.fallbacks", secret_key="signing-secret", secret_source="env") == 1
    )
    with FakeClock() as clock:
        get_secret("service-bus-connection-string")
        seeded.set_secret("service-bus-connection-string", "rotated")
        clock.advance(301)
        get_secret("service-bus-connection-string")
    assert total(reader, "atlas_config.rotations", secret_key="service-bus-connection-string") == 1
    from atlas_config import clear_secret_cache

    clear_secret_cache()
    assert total(reader, "atlas_config.cache.clears") == 1


def test_no_value_reaches_any_metric(
    reader: InMemoryMetricReader, seeded: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """The exported metrics (names, attributes, everything) contain none of the canary values."""
    for key in canaries:
        get_secret(key)
        get_secret(key)
    exported = reader.get_metrics_data()
    assert exported is not None
    text = exported.to_json()
    assert "secret.key" in text
    for value in canaries.values():
        assert value not in text


def test_instrument_twice_replaces_and_uninstrument_stops(seeded: KeyVaultEmulator) -> None:
    """A second instrument() replaces the first handler (no double counts); uninstrument() stops recording."""
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader])
    otel.instrument(meter_provider=provider)
    otel.instrument(meter_provider=provider)
    get_secret("signing-secret")
    assert total(metric_reader, "atlas_config.cache.misses") == 1
    otel.uninstrument()
    otel.uninstrument()
    get_secret("signing-secret")
    assert total(metric_reader, "atlas_config.cache.hits") == 0
    provider.shutdown()


def test_missing_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without opentelemetry-api the handler fails with an ImportError naming atlas-config[otel]."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'atlas-config\[otel\]'"):
        otel.OpenTelemetryHandler()


def test_importing_the_module_does_not_import_opentelemetry() -> None:
    """``import atlas_config.otel`` stays light: opentelemetry is imported only when a handler is built."""
    code = "import sys, atlas_config.otel; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
