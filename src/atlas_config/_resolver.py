"""The resolver: cache, single-flight, retry, breaker, guard, and the order of sources.

A read goes: cache (fresh? serve; nearly stale? serve and refresh in the
background) -> single-flight (one fetch per key, however many readers) ->
sources in the plan's order (mounted files, Key Vault with retry and breaker,
then env/.env outside production only) -> store, emit, detect rotation.
When a refresh fails with a transient error, a cached value younger than
``ttl + max_stale`` is served stale; a 403/404 drops it instead.

Sync and async reads share every decision here; they differ only in how
they wait (threads and ``threading.Event`` vs tasks and ``asyncio.Future``).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from . import _clock
from ._backends import Fetched
from ._breaker import CircuitBreaker, CircuitOpenError
from ._env import EnvBackend
from ._environment import (
    MAX_RETRY_DELAY,
    MAX_TTL,
    Environment,
    attempts,
    check_version,
    load_environment,
    seconds,
)
from ._errors import AtlasConfigError, SecretFetchError, SecretNotFoundError
from ._flight import AsyncSingleFlight, SingleFlight
from ._keys import env_name
from ._keyvault import KeyVaultBackend, retry_after
from ._telemetry import RotationEvent, TelemetryEvent, emit, emit_rotation, has_handlers

if TYPE_CHECKING:
    import stamina

    from ._files import FilesBackend

Slot = tuple[str, str | None]  # (key, pinned version or None for latest)

# Refresh-ahead starts at 70-90% of the TTL, drawn per entry, so replicas
# that started together spread their refreshes instead of hitting the vault
# in lockstep.
_REFRESH_FROM: Final = 0.7
_REFRESH_TO: Final = 0.9
# A Retry-After beyond this is not worth blocking a read for.
_MAX_RETRY_AFTER: Final = 60.0


@dataclass(slots=True)
class Entry:
    """A cached value. Mutable only in ``refresh_at`` and ``stale_*`` (set after a failed refresh)."""

    value: str
    source: str
    version: str | None
    fetched_at: float
    # Fraction of the TTL after which a read refreshes in the background.
    refresh_at: float
    # Monotonic deadline from Key Vault's ``exp``; inf when the secret never expires.
    valid_until: float
    pinned: bool
    # After a failed refresh served this value stale: until then, reads get it without asking the
    # vault again, so an outage costs one blocked read per window, not every read.
    stale_until: float = 0.0
    stale_error: str | None = None

    def __repr__(self) -> str:
        return f"Entry(value='**********', source={self.source!r}, version={self.version!r})"


@dataclass(frozen=True, slots=True)
class SecretCacheStats:
    """What ``get_secret_cache_stats()`` returns: names and counters, never values.

    Counters are plain integers updated without a lock on the hot path, so
    under heavy thread contention they are monitoring figures, not an audit.
    """

    size: int
    keys: list[str]
    hits: int
    misses: int
    fetch_successes: int
    fetch_failures: int
    retries: int
    fallbacks: int
    stale_served: int


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How one read may be served. Built once per typed field, or per ``get_secret`` call."""

    ttl: float
    max_attempts: int
    retry_delay: float
    max_stale: float
    version: str | None = None


class Resolver:
    """Process-wide state: the cache, the backends per vault, breakers and counters."""

    def __init__(self) -> None:
        self.cache: dict[Slot, Entry] = {}
        self.hits = 0
        self.misses = 0
        self.fetch_successes = 0
        self.fetch_failures = 0
        self.retries = 0
        self.fallbacks = 0
        self.stale_served = 0
        self._env: Environment | None = None
        self._vaults: dict[str, KeyVaultBackend] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._files: FilesBackend | None = None
        self._init_concurrency()

    def _init_concurrency(self) -> None:
        self._lock = threading.Lock()
        self._flights: SingleFlight[Slot, str] = SingleFlight()
        # asyncio futures belong to one loop: one set of flights per loop.
        self._aflights: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncSingleFlight[Slot, str]] = (
            weakref.WeakKeyDictionary()
        )
        self._refreshing: set[Slot] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- configuration -------------------------------------------------------------------------------

    def environment(self) -> Environment:
        """The current decision, read from ``os.environ`` on first use."""
        env = self._env
        return env if env is not None else self.configure(load_environment(os.environ))

    def configure(self, env: Environment) -> Environment:
        """Adopt ``env``. A different vault or mode empties the cache: a value read from env in
        development must never be served after production was switched on."""
        with self._lock:
            if env != self._env and self._env is not None:
                old = self._env
                if (old.production, old.vault_url, old.secrets_dir) != (
                    env.production,
                    env.vault_url,
                    env.secrets_dir,
                ):
                    self.cache.clear()
            self._env = env
            if env.secrets_dir is not None:
                from ._files import FilesBackend

                if self._files is None or self._files.root != env.secrets_dir:
                    self._files = FilesBackend(env.secrets_dir)
            else:
                self._files = None
        return env

    def options(
        self,
        key: str,
        *,
        cache_ttl: float | timedelta | None = None,
        max_attempts: int | None = None,
        retry_delay: float | timedelta | None = None,
        version: str | None = None,
    ) -> ReadOptions:
        """Fill unset options from the process defaults (``ATLAS_SECRETS_*``) and validate them."""
        d = self.environment().defaults
        pinned = d.key_version.get(key) if version is None else check_version(version, "version")
        return ReadOptions(
            ttl=d.ttl_for(key) if cache_ttl is None else seconds(cache_ttl, "cache_ttl", maximum=MAX_TTL),
            max_attempts=d.max_attempts if max_attempts is None else attempts(max_attempts, "max_attempts"),
            retry_delay=d.retry_delay
            if retry_delay is None
            else seconds(retry_delay, "initial_retry_delay", maximum=MAX_RETRY_DELAY),
            max_stale=d.max_stale,
            version=pinned,
        )

    def vault(self) -> KeyVaultBackend | None:
        env = self.environment()
        url = env.vault_url
        if url is None:
            return None
        backend = self._vaults.get(url)
        if backend is None:
            with self._lock:
                backend = self._vaults.get(url)
                if backend is None:
                    backend = KeyVaultBackend(
                        url,
                        verify_challenge_resource=env.verify_challenge_resource,
                        timeout=env.defaults.timeout,
                    )
                    self._vaults[url] = backend
                    self._breakers[url] = CircuitBreaker(
                        url, env.defaults.breaker_threshold, env.defaults.breaker_cooldown
                    )
        return backend

    def breaker(self, vault_url: str) -> CircuitBreaker:
        return self._breakers[vault_url]

    # -- the cache -----------------------------------------------------------------------------------

    def cached(
        self, key: str, opts: ReadOptions, background: Callable[[Slot, ReadOptions], None]
    ) -> str | None:
        """A cached value the read may use, or ``None``. Schedules refresh-ahead when due."""
        slot = (key, opts.version)
        entry = self.cache.get(slot)
        if entry is None:
            return None
        now = _clock.now()
        age = now - entry.fetched_at
        if now >= entry.valid_until:
            return None
        if not entry.pinned and age >= opts.ttl:
            if now < entry.stale_until and age < opts.ttl + opts.max_stale:
                # Logged once, when the refresh failed; at request rate the repeats are metrics.
                self._emit_stale(key, entry, log=False)
                return entry.value
            return None
        if not entry.pinned and age >= opts.ttl * entry.refresh_at:
            background(slot, opts)
        self.hits += 1
        if has_handlers():
            emit(TelemetryEvent("Secret.Cache.Hit", key, "cache", version=entry.version))
        return entry.value

    def _store(self, key: str, opts: ReadOptions, fetched: Fetched) -> str:
        slot = (key, opts.version)
        now = _clock.now()
        valid_until = float("inf")
        if fetched.expires_on is not None:
            left = fetched.expires_on - _clock.wall()
            valid_until = now + left
            if left <= self.environment().defaults.expiry_warning:
                emit(
                    TelemetryEvent(
                        "Secret.Expiry.Warning",
                        key,
                        fetched.source,
                        version=fetched.version,
                        detail=f"expires in {max(left, 0.0):.0f}s",
                    )
                )
        old = self.cache.get(slot)
        entry = Entry(
            value=fetched.value,
            source=fetched.source,
            version=fetched.version,
            fetched_at=now,
            refresh_at=random.uniform(_REFRESH_FROM, _REFRESH_TO),
            valid_until=valid_until,
            pinned=opts.version is not None,
        )
        if valid_until > now:
            self.cache[slot] = entry
        else:
            self.cache.pop(slot, None)
        if old is not None and old.version != fetched.version and fetched.version is not None:
            emit_rotation(RotationEvent(key, old.version, fetched.version, fetched.source))
        return fetched.value

    def _stale_or_raise(self, key: str, opts: ReadOptions, exc: AtlasConfigError) -> str:
        """After a failed fetch: serve a stale value on a transient error, drop it on a revocation."""
        slot = (key, opts.version)
        entry = self.cache.get(slot)
        transient = isinstance(exc, SecretFetchError) and exc.transient
        if entry is not None and not transient:
            # 403/404: disabled, deleted or access revoked. Never serve it again.
            self.cache.pop(slot, None)
            raise exc
        if entry is not None:
            now = _clock.now()
            age = now - entry.fetched_at
            if now < entry.valid_until and age < opts.ttl + opts.max_stale:
                # Wait a full TTL before refreshing ahead again, so a dead vault is not hammered.
                entry.refresh_at = 1.0
                if age < opts.ttl:
                    return entry.value  # a refresh-ahead failed; the value is not stale yet
                entry.stale_until = now + min(opts.ttl, self.environment().defaults.breaker_cooldown)
                entry.stale_error = type(exc).__name__
                self._emit_stale(key, entry)
                return entry.value
        raise exc

    def _emit_stale(self, key: str, entry: Entry, *, log: bool = True) -> None:
        self.stale_served += 1
        if log or has_handlers():
            event = TelemetryEvent(
                "Secret.Cache.Stale", key, entry.source, version=entry.version, error_type=entry.stale_error
            )
            emit(event, log=log)

    def clear(self) -> None:
        """Empty the cache (counters and clients stay)."""
        with self._lock:
            self.cache.clear()
        emit(TelemetryEvent("Secret.Cache.Clear"))

    def stats(self) -> SecretCacheStats:
        keys = sorted({key for key, _ in self.cache})
        return SecretCacheStats(
            size=len(self.cache),
            keys=keys,
            hits=self.hits,
            misses=self.misses,
            fetch_successes=self.fetch_successes,
            fetch_failures=self.fetch_failures,
            retries=self.retries,
            fallbacks=self.fallbacks,
            stale_served=self.stale_served,
        )

    def entry(self, key: str, version: str | None = None) -> Entry | None:
        """The cache entry for ``key`` (for ``atlas-config check``: source and version)."""
        return self.cache.get((key, version))

    # -- the plan: which sources, in which order ------------------------------------------------------

    def _not_found(self, key: str) -> SecretNotFoundError:
        env = self.environment()
        if env.production:
            where = "in ATLAS_SECRETS_DIR" if env.vault_url is None else f"in Key Vault {env.vault_url}"
            return SecretNotFoundError(
                f"secret {key!r} is not {where}; add it there (production never reads env)"
            )
        return SecretNotFoundError(
            f"secret {key!r} is not set: set {env_name(key)} in the environment, .env.development or .env, "
            "or set KEYVAULT_NAME to read it from Key Vault"
        )

    def _checked(self, key: str, fetched: Fetched) -> Fetched:
        if not fetched.value.strip():
            raise SecretNotFoundError(
                f"secret {key!r} from {fetched.source} is empty or whitespace; give it a real value there"
            )
        return fetched

    def _local_success(self, key: str, fetched: Fetched) -> Fetched:
        """Count and announce a read from files or env (vault reads are counted in ``_vault_done``)."""
        self._checked(key, fetched)
        self.fetch_successes += 1
        emit(TelemetryEvent("Secret.Fetch.Success", key, fetched.source, 1, version=fetched.version))
        return fetched

    def _before_vault(self, key: str, opts: ReadOptions) -> Fetched | None:
        """Mounted files come first; ``None`` means go on to the vault."""
        if self._files is not None and opts.version is None:
            try:
                found = self._files.fetch(key)
            except AtlasConfigError as exc:
                self.fetch_failures += 1
                emit(TelemetryEvent("Secret.Fetch.Failure", key, "file", 1, error_type=type(exc).__name__))
                raise
            if found is not None:
                return self._local_success(key, found)
        return None

    def _after_vault(self, key: str, exc: AtlasConfigError | None) -> Fetched:
        """No vault, or the vault failed: env/.env outside production, else raise."""
        env = self.environment()
        if env.production:
            raise exc or self._not_found(key)
        found = EnvBackend().fetch(key)
        if found is None:
            raise exc or self._not_found(key)
        if exc is not None:
            self.fallbacks += 1
            emit(
                TelemetryEvent(
                    "Secret.Fetch.Fallback",
                    key,
                    found.source,
                    error_type=type(exc).__name__,
                    detail="Key Vault failed outside production; using the local value",
                )
            )
        return self._local_success(key, found)

    def _retry_hook(self, exc: Exception) -> bool | float:
        if isinstance(exc, CircuitOpenError) or not isinstance(exc, SecretFetchError) or not exc.transient:
            return False
        wait = retry_after(exc)
        return True if wait is None else min(wait, _MAX_RETRY_AFTER)

    def _retry(self, opts: ReadOptions, probe: bool) -> stamina._core._RetryContextIterator:
        # Imported here, on the vault path: stamina and tenacity are a tenth of `import atlas_config`.
        import stamina

        return stamina.retry_context(
            on=self._retry_hook,
            attempts=1 if probe else opts.max_attempts,
            timeout=None,
            wait_initial=opts.retry_delay,
            wait_max=max(opts.retry_delay * 8, opts.retry_delay),
            wait_jitter=opts.retry_delay,
        )

    def _vault_done(
        self,
        key: str,
        breaker: CircuitBreaker,
        started: float,
        attempt: int,
        result: Fetched | AtlasConfigError,
    ) -> None:
        ms = (_clock.now() - started) * 1000
        if isinstance(result, Fetched):
            breaker.success()
            self.fetch_successes += 1
            emit(TelemetryEvent("Secret.Fetch.Success", key, "keyvault", attempt, ms, version=result.version))
            return
        if isinstance(result, SecretFetchError) and result.transient:
            if not isinstance(result, CircuitOpenError):
                breaker.failure()
        else:
            breaker.success()  # the vault answered: it is up
        self.fetch_failures += 1
        emit(TelemetryEvent("Secret.Fetch.Failure", key, "keyvault", attempt, ms, type(result).__name__))

    def _plan(self, key: str, opts: ReadOptions) -> Fetched | KeyVaultBackend:
        """Mounted files first; then the vault to call, if one is configured; else env (dev) or raise."""
        found = self._before_vault(key, opts)
        if found is not None:
            return found
        vault = self.vault()
        return self._after_vault(key, None) if vault is None else vault

    def _attempt(self, key: str, attempt: int) -> int:
        if attempt > 1:
            # Counted here, not in the retry hook: the hook also runs on the last failure.
            self.retries += 1
            emit(TelemetryEvent("Secret.Fetch.Retry", key, "keyvault", attempt))
        return attempt

    def fetch(self, key: str, opts: ReadOptions) -> Fetched:
        """Fetch from the plan's sources, with retry; no caching."""
        vault = self._plan(key, opts)
        if isinstance(vault, Fetched):
            return vault
        breaker = self.breaker(vault.vault_url)
        started, attempt, probe = _clock.now(), 0, False
        try:
            probe = breaker.before_call(key)
            for attempt_ctx in self._retry(opts, probe):
                with attempt_ctx:
                    attempt = self._attempt(key, attempt_ctx.num)
                    fetched = self._checked(key, vault.fetch(key, opts.version))
        except AtlasConfigError as exc:
            self._vault_done(key, breaker, started, attempt, exc)
            return self._after_vault(key, exc)
        except BaseException:
            breaker.abandon(probe)
            raise
        self._vault_done(key, breaker, started, attempt, fetched)
        return fetched

    async def afetch(self, key: str, opts: ReadOptions) -> Fetched:
        """``fetch`` through the ``aio`` client."""
        vault = self._plan(key, opts)
        if isinstance(vault, Fetched):
            return vault
        breaker = self.breaker(vault.vault_url)
        started, attempt, probe = _clock.now(), 0, False
        try:
            probe = breaker.before_call(key)
            async for attempt_ctx in self._retry(opts, probe):
                with attempt_ctx:
                    attempt = self._attempt(key, attempt_ctx.num)
                    fetched = self._checked(key, await vault.afetch(key, opts.version))
        except AtlasConfigError as exc:
            self._vault_done(key, breaker, started, attempt, exc)
            return self._after_vault(key, exc)
        except BaseException:
            breaker.abandon(probe)
            raise
        self._vault_done(key, breaker, started, attempt, fetched)
        return fetched

    # -- sync reads ----------------------------------------------------------------------------------

    def read(self, key: str, opts: ReadOptions) -> str:
        """Serve ``key`` from the cache or fetch it, once per key however many threads ask."""
        value = self.cached(key, opts, self._refresh_in_background)
        if value is not None:
            return value
        self.misses += 1
        emit(TelemetryEvent("Secret.Cache.Miss", key, version=opts.version))
        return self._resolve(key, opts)

    def _resolve(self, key: str, opts: ReadOptions) -> str:
        return self._flights.run((key, opts.version), lambda: self._fetch_and_store(key, opts))

    def _fetch_and_store(self, key: str, opts: ReadOptions) -> str:
        try:
            return self._store(key, opts, self.fetch(key, opts))
        except AtlasConfigError as exc:
            return self._stale_or_raise(key, opts, exc)

    def _refresh_in_background(self, slot: Slot, opts: ReadOptions) -> None:
        with self._lock:
            if slot in self._refreshing or slot in self._flights:
                return
            self._refreshing.add(slot)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="atlas-config-refresh")
            executor = self._executor
        executor.submit(self._refresh, slot, opts)

    def _refresh(self, slot: Slot, opts: ReadOptions) -> None:
        try:
            self._resolve(slot[0], opts)
        except AtlasConfigError:
            pass  # already emitted as Secret.Fetch.Failure; the next read past the TTL retries
        finally:
            with self._lock:
                self._refreshing.discard(slot)

    # -- async reads ---------------------------------------------------------------------------------

    async def aread(self, key: str, opts: ReadOptions) -> str:
        """``read`` for ``async`` code: the ``aio`` client, tasks instead of threads."""
        value = self.cached(key, opts, self._arefresh_in_background)
        if value is not None:
            return value
        self.misses += 1
        emit(TelemetryEvent("Secret.Cache.Miss", key, version=opts.version))
        return await self._aresolve(key, opts)

    def _loop_flights(self) -> AsyncSingleFlight[Slot, str]:
        loop = asyncio.get_running_loop()
        flights = self._aflights.get(loop)
        if flights is None:
            flights = self._aflights[loop] = AsyncSingleFlight()
        return flights

    async def _aresolve(self, key: str, opts: ReadOptions) -> str:
        return await self._loop_flights().run((key, opts.version), lambda: self._afetch_and_store(key, opts))

    async def _afetch_and_store(self, key: str, opts: ReadOptions) -> str:
        try:
            return self._store(key, opts, await self.afetch(key, opts))
        except AtlasConfigError as exc:
            return self._stale_or_raise(key, opts, exc)

    def _arefresh_in_background(self, slot: Slot, opts: ReadOptions) -> None:
        if slot in self._refreshing or slot in self._loop_flights():
            return
        self._refreshing.add(slot)
        task = asyncio.get_running_loop().create_task(self._arefresh(slot, opts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _arefresh(self, slot: Slot, opts: ReadOptions) -> None:
        try:
            await self._aresolve(slot[0], opts)
        except AtlasConfigError:
            pass  # already emitted as Secret.Fetch.Failure
        finally:
            self._refreshing.discard(slot)

    # -- lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close sync clients and stop the refresh thread."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        for backend in list(self._vaults.values()):
            backend.close()

    async def aclose(self) -> None:
        """Close the async clients of the running loop."""
        for backend in list(self._vaults.values()):
            await backend.aclose()

    def reset(self) -> None:
        """Forget everything: cache, counters, clients, breakers, environment (tests).

        The cache dict is emptied in place: typed fields hold a reference to it.
        """
        self.close()
        self.cache.clear()
        self.hits = self.misses = self.fetch_successes = self.fetch_failures = 0
        self.retries = self.fallbacks = self.stale_served = 0
        self._env = None
        self._vaults.clear()
        self._breakers.clear()
        self._files = None
        self._init_concurrency()

    def after_fork_in_child(self) -> None:
        """A forked child keeps cached values but none of the parent's locks, flights or connections.

        A lock held by a parent thread mid-fetch would never be released in
        the child, and sharing the parent's pooled sockets would interleave
        two processes' TLS streams.
        """
        self._init_concurrency()
        for backend in self._vaults.values():
            backend.forget()
        for breaker in self._breakers.values():
            breaker.after_fork()


RESOLVER: Final = Resolver()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RESOLVER.after_fork_in_child)
