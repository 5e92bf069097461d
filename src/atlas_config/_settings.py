"""``AtlasSecrets``: the typed model, and the pydantic-settings source that feeds its secret fields.

Only the allowlisted fields go through ``AtlasSecretsSource``. An app's own
fields (``port: int``) load from init kwargs, env, ``.env`` and secrets dirs
as in any pydantic-settings model, production included; those sources are
wrapped so they never even return an allowlisted field, which keeps env
values out of production and out of ``PYDANTIC_SETTINGS_DEBUG`` logs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, ClassVar, Self

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ._environment import load_environment
from ._errors import AtlasConfigError, ConfigurationError, PrefetchError
from ._keys import ALLOWED_SECRET_KEYS, field_name
from ._resolver import RESOLVER
from ._secret import AtlasSecret

_SECRET_FIELDS = {field_name(key): key for key in ALLOWED_SECRET_KEYS}


@dataclass(frozen=True, slots=True)
class SecretOptions:
    """Per-secret settings for an ``AtlasSecrets`` subclass (``None`` means the process default).

    Example::

        class Settings(AtlasSecrets):
            atlas_secret_options = {
                "signing-secret": SecretOptions(ttl=60),
                "model-provider-api-key": SecretOptions(version="0123456789abcdef0123456789abcdef"),
            }

    ``version`` pins a Key Vault version: it is cached without expiry and
    never refetched. ``ttl`` is that secret's cache TTL.
    """

    ttl: float | timedelta | None = None
    version: str | None = None
    max_attempts: int | None = None
    retry_delay: float | timedelta | None = None


class AtlasSecretsSource(PydanticBaseSettingsSource):
    """Supplies each allowlisted field as a lazy ``AtlasSecret``; reads nothing at construction."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {
            name: AtlasSecret.bound(key)
            for name, key in _SECRET_FIELDS.items()
            if name in self.settings_cls.model_fields
        }


class _WrappedSource(PydanticBaseSettingsSource):
    """A standard source behind a filter; subclasses say what ``__call__`` changes."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner
        # pydantic-settings names sources by __name__ in its debug log and state.
        self.__name__ = type(inner).__name__

    def _set_current_state(self, state: dict[str, Any]) -> None:
        self._inner._set_current_state(state)

    def _set_settings_sources_data(self, states: dict[str, dict[str, Any]]) -> None:
        self._inner._set_settings_sources_data(states)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return self._inner()


class _WithoutSecretFields(_WrappedSource):
    """An env, ``.env`` or secrets-dir source that never returns an allowlisted field."""

    def __call__(self) -> dict[str, Any]:
        return {name: value for name, value in self._inner().items() if name not in _SECRET_FIELDS}


class _MaskedInit(_WrappedSource):
    """The init-kwargs source, with a secret passed in code turned into an ``AtlasSecret`` at once.

    pydantic-settings logs each source's raw output under ``PYDANTIC_SETTINGS_DEBUG``;
    ``AtlasSecrets(signing_secret="x")`` must show up there masked, like every other value.
    """

    def __call__(self) -> dict[str, Any]:
        return {
            name: AtlasSecret(value) if name in _SECRET_FIELDS and isinstance(value, str) else value
            for name, value in self._inner().items()
        }


class AtlasSecrets(BaseSettings):
    """The allowlisted secrets, typed; subclass it to add your own settings.

    Construction reads the configuration (production flag, vault, defaults)
    and fails with a ``ValidationError`` naming any problem, but fetches
    nothing unless ``ATLAS_SECRETS_PREFETCH=true``. Each secret is resolved on
    first ``get_secret_value()`` and cached for its TTL.

    Example::

        class Settings(AtlasSecrets):
            port: int = 8000

        settings = Settings().prefetch()   # fail fast at start-up
        key = settings.signing_secret.get_secret_value()
    """

    model_config = SettingsConfigDict(
        env_file=(".env", ".env.development"),
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    #: Per-secret TTL / version pin / retry options, keyed by Key Vault name.
    atlas_secret_options: ClassVar[Mapping[str, SecretOptions]] = {}
    #: Directory of platform-mounted secret files; ``ATLAS_SECRETS_DIR`` overrides it.
    atlas_secrets_dir: ClassVar[str | os.PathLike[str] | None] = None

    # The factories matter to type checkers (AtlasSecrets() needs no arguments)
    # and keep the fields lazy even if a subclass replaces the sources.
    service_bus_connection_string: AtlasSecret = Field(
        default_factory=partial(AtlasSecret.bound, "service-bus-connection-string")
    )
    model_provider_api_key: AtlasSecret = Field(
        default_factory=partial(AtlasSecret.bound, "model-provider-api-key")
    )
    signing_secret: AtlasSecret = Field(default_factory=partial(AtlasSecret.bound, "signing-secret"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init kwargs first, then the guarded secret source; env, ``.env`` and secrets dirs only for
        the app's own fields."""
        return (
            _MaskedInit(init_settings),
            AtlasSecretsSource(settings_cls),
            _WithoutSecretFields(env_settings),
            _WithoutSecretFields(dotenv_settings),
            _WithoutSecretFields(file_secret_settings),
        )

    @model_validator(mode="after")
    def _configure(self) -> Self:
        env = RESOLVER.configure(load_environment(os.environ, secrets_dir=self.atlas_secrets_dir))
        unknown = set(self.atlas_secret_options) - set(ALLOWED_SECRET_KEYS)
        if unknown:
            raise ConfigurationError(
                f"atlas_secret_options names {sorted(unknown)}, which are not allowlisted secret keys"
            )
        for secret in self._secret_fields().values():
            key = secret.secret_key
            if key is not None and secret.options is None:
                option = self.atlas_secret_options.get(key, SecretOptions())
                secret.bind(
                    RESOLVER.options(
                        key,
                        cache_ttl=option.ttl,
                        max_attempts=option.max_attempts,
                        retry_delay=option.retry_delay,
                        version=option.version,
                    )
                )
        if env.prefetch:
            self.prefetch()
        return self

    def _secret_fields(self) -> dict[str, AtlasSecret]:
        return {
            name: value
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), AtlasSecret)
        }

    def prefetch(self) -> Self:
        """Resolve every secret now, concurrently; raise one ``PrefetchError`` naming each failure.

        Use it at start-up (or in CI) to fail fast. Returns ``self``.
        """
        fields = list(self._secret_fields().values())
        with ThreadPoolExecutor(max_workers=max(len(fields), 1), thread_name_prefix="atlas-prefetch") as pool:
            outcomes = list(pool.map(_outcome, fields))
        self._raise_failures(fields, outcomes)
        return self

    async def aprefetch(self) -> Self:
        """``prefetch()`` for async apps: concurrent tasks on the ``aio`` client."""
        fields = list(self._secret_fields().values())
        outcomes = await asyncio.gather(*(_aoutcome(f) for f in fields))
        self._raise_failures(fields, outcomes)
        return self

    @staticmethod
    def _raise_failures(fields: list[AtlasSecret], outcomes: list[AtlasConfigError | None]) -> None:
        errors = {
            (field.secret_key or "?"): error for field, error in zip(fields, outcomes, strict=True) if error
        }
        if errors:
            raise PrefetchError(errors)


def _outcome(field: AtlasSecret) -> AtlasConfigError | None:
    try:
        field.get_secret_value()
    except AtlasConfigError as exc:
        return exc
    return None


async def _aoutcome(field: AtlasSecret) -> AtlasConfigError | None:
    try:
        await field.aget_secret_value()
    except AtlasConfigError as exc:
        return exc
    return None
