"""pytest fixtures for apps that use atlas-config (registered through the ``pytest11`` entry point).

``keyvault_emulator`` starts an emulator and points this process at it by
``KEYVAULT_URL``; ``production_keyvault`` does it the production way:
``ATLAS_ENV=production``, ``KEYVAULT_NAME`` routed to the emulator, managed
identity, and challenge-resource verification on. Both reset atlas-config's
global state before and after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._emulator import KeyVaultEmulator

# Variables that would steer DefaultAzureCredential or atlas-config away from
# the emulator if the developer's shell happens to set them.
_CLEARED = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_TOKEN_CREDENTIALS",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "KEYVAULT_NAME",
    "KEYVAULT_URL",
    "ATLAS_ENV",
    "NODE_ENV",
    "ATLAS_SECRETS_DIR",
)


def _start(
    monkeypatch: pytest.MonkeyPatch, vault_name: str | None, production: bool
) -> Iterator[KeyVaultEmulator]:
    from . import KeyVaultEmulator, reset

    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    reset()
    with KeyVaultEmulator() as kv:
        env = kv.environ(vault_name=vault_name) if vault_name else kv.environ()
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        if production:
            monkeypatch.setenv("ATLAS_ENV", "production")
        try:
            yield kv
        finally:
            reset()


@pytest.fixture
def keyvault_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyVaultEmulator]:
    """A running Key Vault emulator; this process reads secrets from it through ``KEYVAULT_URL``."""
    yield from _start(monkeypatch, None, production=False)


@pytest.fixture
def production_keyvault(monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyVaultEmulator]:
    """Production as in Azure: ``ATLAS_ENV=production``, ``KEYVAULT_NAME=atlas-test`` routed to the emulator.

    Challenge-resource verification stays on, as against a real vault.
    """
    yield from _start(monkeypatch, "atlas-test", production=True)
