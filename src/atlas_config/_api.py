"""The seed's functions: ``getSecret``, ``clearSecretCache``, ``getSecretCacheStats``, in Python."""

from __future__ import annotations

from datetime import timedelta

from ._environment import Environment
from ._keys import ALLOWED_SECRET_KEYS, check_key
from ._resolver import RESOLVER, SecretCacheStats
from ._secret import AtlasSecret

_Args = tuple[str, float | timedelta | None, int | None, float | timedelta | None, str | None]

# get_secret() is called per request. Validating its options each time would
# cost more than the cache hit, so each argument tuple gets one bound
# AtlasSecret, and reads go through the same inline hit path as typed fields.
# The memo belongs to one environment decision; a new decision empties it.
_memo: dict[_Args, AtlasSecret] = {}
_memo_env: list[Environment | None] = [None]
_MEMO_LIMIT = 1024  # callers passing ever-new arguments must not grow it without bound


def _secret_for(args: _Args) -> AtlasSecret:
    env = RESOLVER.environment()
    if _memo_env[0] is not env:
        _memo.clear()
        _memo_env[0] = env
    secret = _memo.get(args)
    if secret is None:
        key, cache_ttl, max_attempts, retry_delay, version = args
        secret = AtlasSecret.bound(key)
        secret.bind(
            RESOLVER.options(
                key, cache_ttl=cache_ttl, max_attempts=max_attempts, retry_delay=retry_delay, version=version
            )
        )
        if len(_memo) < _MEMO_LIMIT:
            _memo[args] = secret
    return secret


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
    if type(key) is not str or key not in ALLOWED_SECRET_KEYS:
        check_key(key)  # raises, with the reason
    args = (key, cache_ttl, max_attempts, initial_retry_delay, version)
    secret = _memo.get(args)
    if secret is None or _memo_env[0] is not RESOLVER._env:
        secret = _secret_for(args)
    return secret.get_secret_value()


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
    return await _secret_for((key, cache_ttl, max_attempts, initial_retry_delay, version)).aget_secret_value()


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
