"""Telemetry: hooks that receive frozen events, and loguru logging.

As in stamina, instrumentation is a list of callables receiving a frozen,
slotted dataclass. Events carry names, sources, versions and timings, never a
value. The library logs through loguru under ``atlas_config``, disabled by
default as loguru advises for libraries: ``logger.enable("atlas_config")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from loguru import logger

#: The seed's seven events, plus the resilience ones.
EventName = Literal[
    "Secret.Cache.Hit",
    "Secret.Cache.Miss",
    "Secret.Cache.Clear",
    "Secret.Cache.Stale",
    "Secret.Fetch.Success",
    "Secret.Fetch.Failure",
    "Secret.Fetch.Retry",
    "Secret.Fetch.Fallback",
    "Secret.Circuit.Open",
    "Secret.Circuit.Close",
    "Secret.Rotation.Detected",
    "Secret.Expiry.Warning",
]

EVENT_NAMES: Final[tuple[str, ...]] = EventName.__args__  # type: ignore[attr-defined]

_WARNINGS: Final = frozenset(
    {
        "Secret.Fetch.Failure",
        "Secret.Fetch.Fallback",
        "Secret.Cache.Stale",
        "Secret.Circuit.Open",
        "Secret.Expiry.Warning",
    }
)


@dataclass(frozen=True, slots=True)
class TelemetryEvent:
    """One thing that happened to a secret. Never holds a value.

    Attributes:
        name: one of the ``Secret.*`` event names.
        secret_key: the allowlisted key (``None`` for vault-wide events such as the breaker's).
        source: ``keyvault``, ``env``, ``.env.development``, ``.env``, ``file`` or ``cache``.
        attempt: the attempt number for fetch events.
        duration_ms: how long the fetch (or resolution) took.
        error_type: the exception class name on failures.
        version: the Key Vault version id (or file version), when known.
        detail: a short, value-free explanation (why a fallback happened, seconds to expiry).
    """

    name: EventName
    secret_key: str | None = None
    source: str | None = None
    attempt: int | None = None
    duration_ms: float | None = None
    error_type: str | None = None
    version: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class RotationEvent:
    """A refresh returned a different version than the cached one. Never holds a value."""

    secret_key: str
    old_version: str | None
    new_version: str | None
    source: str


TelemetryHandler = Callable[[TelemetryEvent], object]
RotationHandler = Callable[[RotationEvent], object]

# Tuples replaced wholesale, so emitters iterate a snapshot without a lock.
_handlers: tuple[TelemetryHandler, ...] = ()
_rotation_handlers: tuple[RotationHandler, ...] = ()


def add_telemetry_handler(handler: TelemetryHandler) -> TelemetryHandler:
    """Call ``handler(event)`` for every ``TelemetryEvent``; returns it, so it works as a decorator.

    Example::

        @add_telemetry_handler
        def count(event: TelemetryEvent) -> None:
            metrics[event.name] += 1

    Handlers run on the reading thread: keep them quick. An exception in a
    handler is logged and swallowed; it never fails a read.
    """
    global _handlers
    if handler not in _handlers:
        _handlers = (*_handlers, handler)
    return handler


def remove_telemetry_handler(handler: TelemetryHandler) -> None:
    """Stop calling ``handler``; unknown handlers are ignored.

    Handlers are matched by equality, so ``remove_telemetry_handler(events.append)``
    removes the bound method that ``add_telemetry_handler(events.append)`` added.
    """
    global _handlers
    _handlers = tuple(h for h in _handlers if h != handler)


def add_rotation_handler(handler: RotationHandler) -> RotationHandler:
    """Call ``handler(event)`` once per detected rotation, e.g. to rebuild a Service Bus client.

    Example::

        @add_rotation_handler
        def rebuild(event: RotationEvent) -> None:
            if event.secret_key == "service-bus-connection-string":
                app.state.bus = make_bus_client()
    """
    global _rotation_handlers
    if handler not in _rotation_handlers:
        _rotation_handlers = (*_rotation_handlers, handler)
    return handler


def remove_rotation_handler(handler: RotationHandler) -> None:
    """Stop calling ``handler``; unknown handlers are ignored."""
    global _rotation_handlers
    _rotation_handlers = tuple(h for h in _rotation_handlers if h != handler)


def has_handlers() -> bool:
    """Whether anybody listens to per-hit events (the hot path skips building them otherwise)."""
    return bool(_handlers)


def emit(event: TelemetryEvent, *, log: bool = True) -> None:
    """Log ``event`` (unless ``log`` is false) and hand it to every handler."""
    if log and event.name != "Secret.Cache.Hit":
        # Hits go to handlers and counters only: at request rate they are
        # metrics, not log lines.
        level = "WARNING" if event.name in _WARNINGS else "DEBUG"
        logger.log(
            level,
            "{} key={} source={} attempt={} error={} detail={}",
            event.name,
            event.secret_key,
            event.source,
            event.attempt,
            event.error_type,
            event.detail,
        )
    for handler in _handlers:
        try:
            handler(event)
        except Exception as exc:
            logger.opt(exception=False).error(
                "telemetry handler {!r} failed: {}", handler, type(exc).__name__
            )


def emit_rotation(event: RotationEvent) -> None:
    """Emit ``Secret.Rotation.Detected`` and call each rotation handler once."""
    emit(
        TelemetryEvent(
            "Secret.Rotation.Detected",
            event.secret_key,
            event.source,
            version=event.new_version,
            detail=f"old_version={event.old_version}",
        )
    )
    for handler in _rotation_handlers:
        try:
            handler(event)
        except Exception as exc:
            logger.error("rotation handler {!r} failed: {}", handler, type(exc).__name__)


def reset_handlers() -> None:
    """Remove every handler (used by ``atlas_config.testing.reset``)."""
    global _handlers, _rotation_handlers
    _handlers = ()
    _rotation_handlers = ()
