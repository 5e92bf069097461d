"""The smallest app: typed settings with a field of its own, secrets from Key Vault or ``.env``.

Run it against a local Key Vault emulator (two shells)::

    atlas-config emulator --secrets-file .env.development.example   # then paste its export lines
    PORT=8080 python examples/minimal_app.py                          # in the shell with the exports

or with no vault at all: ``cp .env.development.example .env.development`` and run the second line.
In production set ``ATLAS_ENV=production`` and ``KEYVAULT_NAME``; the code does not change.
"""

from __future__ import annotations

import sys

from atlas_config import AtlasSecrets, PrefetchError


class Settings(AtlasSecrets):
    """The app's settings: the three allowlisted secrets plus its own ``port`` (from ``PORT``)."""

    port: int = 8000


def main() -> int:
    try:
        # Fail at start-up, naming every missing secret, rather than on the first request.
        settings = Settings().prefetch()
    except PrefetchError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"listening on port {settings.port}")
    # str() and repr() of a secret are masked, so logging the settings object is safe.
    print(f"signing secret: {settings.signing_secret}")
    print(f"settings: {settings!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
