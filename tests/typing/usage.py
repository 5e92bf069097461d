"""How users write atlas-config code; `mypy --strict` must accept it (tests/test_public_api.py runs it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from atlas_config import (
    AtlasSecrets,
    RotationEvent,
    SecretCacheStats,
    SecretOptions,
    TelemetryEvent,
    add_rotation_handler,
    add_telemetry_handler,
    aget_secret,
    get_secret,
    get_secret_cache_stats,
)


class Settings(AtlasSecrets):
    port: int = 8000
    atlas_secret_options = {"signing-secret": SecretOptions(ttl=timedelta(minutes=1))}
    atlas_secrets_dir = Path("/mnt/secrets")


def handler(event: TelemetryEvent) -> None:
    name: str = event.name
    key: str | None = event.secret_key
    print(name, key)


@add_rotation_handler
def on_rotation(event: RotationEvent) -> None:
    print(event.secret_key, event.old_version, event.new_version)


def main() -> None:
    add_telemetry_handler(handler)
    settings: Settings = Settings().prefetch()
    value: str = settings.signing_secret.get_secret_value()
    port: int = settings.port
    other: str = get_secret("model-provider-api-key", max_attempts=2, cache_ttl=timedelta(seconds=30))
    stats: SecretCacheStats = get_secret_cache_stats()
    size: int = stats.size
    print(len(value), port, len(other), size)


async def amain() -> str:
    settings = await Settings().aprefetch()
    first: str = await settings.signing_secret.aget_secret_value()
    return first + await aget_secret("signing-secret", initial_retry_delay=0.5)
