"""``AtlasSecret``: a ``SecretStr`` whose value comes from the shared resolver, lazily.

The cache-hit path of ``get_secret_value()`` is written out inline here: it is
the one line an app calls per request, and it must cost about what pydantic's
plain ``SecretStr.get_secret_value()`` costs. Everything else is in
``_resolver``.
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic.types import SecretStr
from pydantic_core import SchemaSerializer, core_schema

from . import _clock, _telemetry
from ._resolver import RESOLVER, ReadOptions, Slot
from ._telemetry import TelemetryEvent, emit

_MASK = "**********"
# The resolver's cache dict; it is only ever emptied in place, never replaced.
_CACHE = RESOLVER.cache


def _serialize(value: object, info: core_schema.SerializationInfo) -> object:
    # Never call get_secret_value() here: pydantic's own SecretStr does in
    # JSON mode, which for us would mean a Key Vault round-trip in model_dump_json().
    return _MASK if info.mode == "json" else value


class AtlasSecret(SecretStr):
    """An allowlisted secret, resolved on first ``get_secret_value()`` and re-resolved after its TTL.

    ``str()``, ``repr()``, ``model_dump()`` and ``model_dump_json()`` show
    ``'**********'`` and never fetch. Constructed from a plain string (for
    example ``AtlasSecrets(signing_secret="test")`` in a test) it is a fixed
    value, like pydantic's ``SecretStr``.

    Example::

        settings = AtlasSecrets()
        token = sign(payload, settings.signing_secret.get_secret_value())
    """

    _key: str | None
    _opts: ReadOptions | None
    _slot: Slot | None
    _fresh: float

    def __init__(self, secret_value: str) -> None:
        super().__init__(secret_value)
        self._key = None
        self._opts = None
        self._slot = None
        self._fresh = 0.0

    @classmethod
    def bound(cls, key: str) -> AtlasSecret:
        """A secret for ``key`` that reads through the resolver once ``bind()`` gives it options."""
        secret = cls.__new__(cls)
        secret._secret_value = ""
        secret._key = key
        secret._opts = None
        secret._slot = None
        secret._fresh = 0.0
        return secret

    def bind(self, opts: ReadOptions) -> None:
        """Set how reads are served (TTL, attempts, version); done once by ``AtlasSecrets``."""
        self._opts = opts
        # A pinned version never goes stale; fold that into one comparison.
        self._fresh = float("inf") if opts.version is not None else opts.ttl
        self._slot = (self._key, opts.version) if self._key is not None else None

    @property
    def secret_key(self) -> str | None:
        """The Key Vault name this field reads (``None`` for a fixed value)."""
        return self._key

    @property
    def options(self) -> ReadOptions | None:
        """The read options bound to this field, if any."""
        return self._opts

    def get_secret_value(self) -> str:
        """The value: from the cache while fresh, else resolved (Key Vault, files or env) now."""
        slot = self._slot
        if slot is None:
            return self._unbound_value()
        entry = _CACHE.get(slot)
        if entry is not None:
            now = _clock.now()
            if now - entry.fetched_at < self._fresh * entry.refresh_at and now < entry.valid_until:
                RESOLVER.hits += 1
                if _telemetry._handlers:
                    emit(TelemetryEvent("Secret.Cache.Hit", slot[0], "cache", version=entry.version))
                return entry.value
        return RESOLVER.read(slot[0], self._opts)  # type: ignore[arg-type]  # bound with _slot

    def _unbound_value(self) -> str:
        if self._key is not None:
            raise RuntimeError("AtlasSecret was not bound; build it through AtlasSecrets()")
        return self._secret_value

    async def aget_secret_value(self) -> str:
        """``get_secret_value()`` for async code: a cold read uses the ``aio`` client."""
        if self._key is None or self._opts is None:
            return self.get_secret_value()
        return await RESOLVER.aread(self._key, self._opts)

    def _display(self) -> str:
        return _MASK

    def __repr__(self) -> str:
        if self._key is None:
            return f"AtlasSecret({_MASK!r})"
        return f"AtlasSecret({_MASK!r}, key={self._key!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AtlasSecret):
            return NotImplemented
        if self._key is not None or other._key is not None:
            # Comparing lazy secrets must not fetch them.
            return (self._key, self._opts) == (other._key, other._opts)
        return secrets.compare_digest(self._secret_value, other._secret_value)

    def __hash__(self) -> int:
        return hash((AtlasSecret, self._key, self._opts)) if self._key is not None else super().__hash__()

    def __len__(self) -> int:
        return len(self.get_secret_value())

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        from_str = core_schema.no_info_after_validator_function(cls, core_schema.str_schema())
        return core_schema.json_or_python_schema(
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), from_str]),
            json_schema=from_str,
            serialization=core_schema.plain_serializer_function_ser_schema(_serialize, info_arg=True),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, _schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "writeOnly": True, "format": "password"}

    __pydantic_serializer__ = SchemaSerializer(
        core_schema.any_schema(
            serialization=core_schema.plain_serializer_function_ser_schema(_serialize, info_arg=True)
        )
    )
