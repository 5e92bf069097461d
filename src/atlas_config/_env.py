"""The development backend: environment variables, then ``.env.development``, then ``.env``.

Never used in production (the resolver's plan decides that, in one place).
``.env`` files are read strictly: a malformed line is an error naming the
file and line number (never the line, which may hold a value), because
python-dotenv's usual warning-and-skip would silently drop a secret.
Values are taken literally: no ``${VAR}`` expansion, so a ``$`` in a secret
stays a ``$``. A value over Key Vault's 25 KB limit is refused: it works in
development and could never be deployed.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ._backends import MAX_SECRET_BYTES, Fetched
from ._errors import ConfigurationError
from ._keys import env_name

DOTENV_FILES: Final = (".env.development", ".env")


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file strictly; raise ``ConfigurationError`` on a malformed line."""
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original
        if binding.error:
            # python-dotenv counts the binding's leading blank lines into it.
            stripped = original.string.lstrip("\r\n")
            line = original.line + original.string[: len(original.string) - len(stripped)].count("\n")
            raise ConfigurationError(
                f"{path}, line {line}: malformed line (expected KEY=VALUE, quotes closed); fix or remove it"
            )
        if binding.key is not None and binding.value is not None:
            values[binding.key] = binding.value
    return values


class EnvBackend:
    """Reads ``SIGNING_SECRET`` style names from the environment, then the ``.env`` files in ``root``."""

    def __init__(self, environ: Mapping[str, str] | None = None, root: Path | None = None) -> None:
        self._environ = environ
        self._root = root

    def fetch(self, key: str) -> Fetched | None:
        """The first source that defines ``key``'s env name, or ``None``. Empty values are returned as-is."""
        name = env_name(key)
        environ = os.environ if self._environ is None else self._environ
        if name in environ:
            return _sized(key, name, Fetched(environ[name], "env"))
        root = Path.cwd() if self._root is None else self._root
        for filename in DOTENV_FILES:
            path = root / filename
            if path.is_file():
                values = read_dotenv(path)
                if name in values:
                    return _sized(key, name, Fetched(values[name], filename))
        return None


def _sized(key: str, name: str, fetched: Fetched) -> Fetched:
    # Cheap first: a str of at most MAX/4 characters cannot exceed MAX bytes in UTF-8.
    value = fetched.value
    if len(value) * 4 > MAX_SECRET_BYTES and len(value.encode(errors="surrogatepass")) > MAX_SECRET_BYTES:
        where = "the environment" if fetched.source == "env" else fetched.source
        raise ConfigurationError(
            f"secret {key!r}: {name} in {where} is larger than {MAX_SECRET_BYTES} bytes, Key Vault's limit "
            "for a secret, so it could never be deployed; check that the right value is set"
        )
    return fetched
