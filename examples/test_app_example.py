"""How an app tests its secrets with atlas-config's pytest fixtures (``pip install 'atlas-config[testing]'``).

Run it::

    python -m pytest examples/test_app_example.py

The fixtures come from the plugin atlas-config registers with pytest; nothing to import or
configure. ``keyvault_emulator`` is a local Key Vault this process reads through ``KEYVAULT_URL``;
``production_keyvault`` is the production path (``ATLAS_ENV=production``, ``KEYVAULT_NAME``,
managed identity). Both reset atlas-config's cache before and after each test.
"""

from __future__ import annotations

import pytest
from minimal_app import Settings  # the app under test: examples/minimal_app.py

from atlas_config import PrefetchError
from atlas_config.testing import FakeClock, Fault, KeyVaultEmulator

TEST_SECRETS = {
    "service-bus-connection-string": "Endpoint=sb://test.servicebus.windows.net/;SharedAccessKey=test",
    "model-provider-api-key": "test-model-key",
    "signing-secret": "test-signing-secret",
}


@pytest.fixture
def vault(keyvault_emulator: KeyVaultEmulator) -> KeyVaultEmulator:
    """The emulator holding this app's test secrets."""
    for name, value in TEST_SECRETS.items():
        keyvault_emulator.set_secret(name, value)
    return keyvault_emulator


def test_settings_come_from_the_vault(vault: KeyVaultEmulator) -> None:
    """The app's settings read each secret from the vault, and its own field from env."""
    settings = Settings().prefetch()
    assert settings.signing_secret.get_secret_value() == "test-signing-secret"
    assert settings.port == 8000


def test_production_reads_the_vault_by_name(production_keyvault: KeyVaultEmulator) -> None:
    """In production the app finds the vault by KEYVAULT_NAME and authenticates with managed identity."""
    production_keyvault.set_secret("signing-secret", "prod-signing-secret")
    assert Settings().signing_secret.get_secret_value() == "prod-signing-secret"


def test_start_up_fails_fast_when_a_secret_is_missing(keyvault_emulator: KeyVaultEmulator) -> None:
    """prefetch() names every secret the vault does not have."""
    keyvault_emulator.set_secret("signing-secret", "only-this-one")
    with pytest.raises(PrefetchError) as caught:
        Settings().prefetch()
    assert set(caught.value.errors) == {"service-bus-connection-string", "model-provider-api-key"}


def test_an_outage_is_served_from_cache(vault: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the TTL, a Key Vault outage serves the last good value instead of failing the request."""
    monkeypatch.setenv("ATLAS_SECRETS_RETRY_DELAY", "0.001")
    with FakeClock() as clock:
        settings = Settings().prefetch()
        clock.advance(301)
        vault.inject(Fault(status=503), Fault(status=503), Fault(status=503))
        assert settings.signing_secret.get_secret_value() == "test-signing-secret"


def test_fixed_values_need_no_vault() -> None:
    """Unit tests that do not care where secrets come from can pass them in directly."""
    settings = Settings(
        service_bus_connection_string="Endpoint=sb://unit/",
        model_provider_api_key="unit-key",
        signing_secret="unit-signing",
    )
    assert settings.signing_secret.get_secret_value() == "unit-signing"
