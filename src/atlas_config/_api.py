"""The seed's functions: ``getSecret``, ``clearSecretCache``, ``getSecretCacheStats``, in Python."""

from __future__ import annotations

from datetime import timedelta

from ._keys import check_key
from ._resolver import RESOLVER, SecretCacheStats


def get_secret(
    key: str,
    *,
    max_attempts: int | None = None,
    initial_retry_delay: float | timedelta | None = None,
    cache_ttl: float | timedelta | None = None,
    version: str | None = None,
) -> str:
    """Return an allowlisted secret: from the cache, Key Vault, mounted files or (dev) env.

    Options left at ``None`` take the process defaults (``ATLAS_SECRETS_MAX_ATTEMPTS``
    = 3 attempts in all, ``ATLAS_SECRETS_RETRY_DELAY`` = 1 s, ``ATLAS_SECRETS_CACHE_TTL``
    = 300 s). ``cache_ttl`` is the oldest cached value this call accepts.
    ``version`` pins a Key Vault version (cached without expiry).

    Example::

        signing_key = get_secret("signing-secret")

    Raises:
        SecretNotAllowedError: ``key`` is not allowlisted (checked before any I/O).
        SecretNotFoundError: no source has a non-empty value.
        SecretFetchError: the vault failed after retries and no stale value may be served.
        ConfigurationError: an option or env setting is malformed.
    """
    key = check_key(key)
    return RESOLVER.read(
        key,
        RESOLVER.options(
            key,
            cache_ttl=cache_ttl,
            max_attempts=max_attempts,
            retry_delay=initial_retry_delay,
            version=version,
        ),
    )


async def aget_secret(
    key: str,
    *,
    max_attempts: int | None = None,
    initial_retry_delay: float | timedelta | None = None,
    cache_ttl: float | timedelta | None = None,
    version: str | None = None,
) -> str:
    """``get_secret`` for ``async`` code: the Azure ``aio`` client, never blocking the event loop.

    Example::

        signing_key = await aget_secret("signing-secret")
    """
    key = check_key(key)
    return await RESOLVER.aread(
        key,
        RESOLVER.options(
            key,
            cache_ttl=cache_ttl,
            max_attempts=max_attempts,
            retry_delay=initial_retry_delay,
            version=version,
        ),
    )


def clear_secret_cache() -> None:
    """Empty the in-memory cache (emits ``Secret.Cache.Clear``); the next read fetches again."""
    RESOLVER.clear()


def get_secret_cache_stats() -> SecretCacheStats:
    """Cache size, cached key names (never values) and hit/miss/fetch counters."""
    return RESOLVER.stats()


async def aclose() -> None:
    """Close the async Key Vault clients of the running event loop (call it at shutdown)."""
    await RESOLVER.aclose()


def close() -> None:
    """Close the sync Key Vault clients and the background refresh thread."""
    RESOLVER.close()
