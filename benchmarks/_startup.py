"""Start-up: ``AtlasSecrets().prefetch()`` against pydantic-settings' ``AzureKeyVaultSettingsSource``.

Both run in this process against one emulator holding 60 unrelated secrets
plus the three, reached the production way: ``https://atlas-bench.vault.azure.net``
routed in-process to the emulator, TLS verified against the real host name,
and the SDK's challenge-resource verification on (pydantic-settings builds its
``SecretClient(url, credential)`` itself, so ``verify_challenge_resource=False``
could not be passed to it; routing makes the flag unnecessary for both).

Every run is a cold start, paid equally by both sides:

* a new ``DefaultAzureCredential`` (atlas-config: ``testing.reset()`` drops its
  client and credential; pydantic-settings: a new one per model), so each
  fetches a managed-identity token;
* a new ``SecretClient`` and connection pool, so each does a TLS handshake;
* the Azure SDK's process-wide challenge cache is emptied, so each does the
  Key Vault challenge round trip, as a fresh process does.

Imports are paid once, by an untimed warm-up of each side. The timed region
is the construction of the settings with every secret resolved: for
pydantic-settings that includes creating its credential, which atlas-config
does inside its first read. Runs alternate which side goes first.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import SecretStr
from pydantic_settings import AzureKeyVaultSettingsSource, BaseSettings, PydanticBaseSettingsSource

from . import Figure, clean_environment, median

VAULT_NAME = "atlas-bench"
UNRELATED = 60
LATENCIES_MS = (0, 5, 20, 50)
TARGET_LATENCY_MS = 20
TARGET_RATIO = 0.5


class PydanticSettingsModel(BaseSettings):
    """The same three secrets through pydantic-settings' own Key Vault source."""

    service_bus_connection_string: SecretStr
    model_provider_api_key: SecretStr
    signing_secret: SecretStr

    vault_url: ClassVar[str] = ""
    credential: ClassVar[Any] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # dash_to_underscore: the field signing_secret reads the Key Vault secret "signing-secret".
        return (
            AzureKeyVaultSettingsSource(settings_cls, cls.vault_url, cls.credential, dash_to_underscore=True),
        )


@dataclass(frozen=True, slots=True)
class Point:
    latency_ms: int
    ours_ms: float
    theirs_ms: float
    ours_requests: dict[str, int]
    theirs_requests: dict[str, int]


def _kinds(records: list[Any]) -> dict[str, int]:
    """Requests by what they were: challenge, token, list page, authenticated GET."""
    counts: Counter[str] = Counter()
    for r in records:
        if r.kind == "token":
            counts["token"] += 1
        elif not r.authenticated:
            counts["challenge"] += 1
        elif r.operation == "list":
            counts["list"] += 1
        elif r.operation == "get":
            counts["get"] += 1
        else:
            counts[r.operation] += 1
    return {name: counts.get(name, 0) for name in ("challenge", "token", "list", "get")} | dict(counts)


def run(*, quick: bool = False) -> tuple[list[Figure], list[Point]]:
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets._shared import http_challenge_cache

    from atlas_config import ALLOWED_SECRET_KEYS, AtlasSecrets
    from atlas_config.testing import KeyVaultEmulator, reset

    repeats = 2 if quick else 7
    points: list[Point] = []
    with KeyVaultEmulator() as kv, clean_environment(ATLAS_ENV="production"):
        os.environ.update(kv.environ(vault_name=VAULT_NAME))
        PydanticSettingsModel.vault_url = f"https://{VAULT_NAME}.vault.azure.net"
        for i in range(UNRELATED):
            kv.set_secret(f"unrelated-{i:02d}", f"unrelated-value-{i}")
        expected = {key: f"value-of-{key}" for key in ALLOWED_SECRET_KEYS}
        for key, value in expected.items():
            kv.set_secret(key, value)

        def ours() -> float:
            reset()
            http_challenge_cache.clear()
            started = time.perf_counter()
            settings = AtlasSecrets().prefetch()
            elapsed = time.perf_counter() - started
            assert settings.signing_secret.get_secret_value() == expected["signing-secret"]
            reset()
            return elapsed

        def theirs() -> float:
            http_challenge_cache.clear()
            started = time.perf_counter()
            credential = PydanticSettingsModel.credential = DefaultAzureCredential()
            settings = PydanticSettingsModel()  # type: ignore[call-arg]  # from the vault
            elapsed = time.perf_counter() - started
            assert settings.signing_secret.get_secret_value() == expected["signing-secret"]
            credential.close()
            return elapsed

        ours()  # warm-up: imports, TLS context, the emulator's first connections
        theirs()
        for latency in LATENCIES_MS:
            kv.latency = latency / 1000
            ours_times: list[float] = []
            theirs_times: list[float] = []
            ours_requests: dict[str, int] = {}
            theirs_requests: dict[str, int] = {}
            for n in range(repeats):
                order = ("ours", "theirs") if n % 2 == 0 else ("theirs", "ours")
                for side in order:
                    kv.clear_requests()
                    if side == "ours":
                        ours_times.append(ours())
                        ours_requests = _kinds(kv.requests)
                    else:
                        theirs_times.append(theirs())
                        theirs_requests = _kinds(kv.requests)
            points.append(
                Point(
                    latency,
                    median(ours_times) * 1000,
                    median(theirs_times) * 1000,
                    ours_requests,
                    theirs_requests,
                )
            )
        kv.latency = 0
        reset()

    figures = []
    for p in points:
        ratio = p.ours_ms / p.theirs_ms
        at_target = p.latency_ms == TARGET_LATENCY_MS
        figures.append(
            Figure(
                "Start-up",
                f"cold start at {p.latency_ms} ms latency",
                f"{p.ours_ms:.0f} ms",
                f"{p.theirs_ms:.0f} ms",
                ratio,
                f"<= {TARGET_RATIO}x" if at_target else "",
                ratio <= TARGET_RATIO if at_target else None,
            )
        )
    target = next(p for p in points if p.latency_ms == TARGET_LATENCY_MS)
    figures.append(
        Figure(
            "Start-up",
            f"list calls at {TARGET_LATENCY_MS} ms",
            str(target.ours_requests["list"]),
            str(target.theirs_requests["list"]),
            None,
            "0",
            target.ours_requests["list"] == 0,
        )
    )
    return figures, points
