"""The fault matrix: every Key Vault fault x cache state x mode, each cell one test against the real SDK.

The expected outcome of a cell is not read off the code under test. It is
derived by ``expected()`` from three small tables of documented rules:

* ``FAULTS``: what each fault is (transient or not, which error a read that
  cannot be served raises, how many authenticated GETs one attempt makes,
  and whether it needs the process to fetch a token, or to hold one, to bite);
* ``STATES``: what is cached, and whether the vault's breaker is open;
* ``MODES``: production (never falls back) or development (falls back to env).

``docs/reliability.md`` quotes the counts from this module's tables.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from azure.keyvault.secrets._shared import http_challenge_cache

from atlas_config import (
    AtlasConfigError,
    SecretAccessDeniedError,
    SecretFetchError,
    SecretNotFoundError,
    TelemetryEvent,
    add_telemetry_handler,
    get_secret,
)
from atlas_config._breaker import CircuitOpenError
from atlas_config._resolver import RESOLVER
from atlas_config.testing import FakeClock, Fault, KeyVaultEmulator

KEY = "signing-secret"
OTHER = "model-provider-api-key"  # read to open the breaker, and to prime a token
MAX_ATTEMPTS = 3  # ATLAS_SECRETS_MAX_ATTEMPTS' default
TTL = 300.0  # ATLAS_SECRETS_CACHE_TTL's default
DEV_FALLBACK = "dev-fallback-value-for-the-matrix"
DISABLED_VALUE = "disabled-version-must-never-be-served"
# The slow row: each attempt waits this long for an answer that comes SLOW_ANSWER seconds late.
TIMEOUT = 0.5
SLOW_ANSWER = 1.5


def _inject(*faults: Fault) -> Callable[[KeyVaultEmulator], None]:
    """Queue enough copies for every attempt: the outage lasts the whole read."""

    def apply(kv: KeyVaultEmulator) -> None:
        kv.inject(*faults * MAX_ATTEMPTS)

    return apply


def _token_endpoint_down(kv: KeyVaultEmulator) -> None:
    # More than azure-identity's own retries plus ours can consume.
    kv.inject_token_fault(*[Fault(status=500)] * 20)


def _disable(kv: KeyVaultEmulator) -> None:
    kv.set_secret(KEY, DISABLED_VALUE, enabled=False)


def _delete(kv: KeyVaultEmulator) -> None:
    kv.delete_secret(KEY)


def _revoke_tokens(kv: KeyVaultEmulator) -> None:
    kv.expire_tokens()


@dataclass(frozen=True)
class FaultRow:
    """One way Key Vault (or its token endpoint) misbehaves, and what the documented rules say it is."""

    id: str
    apply: Callable[[KeyVaultEmulator], None]
    # Trying again later may succeed: retried, served stale, counted by the breaker.
    transient: bool
    # What a read that can be served from nowhere else raises.
    error: type[AtlasConfigError]
    # Authenticated GETs that one attempt makes (0: the request never carried a valid token).
    gets_per_attempt: int = 1
    # The vault refuses the token with a 401 challenge. The SDK then asks its credential again and
    # resends once, if the refused request carried a token it already held; a cold client's first
    # request is the bare challenge round trip, so it sends its one authenticated GET only once.
    refused: bool = False
    # "fresh": bites only when the process must fetch a token (a cold start);
    # "held": bites only when the process already holds a token; None: always.
    token: Literal["fresh", "held"] | None = None
    env: dict[str, str] = field(default_factory=dict)


FAULTS: list[FaultRow] = [
    FaultRow("503", _inject(Fault(status=503)), True, SecretFetchError),
    FaultRow("500", _inject(Fault(status=500)), True, SecretFetchError),
    FaultRow("502", _inject(Fault(status=502)), True, SecretFetchError),
    FaultRow("504", _inject(Fault(status=504)), True, SecretFetchError),
    FaultRow("429-retry-after", _inject(Fault(status=429, retry_after=0)), True, SecretFetchError),
    FaultRow("408", _inject(Fault(status=408)), True, SecretFetchError),
    FaultRow("dropped-connection", _inject(Fault(drop=True)), True, SecretFetchError),
    FaultRow(
        "slow-past-timeout",
        _inject(Fault(delay=SLOW_ANSWER)),
        True,
        SecretFetchError,
        env={"ATLAS_SECRETS_TIMEOUT": str(TIMEOUT)},
    ),
    FaultRow("token-endpoint-500", _token_endpoint_down, True, SecretFetchError, 0, token="fresh"),
    FaultRow("token-revoked", _revoke_tokens, False, SecretFetchError, 0, token="held"),
    FaultRow("401-token-rejected", _inject(Fault(status=401)), False, SecretFetchError, refused=True),
    FaultRow("403-rbac", _inject(Fault(status=403, code="ForbiddenByRbac")), False, SecretAccessDeniedError),
    FaultRow("403-disabled", _disable, False, SecretAccessDeniedError),
    FaultRow("404", _delete, False, SecretNotFoundError),
    FaultRow("400", _inject(Fault(status=400, code="BadParameter")), False, SecretFetchError),
]


@dataclass(frozen=True)
class State:
    """What the process holds when the fault hits."""

    id: str
    warm: bool  # KEY was read, then the TTL passed (the read is due to refetch)
    breaker_open: bool  # a failed resolution with threshold 1 opened the vault's breaker


STATES: list[State] = [
    State("cold", warm=False, breaker_open=False),
    State("warm-expired", warm=True, breaker_open=False),
    State("breaker-open-cold", warm=False, breaker_open=True),
    State("breaker-open-warm", warm=True, breaker_open=True),
]

MODES: list[str] = ["dev", "production"]


@dataclass(frozen=True)
class Outcome:
    """What a cell must show."""

    value: Literal["vault", "env"] | None  # None: the read raises
    error: type[AtlasConfigError] | None
    gets: int  # authenticated GETs of KEY during the read
    events: Counter[str]
    failure_type: str | None  # error_type of the Secret.Fetch.Failure event
    dropped: bool = False  # the cached entry is gone afterwards


def expected(fault: FaultRow, state: State, mode: str) -> Outcome:
    """Derive a cell's outcome from the rules; nothing here looks at how the library does it."""
    events: Counter[str] = Counter({"Secret.Cache.Miss": 1})
    # Rule 1: an open breaker sends nothing and fails the resolution as a transient CircuitOpenError.
    if state.breaker_open:
        error: type[AtlasConfigError] = CircuitOpenError
        transient, gets = True, 0
        events["Secret.Fetch.Failure"] += 1
    # Rule 2: a token fault only bites when the process needs a token (fresh) or presents one (held).
    elif (fault.token == "fresh" and state.warm) or (fault.token == "held" and not state.warm):
        events["Secret.Fetch.Success"] += 1
        return Outcome("vault", None, 1, events, None)
    # Rule 3: transient faults are retried up to max_attempts; the others are tried once.
    else:
        attempts = MAX_ATTEMPTS if fault.transient else 1
        resends = 2 if fault.refused and state.warm else 1
        error, transient, gets = fault.error, fault.transient, attempts * fault.gets_per_attempt * resends
        events["Secret.Fetch.Retry"] += attempts - 1
        events["Secret.Fetch.Failure"] += 1
    # Rule 4: outside production any vault failure falls back to env (and says so).
    if mode == "dev":
        events.update(["Secret.Fetch.Fallback", "Secret.Fetch.Success"])
        return Outcome("env", None, gets, events, error.__name__)
    # Rule 5: in production a transient failure serves a cached value stale; any other drops it.
    if state.warm and transient:
        events["Secret.Cache.Stale"] += 1
        return Outcome("vault", None, gets, events, error.__name__)
    return Outcome(None, error, gets, events, error.__name__, dropped=state.warm)


CELLS = [
    pytest.param(fault, state, mode, id=f"{fault.id}-{state.id}-{mode}")
    for fault in FAULTS
    for state in STATES
    for mode in MODES
]


def _authenticated_gets(kv: KeyVaultEmulator, wanted: int) -> int:
    """Authenticated GETs of KEY; waits for late ones (a slow answer is logged when it is sent)."""
    deadline = time.monotonic() + SLOW_ANSWER + 2.0
    while True:
        seen = len(kv.secret_requests(KEY))
        if seen >= wanted or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def _open_breaker(kv: KeyVaultEmulator) -> None:
    kv.inject(*[Fault(status=503)] * MAX_ATTEMPTS)
    with pytest.raises(SecretFetchError):
        get_secret(OTHER)
    assert RESOLVER.breaker(RESOLVER.environment().vault_url or "").is_open


@pytest.mark.parametrize(("fault", "state", "mode"), CELLS)
def test_cell(
    fault: FaultRow,
    state: State,
    mode: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    canaries: dict[str, str],
) -> None:
    """One cell: the read's value or error, its authenticated GETs and its events follow the rules."""
    kv: KeyVaultEmulator = request.getfixturevalue(
        "keyvault_emulator" if mode == "dev" else "production_keyvault"
    )
    for key, value in canaries.items():
        kv.set_secret(key, value)
    monkeypatch.setenv("ATLAS_SECRETS_RETRY_DELAY", "0.001")
    if mode == "dev":
        monkeypatch.setenv("SIGNING_SECRET", DEV_FALLBACK)
    if state.breaker_open:
        monkeypatch.setenv("ATLAS_SECRETS_BREAKER_THRESHOLD", "1")
    for name, value in fault.env.items():
        monkeypatch.setenv(name, value)
    want = expected(fault, state, mode)
    # The SDK caches each vault's challenge process-wide; forget it, so "cold" is a fresh process.
    http_challenge_cache.clear()

    with FakeClock() as clock:
        if state.warm:
            assert get_secret(KEY) == canaries[KEY]
            clock.advance(TTL + 1)
        if state.breaker_open:
            _open_breaker(kv)
        fault.apply(kv)
        kv.clear_requests()
        seen: list[TelemetryEvent] = []
        add_telemetry_handler(seen.append)

        if want.error is not None:
            with pytest.raises(want.error) as info:
                get_secret(KEY)
            assert type(info.value) is want.error
        else:
            value = get_secret(KEY)
            assert value == (canaries[KEY] if want.value == "vault" else DEV_FALLBACK)

    assert _authenticated_gets(kv, want.gets) == want.gets
    assert Counter(e.name for e in seen) == want.events
    failures = [e.error_type for e in seen if e.name == "Secret.Fetch.Failure"]
    assert failures == ([want.failure_type] if want.failure_type else [])
    if want.dropped:
        assert RESOLVER.entry(KEY) is None
    if fault.token == "fresh" and want.gets == 0 and not state.breaker_open:
        assert kv.token_requests(), "the token endpoint outage was never reached"


def test_matrix_size() -> None:
    """The matrix is every fault in every state in every mode (the figure docs/reliability.md quotes)."""
    assert len(CELLS) == len(FAULTS) * len(STATES) * len(MODES) == 120
    assert len({f.id for f in FAULTS}) == len(FAULTS)


# -- docs/reliability.md quotes this module ------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def _cell_text(o: Outcome) -> str:
    gets = f"{o.gets} GET" + ("" if o.gets == 1 else "s")
    if o.error is not None:
        return f"{o.error.__name__}{', entry dropped' if o.dropped else ''}; {gets}"
    if o.value == "env":
        return f"env value (fallback); {gets}"
    return f"{'stale value' if o.failure_type else 'fresh value'}; {gets}"


def doc_rows() -> list[str]:
    """The matrix as docs/reliability.md shows it, one row per fault, derived from the rules."""
    by_id = {s.id: s for s in STATES}
    rows = []
    for fault in FAULTS:
        cells = [
            expected(fault, by_id["cold"], "production"),
            expected(fault, by_id["warm-expired"], "production"),
            expected(fault, by_id["breaker-open-cold"], "production"),
            expected(fault, by_id["breaker-open-warm"], "production"),
            expected(fault, by_id["cold"], "dev"),
            expected(fault, by_id["warm-expired"], "dev"),
        ]
        kind = "transient" if fault.transient else "permanent"
        rows.append(f"| {fault.id} | {kind} | " + " | ".join(_cell_text(c) for c in cells) + " |")
    return rows


def _doc_count(label: str) -> int:
    match = re.search(rf"^\| {re.escape(label)} \| ([\d,]+) \|", DOC.read_text(encoding="utf-8"), re.M)
    assert match, f"docs/reliability.md has no '{label}' row"
    return int(match.group(1).replace(",", ""))


def test_reliability_doc_quotes_the_matrix() -> None:
    """docs/reliability.md states this module's counts and its table is the rules' table."""
    assert _doc_count("Faults") == len(FAULTS)
    assert _doc_count("Cache states") == len(STATES)
    assert _doc_count("Modes") == len(MODES)
    assert _doc_count("Fault matrix cells") == len(CELLS)
    text = DOC.read_text(encoding="utf-8")
    missing = [row for row in doc_rows() if row not in text]
    assert missing == []
