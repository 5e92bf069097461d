"""The allowlist: exact keys only, refused before any I/O, with messages that never echo a value."""

from __future__ import annotations

import asyncio

import pytest

from atlas_config import ALLOWED_SECRET_KEYS, SecretNotAllowedError, aget_secret, get_secret
from atlas_config.testing import KeyVaultEmulator

NEAR_MISSES = [
    "SIGNING-SECRET",
    "signing_secret",
    "Signing-Secret",
    " signing-secret",
    "signing-secret ",
    "signing-secret\n",
    "signing-secret/",
    "../signing-secret",
    "signing-secret/../other",
    "signing-secret?api-version=1",
    "signing-secret#x",
    "signing%2Dsecret",
    "signing\u2010secret",  # unicode hyphen
    "ѕigning-secret",  # noqa: RUF001 - a Cyrillic s, on purpose
    "signing-secret\x00",
    "",
    "cosmos-primary-key",
    "storage-account-key",
]


def test_allowlist_is_the_seed_allowlist() -> None:
    """The three keys of the seed's allowlist, in its order, and nothing else."""
    assert ALLOWED_SECRET_KEYS == (
        "service-bus-connection-string",
        "model-provider-api-key",
        "signing-secret",
    )


@pytest.mark.parametrize("key", NEAR_MISSES)
def test_near_misses_are_refused_before_io(seeded: KeyVaultEmulator, key: str) -> None:
    """A near-miss key raises SecretNotAllowedError and no request reaches the vault."""
    with pytest.raises(SecretNotAllowedError):
        get_secret(key)
    with pytest.raises(SecretNotAllowedError):
        asyncio.run(aget_secret(key))
    assert seeded.requests == []


@pytest.mark.parametrize("key", [None, 42, b"signing-secret", ["signing-secret"], object()])
def test_non_str_keys_are_refused(key: object) -> None:
    """Keys that are not str are refused with SecretNotAllowedError, not a TypeError."""
    with pytest.raises(SecretNotAllowedError, match="value of type"):
        get_secret(key)  # type: ignore[arg-type]


def test_str_subclass_is_refused() -> None:
    """A str subclass could override __eq__/__hash__, so only exact str passes."""

    class Sneaky(str):
        pass

    with pytest.raises(SecretNotAllowedError):
        get_secret(Sneaky("signing-secret"))


def test_cosmos_key_says_managed_identity() -> None:
    """The seed's stale example is refused with the reason: Cosmos DB uses Managed Identity."""
    with pytest.raises(SecretNotAllowedError, match="Managed Identity"):
        get_secret("cosmos-primary-key")


def test_near_miss_suggests_the_right_key() -> None:
    """A case or separator slip names the key that was probably meant."""
    with pytest.raises(SecretNotAllowedError, match="did you mean 'signing-secret'"):
        get_secret("SIGNING_SECRET")


def test_value_passed_as_key_is_not_echoed() -> None:
    """A secret value passed by mistake as the key does not appear in the error."""
    value = "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKey=abc+/="
    with pytest.raises(SecretNotAllowedError) as info:
        get_secret(value)
    assert value not in str(info.value)
    assert "SharedAccessKey" not in str(info.value)
