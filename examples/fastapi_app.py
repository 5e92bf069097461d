"""A FastAPI service: secrets prefetched at start-up, settings as a dependency, a client rebuilt on rotation.

Run it against a local Key Vault emulator (needs ``pip install fastapi uvicorn``)::

    atlas-config emulator --secrets-file .env.development.example   # then paste its export lines
    uvicorn fastapi_app:app --app-dir examples                        # in the shell with the exports
    curl -X POST localhost:8000/messages -H 'content-type: application/json' -d '{"body": "hi"}'

The app does not start if a secret is missing (``aprefetch()`` in the lifespan). Each request reads
its secrets through the cache (no Key Vault call within the TTL). When a refresh finds a new version
of the Service Bus connection string, the rotation handler builds a new client and closes the old.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

import atlas_config
from atlas_config import AtlasSecrets, RotationEvent, add_rotation_handler, remove_rotation_handler


class Settings(AtlasSecrets):
    """The service's settings: the allowlisted secrets plus a name of its own (``SERVICE_NAME``)."""

    service_name: str = "atlas-example"


class ServiceBusClient:
    """Stands in for ``azure.servicebus.ServiceBusClient``: built from a connection string."""

    _generations = itertools.count(1)

    def __init__(self, connection_string: str) -> None:
        self._connection_string = connection_string
        self.generation = next(self._generations)
        self.closed = False
        self.sent: list[str] = []

    @classmethod
    def from_connection_string(cls, connection_string: str) -> ServiceBusClient:
        return cls(connection_string)

    def send(self, message: str) -> None:
        if self.closed:
            raise RuntimeError("this client was closed after a rotation")
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:  # never the connection string
        return f"ServiceBusClient(generation={self.generation}, closed={self.closed})"


def build_bus(settings: Settings) -> ServiceBusClient:
    # A cache hit: called right after prefetch, or from the rotation handler once the new value is cached.
    return ServiceBusClient.from_connection_string(settings.service_bus_connection_string.get_secret_value())


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = await Settings().aprefetch()  # fail fast: no secrets, no start
    app.state.settings = settings
    app.state.bus = build_bus(settings)

    def rebuild_bus(event: RotationEvent) -> None:
        if event.secret_key == "service-bus-connection-string":
            old, app.state.bus = app.state.bus, build_bus(settings)
            old.close()

    add_rotation_handler(rebuild_bus)
    try:
        yield
    finally:
        remove_rotation_handler(rebuild_bus)
        app.state.bus.close()
        await atlas_config.aclose()  # the aio Key Vault clients of this event loop


app = FastAPI(lifespan=lifespan)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_bus(request: Request, settings: SettingsDep) -> ServiceBusClient:
    # A cached read, nearly free; past the TTL it refreshes, and a new version fires rebuild_bus first.
    await settings.service_bus_connection_string.aget_secret_value()
    bus: ServiceBusClient = request.app.state.bus
    return bus


BusDep = Annotated[ServiceBusClient, Depends(get_bus)]


class Message(BaseModel):
    body: str


@app.get("/healthz")
async def healthz(settings: SettingsDep) -> dict[str, str]:
    return {"status": "ok", "service": settings.service_name}


@app.post("/messages")
async def send_message(message: Message, settings: SettingsDep, bus: BusDep) -> dict[str, object]:
    key = await settings.signing_secret.aget_secret_value()
    signature = hmac.new(key.encode(), message.body.encode(), hashlib.sha256).hexdigest()
    bus.send(message.body)
    return {"signature": signature, "bus_client_generation": bus.generation}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
