"""AtlasSecrets: typed fields, lazy resolution, masking, prefetch, per-secret options, subclassing."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from pydantic import SecretStr, ValidationError

import atlas_config
from atlas_config import AtlasSecret, AtlasSecrets, PrefetchError, SecretNotFoundError, SecretOptions
from atlas_config.testing import Fault, KeyVaultEmulator


def vault_gets(kv: KeyVaultEmulator) -> int:
    return len(kv.secret_requests())


def test_construction_fetches_nothing(seeded: KeyVaultEmulator) -> None:
    """AtlasSecrets() validates configuration but makes no request until a value is read."""
    settings = AtlasSecrets()
    assert vault_gets(seeded) == 0
    assert seeded.token_requests() == []
    settings.signing_secret.get_secret_value()
    assert vault_gets(seeded) == 1


def test_typed_access_and_masking(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """Fields are SecretStr subclasses; str, repr, model_dump and model_dump_json never reveal or fetch."""
    settings = AtlasSecrets()
    assert isinstance(settings.signing_secret, SecretStr)
    text = " ".join(
        [
            str(settings),
            repr(settings),
            str(settings.signing_secret),
            repr(settings.signing_secret),
            str(settings.model_dump()),
            settings.model_dump_json(),
        ]
    )
    assert "**********" in text
    assert vault_gets(seeded) == 0
    assert json.loads(settings.model_dump_json())["signing_secret"] == "**********"
    assert settings.signing_secret.get_secret_value() == canaries["signing-secret"]
    later = " ".join([repr(settings), settings.model_dump_json(), str(settings.model_dump())])
    assert canaries["signing-secret"] not in later


def test_json_schema_marks_secrets_write_only() -> None:
    """The model's JSON schema shows the secrets as write-only password strings."""
    schema = AtlasSecrets.model_json_schema()
    field = schema["properties"]["signing_secret"]
    assert (field["type"], field["writeOnly"], field["format"]) == ("string", True, "password")


def test_prefetch_resolves_all_concurrently(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """prefetch() resolves every field once and returns self."""
    settings = AtlasSecrets()
    assert settings.prefetch() is settings
    assert vault_gets(seeded) == 3
    assert settings.model_provider_api_key.get_secret_value() == canaries["model-provider-api-key"]
    assert vault_gets(seeded) == 3


def test_prefetch_reports_every_failure(seeded: KeyVaultEmulator) -> None:
    """A prefetch with two missing secrets raises one PrefetchError naming both keys."""
    seeded.delete_secret("signing-secret")
    seeded.delete_secret("model-provider-api-key")
    with pytest.raises(PrefetchError) as info:
        AtlasSecrets().prefetch()
    assert set(info.value.errors) == {"signing-secret", "model-provider-api-key"}
    assert all(isinstance(e, SecretNotFoundError) for e in info.value.errors.values())
    assert "signing-secret" in str(info.value) and "model-provider-api-key" in str(info.value)


def test_aprefetch(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """aprefetch() resolves every field through the aio client."""

    async def main() -> str:
        try:
            settings = await AtlasSecrets().aprefetch()
            return await settings.signing_secret.aget_secret_value()
        finally:
            await atlas_config.aclose()

    assert asyncio.run(main()) == canaries["signing-secret"]
    assert vault_gets(seeded) == 3


def test_prefetch_env_flag_fails_construction(
    seeded: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATLAS_SECRETS_PREFETCH=true resolves at construction; a failure is a ValidationError naming the key."""
    monkeypatch.setenv("ATLAS_SECRETS_PREFETCH", "true")
    AtlasSecrets()
    assert vault_gets(seeded) == 3
    atlas_config.clear_secret_cache()
    seeded.delete_secret("signing-secret")
    with pytest.raises(ValidationError, match="signing-secret"):
        AtlasSecrets()


def test_bad_configuration_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile KEYVAULT_URL makes AtlasSecrets() raise a ValidationError before any I/O."""
    monkeypatch.setenv("KEYVAULT_URL", "https://x.vault.azure.net@evil.example")
    with pytest.raises(ValidationError, match="KEYVAULT_URL"):
        AtlasSecrets()


def test_subclass_in_production_loads_app_fields_from_env(
    seeded_production: KeyVaultEmulator, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """In production an app's own fields still load from env and .env; secrets come from the vault only."""

    class Settings(AtlasSecrets):
        port: int = 8000
        queue_name: str = "default"

    (tmp_path / ".env").write_text("QUEUE_NAME=orders\nSIGNING_SECRET=from-dotenv\n")
    monkeypatch.setenv("PORT", "9443")
    monkeypatch.setenv("SIGNING_SECRET", "from-env")
    settings = Settings()
    assert (settings.port, settings.queue_name) == (9443, "orders")
    assert settings.signing_secret.get_secret_value() == canaries["signing-secret"]


def test_app_field_validation_errors_hide_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad app field fails with a ValidationError that does not echo the input."""

    class Settings(AtlasSecrets):
        port: int = 8000

    monkeypatch.setenv("PORT", "not-a-port-canary")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "not-a-port-canary" not in str(info.value)


def test_init_kwargs_give_fixed_values(seeded: KeyVaultEmulator) -> None:
    """AtlasSecrets(signing_secret="x") holds a fixed value, handy in tests, and makes no request for it."""
    settings = AtlasSecrets(signing_secret="fixed-value")  # type: ignore[arg-type]
    assert settings.signing_secret.get_secret_value() == "fixed-value"
    assert settings.signing_secret.secret_key is None
    assert vault_gets(seeded) == 0


def test_per_secret_options(seeded: KeyVaultEmulator) -> None:
    """atlas_secret_options sets a per-secret TTL; others keep the process default."""

    class Settings(AtlasSecrets):
        atlas_secret_options = {"signing-secret": SecretOptions(ttl=timedelta(seconds=42), max_attempts=1)}

    settings = Settings()
    opts = settings.signing_secret.options
    assert opts is not None and opts.ttl == 42.0 and opts.max_attempts == 1
    other = settings.model_provider_api_key.options
    assert other is not None and other.ttl == 300.0 and other.max_attempts == 3


def test_unknown_option_key_is_refused() -> None:
    """atlas_secret_options naming a key that is not allowlisted fails construction."""

    class Settings(AtlasSecrets):
        atlas_secret_options = {"cosmos-primary-key": SecretOptions(ttl=1)}

    with pytest.raises(ValidationError, match="cosmos-primary-key"):
        Settings()


def test_lazy_fields_compare_without_fetching(seeded: KeyVaultEmulator) -> None:
    """Equality and hashing of lazy fields use the key and options, never the value."""
    a, b = AtlasSecrets(), AtlasSecrets()
    assert a.signing_secret == b.signing_secret
    assert hash(a.signing_secret) == hash(b.signing_secret)
    assert a.signing_secret != a.model_provider_api_key
    assert vault_gets(seeded) == 0
    assert AtlasSecret("x") == AtlasSecret("x") and AtlasSecret("x") != AtlasSecret("y")


def test_get_secret_options_are_validated(seeded: KeyVaultEmulator) -> None:
    """Malformed per-call options fail with ConfigurationError before any request."""
    for kwargs in (
        {"max_attempts": 0},
        {"cache_ttl": -1},
        {"initial_retry_delay": float("nan")},
        {"version": "../x"},
        {"max_attempts": True},
    ):
        with pytest.raises(atlas_config.ConfigurationError):
            atlas_config.get_secret("signing-secret", **kwargs)  # type: ignore[arg-type]
    assert seeded.requests == []


def test_cache_ttl_is_the_oldest_value_accepted(seeded: KeyVaultEmulator) -> None:
    """cache_ttl=0 always refetches; the default serves from cache."""
    atlas_config.get_secret("signing-secret")
    atlas_config.get_secret("signing-secret")
    assert vault_gets(seeded) == 1
    atlas_config.get_secret("signing-secret", cache_ttl=0)
    assert vault_gets(seeded) == 2


def test_clear_and_stats(seeded: KeyVaultEmulator) -> None:
    """clear_secret_cache() empties the cache; stats list names only, with counters."""
    atlas_config.get_secret("signing-secret")
    atlas_config.get_secret("signing-secret")
    stats = atlas_config.get_secret_cache_stats()
    assert (stats.size, stats.keys, stats.hits, stats.misses, stats.fetch_successes) == (
        1,
        ["signing-secret"],
        1,
        1,
        1,
    )
    atlas_config.clear_secret_cache()
    assert atlas_config.get_secret_cache_stats().size == 0
    atlas_config.get_secret("signing-secret")
    assert vault_gets(seeded) == 2


def test_sdk_retry_is_off(seeded: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """max_attempts=1 sends exactly one GET even on a 503: the SDK's own retry policy is off."""
    seeded.inject(Fault(status=503))
    with pytest.raises(atlas_config.SecretFetchError):
        atlas_config.get_secret("signing-secret", max_attempts=1)
    assert vault_gets(seeded) == 1
