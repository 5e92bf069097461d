"""Read the process environment once into a frozen ``Environment``.

This is the one place that decides whether we are in production, which vault
we talk to, and the process-wide defaults. Everything is validated here,
before any network I/O, so a hostile or mistyped setting fails with a
``ConfigurationError`` that names the variable and the fix.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from ._errors import ConfigurationError, ProductionGuardError
from ._keys import ALLOWED_SECRET_KEYS, env_name

PRODUCTION_FLAGS: Final = ("ATLAS_ENV", "NODE_ENV")

# Values that mean "not production". Anything else that is not "production"
# ("prod", "live", "true") is refused: a typo must not silently switch the
# production guard off.
_NON_PRODUCTION: Final = frozenset(
    {"development", "dev", "local", "test", "testing", "ci", "staging", "preview"}
)

# Public and sovereign Key Vault DNS suffixes (Azure's "vault URI" domains).
KEY_VAULT_DOMAINS: Final = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
)
_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})

# Azure's rule: 3-24 characters, letters, digits and single hyphens, starting
# with a letter and ending with a letter or digit.
_VAULT_NAME = re.compile(r"[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]")
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class Defaults:
    """Process-wide defaults for reads, from ``ATLAS_SECRETS_*`` variables."""

    cache_ttl: float = 300.0
    max_attempts: int = 3
    retry_delay: float = 1.0
    max_stale: float = 3600.0
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    expiry_warning: float = 7 * 24 * 3600.0
    timeout: float = 10.0
    key_ttl: Mapping[str, float] = field(default_factory=dict)
    key_version: Mapping[str, str] = field(default_factory=dict)

    def ttl_for(self, key: str) -> float:
        return self.key_ttl.get(key, self.cache_ttl)


@dataclass(frozen=True, slots=True)
class Environment:
    """Everything atlas-config decided from the environment. Holds no secret value."""

    production: bool
    production_reason: str
    vault_url: str | None
    # Off only for a loopback vault outside production (the emulator): the SDK
    # checks that the challenge's resource matches *.vault.azure.net.
    verify_challenge_resource: bool
    secrets_dir: Path | None
    defaults: Defaults
    prefetch: bool = False

    @property
    def vault_configured(self) -> bool:
        return self.vault_url is not None


# Upper bounds for durations. Beyond them a value is a typo, and an unbounded
# back-off overflows or sleeps for days inside a read.
DAY: Final = 86_400.0
MAX_TTL: Final = 30 * DAY
MAX_RETRY_DELAY: Final = 60.0
MAX_TIMEOUT: Final = 300.0
MAX_COOLDOWN: Final = DAY
MAX_WARNING: Final = 365 * DAY
_MIN_TIMEOUT: Final = 0.01


def seconds(value: float | timedelta, what: str, *, maximum: float, minimum: float = 0.0) -> float:
    """Normalise seconds or a ``timedelta``; refuse NaN, negatives and out-of-range values."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{what} must be a number of seconds or a timedelta, not {type(value).__name__}"
        )
    value = float(value)
    if not math.isfinite(value) or value < minimum or value > maximum:
        raise ConfigurationError(
            f"{what} must be a number of seconds from {minimum:g} to {maximum:g}, got {value!r}"
        )
    return value


def attempts(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ConfigurationError(f"{what} must be a whole number from 1 to 100, got {value!r}")
    return value


def _env_seconds(
    environ: Mapping[str, str], name: str, default: float, *, maximum: float, minimum: float = 0.0
) -> float:
    raw = environ.get(name, "").strip()
    return _parse_seconds(name, raw, maximum=maximum, minimum=minimum) if raw else default


def _parse_seconds(name: str, raw: str, *, maximum: float, minimum: float = 0.0) -> float:
    try:
        number = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={_show(raw)} is not a number of seconds; set it to e.g. 300"
        ) from None
    return seconds(number, name, maximum=maximum, minimum=minimum)


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()):  # isdigit() alone accepts superscripts
        raise ConfigurationError(f"{name}={_show(raw)} is not a whole number; set it to e.g. {default}")
    return attempts(int(raw), name)


def _show(raw: str) -> str:
    """Quote a setting's text for an error, cut short: settings are not secrets, but keep errors tidy."""
    return repr(raw if len(raw) <= 40 else raw[:37] + "...")


def decide_production(environ: Mapping[str, str]) -> tuple[bool, str]:
    """Production is on when ``ATLAS_ENV`` or ``NODE_ENV`` says ``production`` (trimmed, any case).

    Either flag wins: a Node-style deployment that only sets ``NODE_ENV`` is
    protected too. An unrecognised value is an error rather than a guess.
    """
    reasons = []
    for name in PRODUCTION_FLAGS:
        raw = environ.get(name)
        if raw is None or not raw.strip():
            continue
        value = raw.strip().lower()
        if value == "production":
            reasons.append(f"{name}=production")
        elif value not in _NON_PRODUCTION:
            raise ConfigurationError(
                f"{name}={_show(raw)} is not a recognised environment; set it to 'production' to turn the "
                f"production guard on, or one of {', '.join(sorted(_NON_PRODUCTION))}"
            )
    if reasons:
        return True, " and ".join(reasons)
    return False, "neither ATLAS_ENV nor NODE_ENV is 'production'"


def vault_url_from_name(name: str) -> str:
    """``kv-abc123`` -> ``https://kv-abc123.vault.azure.net``; refuse anything that is not a vault name."""
    if not _VAULT_NAME.fullmatch(name):
        raise ConfigurationError(
            f"KEYVAULT_NAME={_show(name)} is not a valid Key Vault name: use 3-24 letters, digits and single "
            "hyphens, starting with a letter (e.g. kv-abc123), or set KEYVAULT_URL instead"
        )
    return f"https://{name.lower()}.vault.azure.net"


def check_vault_url(raw: str, *, production: bool) -> tuple[str, bool]:
    """Validate ``KEYVAULT_URL``; return the normalised URL and whether to verify the challenge resource.

    The bearer token goes wherever this URL points, so anything beyond
    ``https://host[:port][/]`` is refused: userinfo (``https://x.vault.azure.net@evil``),
    query, fragment, path, backslashes, or a host that is not a Key Vault domain
    (loopback is allowed outside production, for the emulator).
    """
    problem = _url_problem(raw)
    if problem is None:
        parts = urlsplit(raw)
        host = (parts.hostname or "").lower()
        port = parts.port
        on_vault_domain = host.endswith(KEY_VAULT_DOMAINS) and all(
            _HOST_LABEL.fullmatch(label) for label in host.split(".")
        )
        local = host in _LOCAL_HOSTS
        if on_vault_domain:
            netloc = host if port in (None, 443) else f"{host}:{port}"
            return f"https://{netloc}", True
        if local and production:
            raise ProductionGuardError(
                f"KEYVAULT_URL={_show(raw)} points at a local vault while production is on; "
                "set KEYVAULT_NAME (or a https://<name>.vault.azure.net KEYVAULT_URL)"
            )
        if local:
            return f"https://{parts.netloc.lower()}", False
        problem = f"its host is not a Key Vault domain ({', '.join(d[1:] for d in KEY_VAULT_DOMAINS)})"
    raise ConfigurationError(
        f"KEYVAULT_URL={_show(raw)} is not a plain Key Vault URL: {problem}; "
        "set it to https://<vault-name>.vault.azure.net or set KEYVAULT_NAME instead"
    )


def _url_problem(raw: str) -> str | None:
    if any(ch in raw for ch in "\\@#?") or any(ord(ch) < 33 or ord(ch) > 126 for ch in raw):
        return "it has userinfo, a query, a fragment, a backslash, whitespace or non-ASCII characters"
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "it does not parse as a URL"
    if parts.scheme != "https":
        return "it must use https (the SDK refuses bearer tokens over http)"
    if not parts.hostname:
        return "it has no host"
    if parts.path not in ("", "/"):
        return "it has a path; give only the vault's origin"
    return None


def _secrets_dir(environ: Mapping[str, str], in_code: str | os.PathLike[str] | None) -> Path | None:
    """``ATLAS_SECRETS_DIR``, else the directory set in code: the deployment can always override it."""
    raw = environ.get("ATLAS_SECRETS_DIR", "").strip()
    if raw:
        return Path(raw)
    if in_code is None:
        return None
    path = os.fspath(in_code) if isinstance(in_code, str | os.PathLike) else None
    if not isinstance(path, str):  # also refuses a bytes path
        raise ConfigurationError(
            f"atlas_secrets_dir must be a path (str or pathlib.Path), not {type(in_code).__name__}"
        )
    path = path.strip()
    return Path(path) if path else None


def _bool(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{name}={_show(raw)} is not a boolean; set it to true or false")


def _per_key(environ: Mapping[str, str], prefix: str) -> dict[str, str]:
    """Collect ``<prefix>__SIGNING_SECRET=...`` style per-key overrides, refusing unknown keys."""
    by_env = {env_name(key): key for key in ALLOWED_SECRET_KEYS}
    found: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith(prefix + "__") or not raw.strip():
            continue
        suffix = name[len(prefix) + 2 :]
        if suffix not in by_env:
            raise ConfigurationError(
                f"{name} names no allowlisted secret; use {prefix}__<KEY> with KEY one of {', '.join(by_env)}"
            )
        found[by_env[suffix]] = raw.strip()
    return found


def _defaults(environ: Mapping[str, str]) -> Defaults:
    key_ttl = {
        key: _parse_seconds(f"ATLAS_SECRETS_CACHE_TTL__{env_name(key)}", raw, maximum=MAX_TTL)
        for key, raw in _per_key(environ, "ATLAS_SECRETS_CACHE_TTL").items()
    }
    key_version = _per_key(environ, "ATLAS_SECRETS_VERSION")
    for key, version in key_version.items():
        check_version(version, f"ATLAS_SECRETS_VERSION__{env_name(key)}")
    return Defaults(
        cache_ttl=_env_seconds(environ, "ATLAS_SECRETS_CACHE_TTL", 300.0, maximum=MAX_TTL),
        max_attempts=_env_int(environ, "ATLAS_SECRETS_MAX_ATTEMPTS", 3),
        retry_delay=_env_seconds(environ, "ATLAS_SECRETS_RETRY_DELAY", 1.0, maximum=MAX_RETRY_DELAY),
        max_stale=_env_seconds(environ, "ATLAS_SECRETS_MAX_STALE", 3600.0, maximum=MAX_TTL),
        breaker_threshold=_env_int(environ, "ATLAS_SECRETS_BREAKER_THRESHOLD", 5),
        breaker_cooldown=_env_seconds(environ, "ATLAS_SECRETS_BREAKER_COOLDOWN", 30.0, maximum=MAX_COOLDOWN),
        expiry_warning=_env_seconds(environ, "ATLAS_SECRETS_EXPIRY_WARNING", 7 * DAY, maximum=MAX_WARNING),
        timeout=_env_seconds(
            environ, "ATLAS_SECRETS_TIMEOUT", 10.0, maximum=MAX_TIMEOUT, minimum=_MIN_TIMEOUT
        ),
        key_ttl=key_ttl,
        key_version=key_version,
    )


_VERSION = re.compile(r"[0-9a-fA-F]{32}")


def check_version(version: object, what: str) -> str:
    """A Key Vault version id is 32 hex digits; anything else would change the request path."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ConfigurationError(f"{what} must be a Key Vault version id (32 hex digits)")
    return version.lower()


def load_environment(
    environ: Mapping[str, str], *, secrets_dir: str | os.PathLike[str] | None = None
) -> Environment:
    """Decide everything from ``environ``; raise ``ConfigurationError`` / ``ProductionGuardError`` early.

    ``secrets_dir`` is ``AtlasSecrets.atlas_secrets_dir``, used when ``ATLAS_SECRETS_DIR`` is unset.
    """
    production, reason = decide_production(environ)
    name = environ.get("KEYVAULT_NAME", "").strip()
    url = environ.get("KEYVAULT_URL", "").strip()
    vault_url: str | None = None
    verify = True
    if name:
        vault_url = vault_url_from_name(name)
    if url:
        from_url, verify = check_vault_url(url, production=production)
        if vault_url is not None and vault_url != from_url:
            raise ConfigurationError(
                "KEYVAULT_NAME and KEYVAULT_URL name different vaults; set only one of them"
            )
        vault_url = from_url
    mounted = _secrets_dir(environ, secrets_dir)
    if production and vault_url is None and mounted is None:
        raise ProductionGuardError(
            f"production is on ({reason}) but no vault is configured, and env vars are never used for "
            "secrets in production; set KEYVAULT_NAME (or KEYVAULT_URL, or ATLAS_SECRETS_DIR for "
            "platform-mounted secrets)"
        )
    return Environment(
        production=production,
        production_reason=reason,
        vault_url=vault_url,
        verify_challenge_resource=verify or production,
        secrets_dir=mounted,
        defaults=_defaults(environ),
        prefetch=_bool(environ, "ATLAS_SECRETS_PREFETCH"),
    )
