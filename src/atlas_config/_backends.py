"""What a backend returns: a value and where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Key Vault refuses secret values over 25 KB. A bigger value from a file or env could never be
#: deployed to the vault, so every local source refuses it too.
MAX_SECRET_BYTES: Final = 25 * 1024


@dataclass(frozen=True, slots=True)
class Fetched:
    """One value read from one source. ``repr`` hides the value."""

    value: str
    source: str
    version: str | None = None
    # Epoch seconds of Key Vault's ``exp`` attribute; never cache past it.
    expires_on: float | None = None

    def __repr__(self) -> str:
        return f"Fetched(value='**********', source={self.source!r}, version={self.version!r})"
