"""Reads through the real Azure SDK against the emulator: production path, retries, errors, fallback."""

from __future__ import annotations

import asyncio
import sys

import pytest

import atlas_config
from atlas_config import (
    AtlasSecrets,
    ProductionGuardError,
    SecretAccessDeniedError,
    SecretFetchError,
    SecretNotFoundError,
    TelemetryEvent,
    add_telemetry_handler,
    aget_secret,
    get_secret,
    get_secret_cache_stats,
)
from atlas_config.testing import Fault, KeyVaultEmulator


def gets(kv: KeyVaultEmulator, name: str = "signing-secret") -> int:
    """Authenticated GETs of one secret that reached the emulator (challenge round-trips excluded)."""
    return sum(1 for r in kv.secret_requests(name) if r.authenticated)


def events() -> list[TelemetryEvent]:
    seen: list[TelemetryEvent] = []
    add_telemetry_handler(seen.append)
    return seen


async def aget_and_close(key: str, **kwargs: object) -> str:
    try:
        return await aget_secret(key, **kwargs)  # type: ignore[arg-type]
    finally:
        await atlas_config.aclose()


def test_dev_reads_from_vault(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """With KEYVAULT_URL set, get_secret returns the vault's value through the real SDK."""
    assert get_secret("signing-secret") == canaries["signing-secret"]
    assert gets(seeded) == 1


def test_async_reads_from_vault(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """aget_secret returns the vault's value through the aio SDK client."""
    assert asyncio.run(aget_and_close("model-provider-api-key")) == canaries["model-provider-api-key"]
    assert gets(seeded, "model-provider-api-key") == 1


def test_production_reads_by_vault_name_with_verification(
    seeded_production: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """Production: KEYVAULT_NAME routed to the emulator, managed identity, challenge verification on."""
    env = atlas_config._resolver.RESOLVER.environment()
    assert env.production and env.verify_challenge_resource
    assert env.vault_url == "https://atlas-test.vault.azure.net"
    settings = AtlasSecrets()
    assert settings.signing_secret.get_secret_value() == canaries["signing-secret"]
    assert (
        asyncio.run(aget_and_close("service-bus-connection-string"))
        == canaries["service-bus-connection-string"]
    )


def test_production_ignores_env_values(
    seeded_production: KeyVaultEmulator, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """In production an env or .env value for an allowlisted key is never read, even if the vault fails."""
    monkeypatch.setenv("SIGNING_SECRET", "from-env")
    (tmp_path / ".env").write_text("MODEL_PROVIDER_API_KEY=from-dotenv\n")
    assert get_secret("signing-secret") == canaries["signing-secret"]
    seeded_production.delete_secret("model-provider-api-key")
    with pytest.raises(SecretNotFoundError):
        get_secret("model-provider-api-key")


def test_production_vault_failure_never_falls_back(
    seeded_production: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    """A vault outage in production raises SecretFetchError; the env value is not used."""
    monkeypatch.setenv("SIGNING_SECRET", "from-env")
    seeded_production.inject(*[Fault(status=503)] * 3)
    seen = events()
    with pytest.raises(SecretFetchError, match="503"):
        get_secret("signing-secret")
    assert not [e for e in seen if e.name == "Secret.Fetch.Fallback"]


def test_dev_vault_failure_falls_back_to_env(
    seeded: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    """Outside production, a vault failure falls back to env and says so with Secret.Fetch.Fallback."""
    monkeypatch.setenv("SIGNING_SECRET", "from-env")
    seeded.inject(*[Fault(status=503)] * 3)
    seen = events()
    assert get_secret("signing-secret") == "from-env"
    fallback = [e for e in seen if e.name == "Secret.Fetch.Fallback"]
    assert len(fallback) == 1
    assert fallback[0].source == "env" and fallback[0].error_type == "SecretFetchError"


def test_production_guard_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """AtlasSecrets() in production with no vault raises a ValidationError wrapping ProductionGuardError."""
    from pydantic import ValidationError

    monkeypatch.setenv("NODE_ENV", "production")
    monkeypatch.setenv("SIGNING_SECRET", "from-env")
    with pytest.raises(ValidationError, match="KEYVAULT_NAME") as info:
        AtlasSecrets()
    assert isinstance(info.value.errors()[0]["ctx"]["error"], ProductionGuardError)
    with pytest.raises(ProductionGuardError):
        get_secret("signing-secret")


@pytest.mark.parametrize(
    ("faults", "expected_gets", "ok"),
    [
        ([Fault(status=503)], 2, True),
        ([Fault(status=503)] * 2, 3, True),
        ([Fault(status=503)] * 3, 3, False),
        ([Fault(status=500), Fault(status=502), Fault(status=504)], 3, False),
        ([Fault(status=408)], 2, True),
        ([Fault(drop=True)], 2, True),
        ([Fault(drop=True)] * 3, 3, False),
        ([Fault(status=429, retry_after=0)], 2, True),
        ([Fault(status=404, code="SecretNotFound")], 1, False),
        ([Fault(status=403, code="ForbiddenByRbac")], 1, False),
        ([Fault(status=400, code="BadParameter")], 1, False),
    ],
)
def test_attempt_counts(
    seeded_production: KeyVaultEmulator, fast_retries: None, faults: list[Fault], expected_gets: int, ok: bool
) -> None:
    """max_attempts=3 means at most three GETs, retried only on transient failures (SDK retry off)."""
    seeded_production.inject(*faults)
    if ok:
        get_secret("signing-secret", max_attempts=3)
    else:
        with pytest.raises(atlas_config.AtlasConfigError):
            get_secret("signing-secret", max_attempts=3)
    assert gets(seeded_production) == expected_gets


@pytest.mark.parametrize("faults", [[Fault(status=503)], [Fault(drop=True)], [Fault(status=404)]])
def test_async_attempt_counts(seeded: KeyVaultEmulator, fast_retries: None, faults: list[Fault]) -> None:
    """The aio path retries exactly like the sync path."""
    seeded.inject(*faults)
    if faults[0].status == 404:
        with pytest.raises(SecretNotFoundError):
            asyncio.run(aget_and_close("signing-secret"))
        assert gets(seeded) == 1
    else:
        asyncio.run(aget_and_close("signing-secret"))
        assert gets(seeded) == 2


def test_retry_after_is_honoured(seeded: KeyVaultEmulator, fast_retries: None) -> None:
    """A 429 with Retry-After: 1 waits about a second before the next attempt."""
    seen = events()
    seeded.inject(Fault(status=429, retry_after=1))
    get_secret("signing-secret")
    fetch = next(e for e in seen if e.name == "Secret.Fetch.Success")
    assert fetch.attempt == 2
    assert fetch.duration_ms is not None and fetch.duration_ms >= 900


def test_not_found_and_disabled(seeded: KeyVaultEmulator) -> None:
    """404 is SecretNotFoundError; a disabled secret (403 SecretDisabled) is SecretAccessDeniedError."""
    seeded.delete_secret("signing-secret")
    with pytest.raises(SecretNotFoundError, match="404"):
        get_secret("signing-secret")
    seeded.set_secret("model-provider-api-key", "x", enabled=False)
    with pytest.raises(SecretAccessDeniedError, match="403"):
        get_secret("model-provider-api-key")


def test_one_client_per_vault_and_warm_cache_costs_no_io(seeded: KeyVaultEmulator) -> None:
    """Instances share one client per vault; a second AtlasSecrets() with a warm cache makes no request."""
    first = AtlasSecrets().prefetch()
    before = len(seeded.requests)
    second = AtlasSecrets()
    assert second.signing_secret.get_secret_value() == first.signing_secret.get_secret_value()
    second.prefetch()
    assert len(seeded.requests) == before
    assert len(atlas_config._resolver.RESOLVER._vaults) == 1
    stats = get_secret_cache_stats()
    assert stats.size == 3 and stats.misses == 3 and stats.hits >= 4


def test_empty_vault_value_is_an_error(seeded: KeyVaultEmulator) -> None:
    """A whitespace-only value in the vault is an error naming the key and Key Vault."""
    seeded.set_secret("signing-secret", "   ")
    with pytest.raises(SecretNotFoundError, match="'signing-secret' from keyvault is empty"):
        get_secret("signing-secret")


def test_import_loads_no_azure_until_first_vault_read() -> None:
    """`import atlas_config` imports no Azure, aiohttp or retry module (checked in a fresh interpreter)."""
    import subprocess

    code = (
        "import sys, atlas_config; from atlas_config import AtlasSecrets;"
        "bad=[m for m in sys.modules if m.startswith(('azure','aiohttp','stamina','tenacity'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_revoked_token_recovers_with_a_fresh_credential(
    seeded: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """A token the vault stops accepting fails one read (401); the next read gets a new token and succeeds."""
    assert get_secret("signing-secret") == canaries["signing-secret"]
    seeded.expire_tokens()
    with pytest.raises(SecretFetchError, match="401") as info:
        get_secret("signing-secret", cache_ttl=0)
    assert info.value.status == 401 and not info.value.transient
    tokens_before = len(seeded.token_requests())
    assert get_secret("signing-secret", cache_ttl=0) == canaries["signing-secret"]
    assert len(seeded.token_requests()) == tokens_before + 1


def test_async_revoked_token_recovers(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """The aio path also starts over with a new credential after a 401 that survived re-authentication."""

    async def main() -> str:
        try:
            await aget_secret("signing-secret")
            seeded.expire_tokens()
            with pytest.raises(SecretFetchError, match="401"):
                await aget_secret("signing-secret", cache_ttl=0)
            return await aget_secret("signing-secret", cache_ttl=0)
        finally:
            await atlas_config.aclose()

    assert asyncio.run(main()) == canaries["signing-secret"]


def test_cold_prefetch_makes_one_token_request(
    seeded_production: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """Three secrets read at once share one managed-identity token request (the endpoint throttles)."""
    seeded_production.latency = 0.05  # the three first requests overlap
    settings = AtlasSecrets().prefetch()
    assert settings.signing_secret.get_secret_value() == canaries["signing-secret"]
    assert len(seeded_production.token_requests()) == 1
    assert sum(1 for r in seeded_production.requests if r.operation == "get" and r.authenticated) == 3


def test_async_cold_prefetch_makes_one_token_request(
    seeded_production: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """aprefetch's three tasks share one token request too (azure-core's async auth policy locks)."""
    seeded_production.latency = 0.05

    async def main() -> None:
        try:
            await AtlasSecrets().aprefetch()
        finally:
            await atlas_config.aclose()

    asyncio.run(main())
    assert len(seeded_production.token_requests()) == 1


def test_failed_token_request_is_shared_by_the_waiters(
    seeded_production: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers that wait on a failing token request get its error; they do not each ask again."""
    monkeypatch.setenv("ATLAS_SECRETS_MAX_ATTEMPTS", "1")
    seeded_production.inject_token_fault(*[Fault(status=400, delay=0.3)] * 10)  # slow: the others overlap
    with pytest.raises(atlas_config.PrefetchError) as info:
        AtlasSecrets().prefetch()
    assert sorted(info.value.errors) == sorted(atlas_config.ALLOWED_SECRET_KEYS)
    assert len(seeded_production.token_requests()) == 1
