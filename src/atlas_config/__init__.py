"""Typed, allowlisted application secrets: Azure Key Vault in production, env and ``.env`` in development.

Example::

    from atlas_config import AtlasSecrets

    settings = AtlasSecrets()
    settings.signing_secret.get_secret_value()
"""

from loguru import logger as _logger

from ._api import aclose, aget_secret, clear_secret_cache, close, get_secret, get_secret_cache_stats
from ._errors import (
    AtlasConfigError,
    ConfigurationError,
    PrefetchError,
    ProductionGuardError,
    SecretAccessDeniedError,
    SecretFetchError,
    SecretNotAllowedError,
    SecretNotFoundError,
)
from ._keys import ALLOWED_SECRET_KEYS
from ._resolver import SecretCacheStats
from ._secret import AtlasSecret
from ._settings import AtlasSecrets, SecretOptions
from ._telemetry import (
    RotationEvent,
    TelemetryEvent,
    add_rotation_handler,
    add_telemetry_handler,
    remove_rotation_handler,
    remove_telemetry_handler,
)

# Libraries stay quiet until the app opts in: logger.enable("atlas_config").
_logger.disable("atlas_config")

__all__ = [
    "ALLOWED_SECRET_KEYS",
    "AtlasConfigError",
    "AtlasSecret",
    "AtlasSecrets",
    "ConfigurationError",
    "PrefetchError",
    "ProductionGuardError",
    "RotationEvent",
    "SecretAccessDeniedError",
    "SecretCacheStats",
    "SecretFetchError",
    "SecretNotAllowedError",
    "SecretNotFoundError",
    "SecretOptions",
    "TelemetryEvent",
    "aclose",
    "add_rotation_handler",
    "add_telemetry_handler",
    "aget_secret",
    "clear_secret_cache",
    "close",
    "get_secret",
    "get_secret_cache_stats",
    "remove_rotation_handler",
    "remove_telemetry_handler",
]
