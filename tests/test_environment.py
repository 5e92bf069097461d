"""The environment decision: production flags, vault name and URL, process defaults."""

from __future__ import annotations

import pytest

from atlas_config import ConfigurationError, ProductionGuardError
from atlas_config._environment import load_environment


@pytest.mark.parametrize(
    ("env", "production"),
    [
        ({}, False),
        ({"ATLAS_ENV": "production"}, True),
        ({"NODE_ENV": "production"}, True),
        ({"ATLAS_ENV": "  PRODUCTION \n"}, True),
        ({"NODE_ENV": "Production"}, True),
        ({"ATLAS_ENV": "development", "NODE_ENV": "production"}, True),
        ({"ATLAS_ENV": "production", "NODE_ENV": "development"}, True),
        ({"ATLAS_ENV": "development"}, False),
        ({"NODE_ENV": "test"}, False),
        ({"ATLAS_ENV": ""}, False),
        ({"ATLAS_ENV": "   "}, False),
    ],
)
def test_production_flags(env: dict[str, str], production: bool) -> None:
    """ATLAS_ENV or NODE_ENV saying production (trimmed, any case) turns production on; either wins."""
    env = {**env, "KEYVAULT_NAME": "kv-abc123"}
    assert load_environment(env).production is production


@pytest.mark.parametrize(
    "flag", ["prod", "prd", "live", "true", "1", "production1", "'production'", "pro duction"]
)
def test_odd_production_flags_are_refused(flag: str) -> None:
    """An unrecognised flag is an error naming the variable and the fix, never a silent 'not production'."""
    with pytest.raises(ConfigurationError, match=r"ATLAS_ENV=.*set it to 'production'"):
        load_environment({"ATLAS_ENV": flag})


def test_production_without_vault_is_a_guard_error() -> None:
    """Production with no vault and no mounted secrets refuses to start, naming KEYVAULT_NAME."""
    with pytest.raises(ProductionGuardError, match="KEYVAULT_NAME"):
        load_environment({"ATLAS_ENV": "production"})


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 25,
        "1vault",
        "-vault",
        "vault-",
        "va--ult",
        "va_ult",
        "evil.example#",
        "a@evil",
        "kv abc",
        "kv/abc",
        "kv.abc",
        "ķv-abc",
        "kv-\nabc",
        "kv-abc\x00",
    ],
)
def test_hostile_vault_names_are_refused(name: str) -> None:
    """KEYVAULT_NAME must be a valid vault name, so it cannot steer the token to another host."""
    with pytest.raises(ConfigurationError, match="KEYVAULT_NAME"):
        load_environment({"KEYVAULT_NAME": name})


def test_vault_name_builds_the_public_cloud_url() -> None:
    """KEYVAULT_NAME=kv-abc123 means https://kv-abc123.vault.azure.net with verification on."""
    env = load_environment({"KEYVAULT_NAME": "KV-abc123"})
    assert env.vault_url == "https://kv-abc123.vault.azure.net"
    assert env.verify_challenge_resource


@pytest.mark.parametrize(
    "url",
    [
        "https://x.vault.azure.net@evil.example",
        "https://evil.example#.vault.azure.net",
        "https://evil.example?.vault.azure.net",
        "https://evil.example\\.vault.azure.net",
        "https://x.vault.azure.net.evil.example",
        "https://vault.azure.net",
        "https://x.vault.azure.net/secrets",
        "http://x.vault.azure.net",
        "ftp://x.vault.azure.net",
        "x.vault.azure.net",
        "https://x.vault.azure.net:99999",
        "https://-x.vault.azure.net",
        "https://x .vault.azure.net",
        "https://evil.example",
        "https://",
        "//x.vault.azure.net",
    ],
)
def test_hostile_vault_urls_are_refused(url: str) -> None:
    """KEYVAULT_URL must be a plain https URL on a Key Vault domain; anything else fails before I/O."""
    with pytest.raises(ConfigurationError, match="KEYVAULT_URL"):
        load_environment({"KEYVAULT_URL": url})


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://kv-abc.vault.azure.net", "https://kv-abc.vault.azure.net"),
        ("https://KV-abc.vault.azure.net/", "https://kv-abc.vault.azure.net"),
        ("https://kv-abc.vault.azure.net:443", "https://kv-abc.vault.azure.net"),
        ("https://kv-abc.vault.azure.cn", "https://kv-abc.vault.azure.cn"),
        ("https://kv-abc.vault.usgovcloudapi.net", "https://kv-abc.vault.usgovcloudapi.net"),
    ],
)
def test_sovereign_and_public_urls_are_accepted(url: str, normalised: str) -> None:
    """Public and sovereign-cloud vault URLs are accepted and normalised, with verification on."""
    env = load_environment({"KEYVAULT_URL": url, "ATLAS_ENV": "production"})
    assert env.vault_url == normalised
    assert env.verify_challenge_resource


def test_loopback_url_is_development_only() -> None:
    """A loopback vault (the emulator) works in development and is refused in production."""
    env = load_environment({"KEYVAULT_URL": "https://localhost:8443"})
    assert env.vault_url == "https://localhost:8443"
    assert not env.verify_challenge_resource
    with pytest.raises(ProductionGuardError, match="local vault"):
        load_environment({"KEYVAULT_URL": "https://localhost:8443", "ATLAS_ENV": "production"})


def test_name_and_url_must_agree() -> None:
    """KEYVAULT_NAME and KEYVAULT_URL naming different vaults is an error; the same vault is fine."""
    with pytest.raises(ConfigurationError, match="different vaults"):
        load_environment({"KEYVAULT_NAME": "kv-one", "KEYVAULT_URL": "https://kv-two.vault.azure.net"})
    env = load_environment({"KEYVAULT_NAME": "kv-one", "KEYVAULT_URL": "https://kv-one.vault.azure.net"})
    assert env.vault_url == "https://kv-one.vault.azure.net"


def test_defaults_match_the_seed() -> None:
    """5-minute TTL, 3 attempts and a 1 s initial delay, as in the TypeScript helper."""
    d = load_environment({}).defaults
    assert (d.cache_ttl, d.max_attempts, d.retry_delay) == (300.0, 3, 1.0)
    assert (d.max_stale, d.breaker_threshold, d.breaker_cooldown) == (3600.0, 5, 30.0)


def test_defaults_from_env() -> None:
    """ATLAS_SECRETS_* variables set the process defaults, including per-key TTL and version."""
    d = load_environment(
        {
            "ATLAS_SECRETS_CACHE_TTL": "60",
            "ATLAS_SECRETS_MAX_ATTEMPTS": "5",
            "ATLAS_SECRETS_RETRY_DELAY": "0.5",
            "ATLAS_SECRETS_CACHE_TTL__SIGNING_SECRET": "10",
            "ATLAS_SECRETS_VERSION__MODEL_PROVIDER_API_KEY": "A" * 32,
        }
    ).defaults
    assert (d.cache_ttl, d.max_attempts, d.retry_delay) == (60.0, 5, 0.5)
    assert d.ttl_for("signing-secret") == 10.0
    assert d.ttl_for("service-bus-connection-string") == 60.0
    assert d.key_version == {"model-provider-api-key": "A" * 32}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ATLAS_SECRETS_CACHE_TTL", "five"),
        ("ATLAS_SECRETS_CACHE_TTL", "-1"),
        ("ATLAS_SECRETS_CACHE_TTL", "nan"),
        ("ATLAS_SECRETS_CACHE_TTL", "inf"),
        ("ATLAS_SECRETS_MAX_ATTEMPTS", "0"),
        ("ATLAS_SECRETS_MAX_ATTEMPTS", "2.5"),
        ("ATLAS_SECRETS_MAX_ATTEMPTS", "1000"),
        ("ATLAS_SECRETS_TIMEOUT", "0"),
        ("ATLAS_SECRETS_PREFETCH", "maybe"),
        ("ATLAS_SECRETS_CACHE_TTL__COSMOS_PRIMARY_KEY", "10"),
        ("ATLAS_SECRETS_VERSION__SIGNING_SECRET", "../../other"),
    ],
)
def test_malformed_settings_name_the_variable(name: str, value: str) -> None:
    """A malformed ATLAS_SECRETS_* value fails with a ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError, match=name.split("__")[0]):
        load_environment({name: value})
