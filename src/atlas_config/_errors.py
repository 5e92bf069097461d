"""Errors raised by atlas-config.

Every error names the secret key (or the setting) and what to do next, and
never carries a secret value::

    AtlasConfigError (ValueError)
    ├── ConfigurationError        a setting is malformed (vault name/URL, TTL, .env line, flag),
    │                             or a mounted secret file / ATLAS_SECRETS_DIR is unsafe
    │   └── ProductionGuardError  production would have to use env vars or an unsafe vault
    ├── SecretNotAllowedError     the key is not on the allowlist
    ├── SecretNotFoundError       no value anywhere (404, missing in dev, empty value)
    ├── SecretFetchError          the vault could not be reached after retries / breaker open
    │   └── SecretAccessDeniedError  403: disabled secret or missing RBAC (a revocation)
    └── PrefetchError             prefetch(): one or more keys failed; ``.errors`` has each

``AtlasConfigError`` subclasses ``ValueError`` (as pydantic-settings'
``SettingsError`` does) so that raised inside model validation it becomes a
pydantic ``ValidationError`` that names the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class AtlasConfigError(ValueError):
    """Base class of every error atlas-config raises."""


class ConfigurationError(AtlasConfigError):
    """A setting (env var, option, ``.env`` line) is malformed; the message names it and the fix."""


class ProductionGuardError(ConfigurationError):
    """Production is on and the configuration would use env vars or an unsafe vault."""


class SecretNotAllowedError(AtlasConfigError):
    """The requested key is not one of ``ALLOWED_SECRET_KEYS``."""


class SecretNotFoundError(AtlasConfigError):
    """The secret has no usable value in any configured source (404, unset, or empty)."""


class SecretFetchError(AtlasConfigError):
    """The vault could not serve the secret: unreachable after retries, throttled, or breaker open.

    ``transient`` is true when trying again later may succeed (outage,
    throttling, open breaker); a cached value may then be served stale.
    ``status`` is the HTTP status when the vault answered, else ``None``.
    """

    def __init__(self, message: str, *, transient: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


class SecretAccessDeniedError(SecretFetchError):
    """Key Vault answered 403: the secret is disabled or the identity lacks access (a revocation)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False, status=403)


class PrefetchError(AtlasConfigError):
    """``prefetch()`` failed for one or more keys; ``errors`` maps each key to its error."""

    def __init__(self, errors: Mapping[str, AtlasConfigError]) -> None:
        self.errors: Mapping[str, AtlasConfigError] = MappingProxyType(dict(errors))
        lines = [f"{len(errors)} secret(s) could not be resolved:"]
        lines += [f"  - {key}: {type(err).__name__}: {err}" for key, err in sorted(errors.items())]
        super().__init__("\n".join(lines))
