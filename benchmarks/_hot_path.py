"""The per-request cost: a cache hit against pydantic's plain ``SecretStr.get_secret_value()``.

The floor is the same expression on a plain pydantic-settings model whose
field is a ``SecretStr`` (``plain.signing_secret.get_secret_value()``): an
attribute read and a method call, which is all an app would pay without
atlas-config. The hit path does not depend on where the value came from, so
the value comes from an environment variable and no vault is involved.
"""

from __future__ import annotations

import timeit

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from . import Figure, clean_environment

TYPED_TARGET = 10.0
GET_SECRET_TARGET = 30.0


class Plain(BaseSettings):
    """What an app would have without atlas-config: a SecretStr field read from the environment."""

    signing_secret: SecretStr


def run(*, quick: bool = False) -> tuple[list[Figure], dict[str, float]]:
    """Interleaved timeit repeats; the minimum of each is the least-disturbed estimate."""
    from atlas_config import AtlasSecrets, get_secret
    from atlas_config.testing import reset

    with clean_environment(SIGNING_SECRET="benchmark-value"):
        reset()
        plain = Plain()  # type: ignore[call-arg]  # from the environment
        settings = AtlasSecrets()
        assert settings.signing_secret.get_secret_value() == plain.signing_secret.get_secret_value()
        assert get_secret("signing-secret") == "benchmark-value"
        namespace = {"plain": plain, "settings": settings, "get_secret": get_secret}
        timers = {
            "floor": timeit.Timer("plain.signing_secret.get_secret_value()", globals=namespace),
            "typed": timeit.Timer("settings.signing_secret.get_secret_value()", globals=namespace),
            "get_secret": timeit.Timer("get_secret('signing-secret')", globals=namespace),
        }
        number, repeats = (20_000, 5) if quick else (100_000, 25)
        runs: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(repeats):
            for name, timer in timers.items():  # interleaved: drift hits all three alike
                runs[name].append(timer.timeit(number) / number * 1e9)
        reset()

    best = {name: min(values) for name, values in runs.items()}
    typed, via_get = best["typed"] / best["floor"], best["get_secret"] / best["floor"]
    floor = f"{best['floor']:.0f} ns"
    figures = [
        Figure(
            "Hot path",
            "typed field, cache hit",
            f"{best['typed']:.0f} ns",
            floor,
            typed,
            f"<= {TYPED_TARGET:.0f}x",
            typed <= TYPED_TARGET,
        ),
        Figure(
            "Hot path",
            "get_secret(), cache hit",
            f"{best['get_secret']:.0f} ns",
            floor,
            via_get,
            f"<= {GET_SECRET_TARGET:.0f}x",
            via_get <= GET_SECRET_TARGET,
        ),
    ]
    return figures, best
