"""The allowlist: which secrets exist, and how each is named in Key Vault, env and Python."""

from __future__ import annotations

from typing import Final

from ._errors import SecretNotAllowedError

#: The only secrets atlas-config will fetch, by Key Vault name (the seed's allowlist).
ALLOWED_SECRET_KEYS: Final[tuple[str, ...]] = (
    "service-bus-connection-string",
    "model-provider-api-key",
    "signing-secret",
)

# Keys that used to be fetched and now must not be: say why, so nobody re-adds them.
_RETIRED: Final[dict[str, str]] = {
    "cosmos-primary-key": (
        "Cosmos DB uses Managed Identity now (DefaultAzureCredential with an RBAC role), "
        "so no primary key is fetched at runtime"
    ),
}


def env_name(key: str) -> str:
    """``signing-secret`` -> ``SIGNING_SECRET``."""
    return key.upper().replace("-", "_")


def field_name(key: str) -> str:
    """``signing-secret`` -> ``signing_secret``."""
    return key.replace("-", "_")


def describe(key: object) -> str:
    """Describe a rejected key without showing it.

    Callers sometimes pass a value where a key belongs, and API keys look
    like keys (``sk-proj-...``); echoing it would put a secret into an
    exception message and from there into logs. Near-misses get a
    "did you mean" hint instead, which names the allowlisted key.
    """
    if isinstance(key, str):
        return f"(a {len(key)}-character string)"
    return f"(a value of type {type(key).__name__})"


def _suggestion(key: object) -> str | None:
    if not isinstance(key, str):
        return None
    folded = key.strip().lower().replace("_", "-")
    return folded if folded in ALLOWED_SECRET_KEYS else None


def check_key(key: object) -> str:
    """Return ``key`` if it is allowlisted, exactly; raise ``SecretNotAllowedError`` otherwise.

    Exact means exact: no case folding, trimming or ``_``/``-`` swapping, so a
    typo fails loudly in CI instead of quietly reading another secret.
    """
    if type(key) is str and key in ALLOWED_SECRET_KEYS:
        return key
    allowed = ", ".join(ALLOWED_SECRET_KEYS)
    if isinstance(key, str) and key in _RETIRED:
        raise SecretNotAllowedError(
            f"secret key {key!r} is not allowlisted: {_RETIRED[key]}. Allowed: {allowed}."
        )
    hint = _suggestion(key)
    fix = f"did you mean {hint!r}?" if hint else f"use one of: {allowed}"
    raise SecretNotAllowedError(f"secret key {describe(key)} is not allowlisted; {fix}")
