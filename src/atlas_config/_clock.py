"""The one clock every cache decision reads, swappable by ``atlas_config.testing.FakeClock``.

``now`` is monotonic (ages, deadlines); ``wall`` is epoch seconds, used only to
turn Key Vault's ``exp`` attribute into a monotonic deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable

now: Callable[[], float] = time.monotonic
wall: Callable[[], float] = time.time
