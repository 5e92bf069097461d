"""Leak canaries: plant unique values, drive every path, and count them in everything the library emits.

Each path in ``PATHS`` is one test. It runs with every channel captured at
its most talkative, then counts occurrences of each canary value, each token
the emulator issued and the managed-identity header in all of it. The count
must be zero; docs/reliability.md quotes ``len(PATHS)`` and ``CHANNELS``.

Channels: stdout/stderr (file-descriptor level), stdlib logging at DEBUG on
the root logger (azure-core, azure-identity, urllib3, stamina, pydantic-settings
with ``PYDANTIC_SETTINGS_DEBUG=true``), loguru enabled with a TRACE sink that
prints tracebacks with local variables, telemetry and rotation events, and
what the path itself collects: reprs and strs, exception strs and full
traceback text with chained causes, model_dump / model_dump_json, pydantic
``ValidationError`` text, and the CLI's output.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from loguru import logger
from pydantic import ValidationError

import atlas_config
from atlas_config import (
    ALLOWED_SECRET_KEYS,
    AtlasConfigError,
    AtlasSecrets,
    PrefetchError,
    add_rotation_handler,
    add_telemetry_handler,
    aget_secret,
    clear_secret_cache,
    get_secret,
    get_secret_cache_stats,
)
from atlas_config._keys import env_name
from atlas_config._resolver import RESOLVER
from atlas_config.testing import FakeClock, Fault, KeyVaultEmulator

CHANNELS = (
    "stdout/stderr",
    "stdlib logging at DEBUG",
    "loguru TRACE sink",
    "telemetry events",
    "rotation events",
    "reprs and strs",
    "exception text and tracebacks",
    "model_dump / model_dump_json",
    "ValidationError text",
    "CLI output",
)
CLI_TIMEOUT = 120  # a child process imports the Azure SDK on a shared 2-core machine


def _canary(label: str) -> str:
    return f"leak-{label}-{uuid.uuid4().hex}"


@dataclass
class Sweep:
    """Collects text from every channel and counts the needles in it."""

    kv: KeyVaultEmulator
    values: dict[str, str]  # key -> the vault's value
    needles: set[str] = field(default_factory=set)
    texts: list[str] = field(default_factory=list)

    def plant(self, value: str) -> str:
        """Register another secret value (env, .env, file, disabled or rotated version)."""
        self.needles.add(value)
        return value

    def add(self, *objects: object) -> None:
        """Record str() and repr() of each object."""
        for obj in objects:
            self.texts.extend((str(obj), repr(obj)))

    def add_exc(self, exc: BaseException) -> None:
        """Record an exception's str, repr and whole traceback, chained causes included."""
        self.add(exc)
        self.texts.append("".join(traceback.format_exception(exc, chain=True)))
        if isinstance(exc, PrefetchError):
            for inner in exc.errors.values():
                self.add_exc(inner)

    def tokens(self) -> None:
        """Every token the emulator holds now becomes a needle (call before expiring them)."""
        self.needles.update(self.kv._tokens)  # test-only peek: tokens are never exposed otherwise

    def count(self, extra: str = "") -> dict[str, int]:
        self.tokens()
        corpus = "\n".join([*self.texts, extra])
        return {needle[:24]: corpus.count(needle) for needle in self.needles if corpus.count(needle)}


@pytest.fixture
def sweep(
    production_keyvault: KeyVaultEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Sweep]:
    """Production emulator holding canaries, every channel captured, retries fast."""
    kv = production_keyvault
    values = {key: _canary(key) for key in ALLOWED_SECRET_KEYS}
    values["service-bus-connection-string"] = (
        "Endpoint=sb://atlas-leak.servicebus.windows.net/;SharedAccessKeyName=root;"
        f"SharedAccessKey={values['service-bus-connection-string']}"
    )
    for key, value in values.items():
        kv.set_secret(key, value)
    s = Sweep(kv, values, needles={*values.values(), kv.identity_header})
    monkeypatch.setenv("ATLAS_SECRETS_RETRY_DELAY", "0.001")
    monkeypatch.setenv("PYDANTIC_SETTINGS_DEBUG", "true")
    caplog.set_level(logging.DEBUG)
    add_telemetry_handler(lambda event: s.texts.append(repr(event)))
    add_rotation_handler(lambda event: s.texts.append(repr(event)))
    logger.enable("atlas_config")
    sink = logger.add(
        lambda message: s.texts.append(str(message) + repr(message.record["extra"])),
        level="TRACE",
        format="{time} {level} {name}:{function}:{line} {message}\n{exception}",
        backtrace=True,
        diagnose=True,  # tracebacks with local variables: the strictest a user could configure
    )
    try:
        yield s
    finally:
        logger.remove(sink)
        logger.disable("atlas_config")


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter()
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.__dict__))
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
    return "\n".join(parts)


# -- the paths -----------------------------------------------------------------------------------------


def sync_reads(s: Sweep) -> None:
    for key, value in s.values.items():
        assert get_secret(key) == value
        assert get_secret(key) == value  # a cache hit too


def async_reads(s: Sweep) -> None:
    async def main() -> list[str]:
        try:
            return [await aget_secret(key) for key in s.values]
        finally:
            await atlas_config.aclose()

    assert asyncio.run(main()) == list(s.values.values())


def typed_fields(s: Sweep) -> None:
    settings = AtlasSecrets().prefetch()
    fields = [
        settings.service_bus_connection_string,
        settings.model_provider_api_key,
        settings.signing_secret,
    ]
    assert [f.get_secret_value() for f in fields] == list(s.values.values())
    s.add(settings, *fields, settings.model_dump(), settings.model_dump(mode="json"), settings.__dict__)
    s.texts.append(settings.model_dump_json())
    s.texts.append(str(AtlasSecrets.model_json_schema()))
    s.add(settings == AtlasSecrets(), hash(settings.signing_secret), len(settings.signing_secret))


def typed_async_prefetch(s: Sweep) -> None:
    async def main() -> str:
        try:
            settings = await AtlasSecrets().aprefetch()
            return await settings.signing_secret.aget_secret_value()
        finally:
            await atlas_config.aclose()

    assert asyncio.run(main()) == s.values["signing-secret"]


def prefetch_errors(s: Sweep) -> None:
    s.kv.set_secret("signing-secret", s.plant(_canary("disabled")), enabled=False)
    s.kv.delete_secret("model-provider-api-key")
    with pytest.raises(PrefetchError) as info:
        AtlasSecrets().prefetch()
    s.add_exc(info.value)
    assert set(info.value.errors) == {"signing-secret", "model-provider-api-key"}


FAULTS = [
    [Fault(status=503)] * 3,
    [Fault(drop=True)] * 3,
    [Fault(status=429, retry_after=0)] * 3,
    [Fault(status=500, code="InternalError")] * 3,
    [Fault(status=400, code="BadParameter")],
    [Fault(status=401)] * 2,  # the SDK re-authenticates once and resends
    [Fault(status=403, code="ForbiddenByRbac")],
    [Fault(status=404)],
]


def fault_paths(s: Sweep) -> None:
    assert get_secret("signing-secret") == s.values["signing-secret"]  # a token and a connection first
    for faults in FAULTS:
        clear_secret_cache()
        s.kv.inject(*faults)
        with pytest.raises(AtlasConfigError) as info:
            get_secret("signing-secret")
        s.add_exc(info.value)


def token_endpoint_blip(s: Sweep) -> None:
    s.kv.inject_token_fault(Fault(status=500))  # azure-identity retries it itself
    assert get_secret("model-provider-api-key") == s.values["model-provider-api-key"]


def token_revoked(s: Sweep) -> None:
    assert get_secret("signing-secret") == s.values["signing-secret"]
    s.tokens()
    s.kv.expire_tokens()
    clear_secret_cache()
    with pytest.raises(AtlasConfigError) as info:
        get_secret("signing-secret")
    s.add_exc(info.value)


def stale_and_breaker(s: Sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLAS_SECRETS_BREAKER_THRESHOLD", "1")
    with FakeClock() as clock:
        assert get_secret("signing-secret") == s.values["signing-secret"]
        clock.advance(301)
        s.kv.inject(*[Fault(status=503)] * 3)
        assert get_secret("signing-secret") == s.values["signing-secret"]  # stale; the breaker opens
        with pytest.raises(AtlasConfigError) as info:
            get_secret("model-provider-api-key")  # breaker open, nothing cached
        s.add_exc(info.value)
    s.add(RESOLVER.breaker(RESOLVER.environment().vault_url or ""))


def rotation_and_expiry(s: Sweep) -> None:
    with FakeClock() as clock:
        assert get_secret("signing-secret") == s.values["signing-secret"]
        rotated = s.plant(_canary("rotated"))
        s.kv.set_secret("signing-secret", rotated, expires_on=datetime.now(UTC) + timedelta(days=2))
        clock.advance(301)
        assert get_secret("signing-secret") == rotated


def reprs_and_stats(s: Sweep) -> None:
    sync_reads(s)
    vault = RESOLVER.vault()
    assert vault is not None
    s.add(
        get_secret_cache_stats(), RESOLVER.cache, RESOLVER.environment(), vault.fetch("signing-secret", None)
    )
    s.add(*RESOLVER.cache.values())


def development_fallback(s: Sweep, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Development against the same emulator: env and .env hold their own canaries.
    monkeypatch.delenv("ATLAS_ENV")
    monkeypatch.delenv("KEYVAULT_NAME")
    monkeypatch.setenv("KEYVAULT_URL", s.kv.vault_url)
    from_env = s.plant(_canary("env"))
    from_dotenv = s.plant(_canary("dotenv"))
    from_dev_file = s.plant(_canary("dotenv-development"))
    monkeypatch.setenv("SIGNING_SECRET", from_env)
    (tmp_path / ".env").write_text(f"MODEL_PROVIDER_API_KEY={from_dotenv}\n")
    (tmp_path / ".env.development").write_text(f"SERVICE_BUS_CONNECTION_STRING='{from_dev_file}'\n")
    s.kv.inject(*[Fault(status=503)] * 3)
    assert get_secret("signing-secret") == from_env  # vault failed: env fallback
    s.kv.delete_secret("model-provider-api-key")
    s.kv.delete_secret("service-bus-connection-string")
    settings = AtlasSecrets().prefetch()  # 404s: .env and .env.development fallbacks
    assert settings.model_provider_api_key.get_secret_value() == from_dotenv
    assert settings.service_bus_connection_string.get_secret_value() == from_dev_file
    s.add(settings, settings.model_dump())
    s.texts.append(settings.model_dump_json())


def validation_errors(s: Sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    # pydantic-settings' debug log prints app fields and init kwargs verbatim, as its docs warn;
    # here the subject is the error text (init kwargs: test_init_kwargs_under_pydantic_settings_debug).
    monkeypatch.delenv("PYDANTIC_SETTINGS_DEBUG")

    class Settings(AtlasSecrets):
        port: int = 8000

    monkeypatch.setenv("PORT", s.plant(_canary("port")))  # an app field with a bad value
    for attempt in (lambda: Settings(), lambda: AtlasSecrets(signing_secret=[s.values["signing-secret"]])):
        with pytest.raises(ValidationError) as info:
            attempt()
        s.add_exc(info.value)
        s.texts.append(str(info.value.errors(include_input=False)))
    monkeypatch.delenv("PORT")
    monkeypatch.setenv("SIGNING_SECRET", s.plant(_canary("env-in-production")))
    monkeypatch.setenv("ATLAS_ENV", "prod")  # refused flag, with an env value present
    with pytest.raises(ValidationError) as info:
        AtlasSecrets()
    s.add_exc(info.value)


def mounted_files(s: Sweep, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    root.mkdir(mode=0o755)
    (root / "signing-secret").write_text(s.plant(_canary("file")) + "\n")
    (root / "model-provider-api-key").write_text("x" * (26 * 1024))  # refused: over 25 KB
    monkeypatch.setenv("ATLAS_SECRETS_DIR", str(root))
    assert get_secret("signing-secret").startswith("leak-file-")
    with pytest.raises(AtlasConfigError) as info:
        get_secret("model-provider-api-key")
    s.add_exc(info.value)
    s.add(RESOLVER.cache)


PATHS: dict[str, Callable[..., None]] = {
    "sync-get-secret": sync_reads,
    "async-aget-secret": async_reads,
    "typed-fields-and-dumps": typed_fields,
    "typed-async-prefetch": typed_async_prefetch,
    "prefetch-errors": prefetch_errors,
    "fault-paths": fault_paths,
    "token-endpoint-blip": token_endpoint_blip,
    "token-revoked": token_revoked,
    "stale-and-breaker": stale_and_breaker,
    "rotation-and-expiry-warning": rotation_and_expiry,
    "reprs-and-stats": reprs_and_stats,
    "development-fallback": development_fallback,
    "validation-errors": validation_errors,
    "mounted-files": mounted_files,
}


@pytest.mark.parametrize("path", list(PATHS))
def test_no_canary_leaks(
    path: str,
    sweep: Sweep,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Zero occurrences of any value, token or identity header across every channel."""
    run = PATHS[path]
    wants = run.__code__.co_varnames[: run.__code__.co_argcount]
    extras = {"monkeypatch": monkeypatch, "tmp_path": tmp_path}
    run(sweep, *(extras[name] for name in wants[1:]))
    out, err = capfd.readouterr()
    assert sweep.count(_log_text(caplog) + out + err) == {}


# -- the CLI -------------------------------------------------------------------------------------------


def _cli_env(kv: KeyVaultEmulator, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ATLAS_", "KEYVAULT_", "AZURE_", "IDENTITY_", "MSI_"))
        and name not in {env_name(k) for k in ALLOWED_SECRET_KEYS}
    }
    return {**env, **kv.environ(), "PYDANTIC_SETTINGS_DEBUG": "true", **extra}


CLI_RUNS = {
    "check": ["check"],
    "check-json": ["check", "--json"],
    "check-debug-failing": ["--debug", "check"],
    "check-json-failing": ["check", "--json"],
}


@pytest.mark.parametrize("run", list(CLI_RUNS))
def test_cli_output_has_no_canary(run: str, sweep: Sweep, tmp_path: Path) -> None:
    """`atlas-config check` in a child process, against the emulator: no value in stdout or stderr."""
    if importlib.util.find_spec("atlas_config._cli") is None:
        pytest.skip("src/atlas_config/_cli.py does not exist yet")
    kv = sweep.kv
    extra = {}
    if run.endswith("failing"):
        kv.set_secret("signing-secret", sweep.plant(_canary("disabled")), enabled=False)
        kv.inject(*[Fault(status=503)] * 3)
        # Development falls back to env for the failed keys.
        extra = {env_name("model-provider-api-key"): sweep.plant(_canary("cli-env"))}
    result = subprocess.run(
        [sys.executable, "-m", "atlas_config._cli", *CLI_RUNS[run]],
        env=_cli_env(kv, ATLAS_SECRETS_RETRY_DELAY="0.001", **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert result.returncode == (1 if run.endswith("failing") else 0), result.stderr
    assert sweep.count(result.stdout + result.stderr) == {}


def test_sweep_finds_planted_canaries(
    sweep: Sweep, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """The sweep is not blind: a canary planted in each capture channel is found there."""
    value = sweep.values["signing-secret"]
    logging.getLogger("azure.core").debug("planted %s", value)
    logger.bind(planted=value).debug("planted")
    print(value)
    print(value, file=sys.stderr)
    out, err = capfd.readouterr()
    for channel in (_log_text(caplog), "\n".join(sweep.texts), out, err):
        assert value in channel


def test_init_kwargs_under_pydantic_settings_debug(sweep: Sweep, caplog: pytest.LogCaptureFixture) -> None:
    """A secret passed as an init kwarg (as tests do) stays out of pydantic-settings' debug log."""
    value = sweep.plant(_canary("init-kwarg"))
    assert AtlasSecrets(signing_secret=value).signing_secret.get_secret_value() == value
    assert sweep.count(_log_text(caplog)) == {}


def test_leak_catalogue_is_counted() -> None:
    """The counts docs/reliability.md quotes: paths x channels, plus the CLI runs."""
    assert (len(PATHS), len(CHANNELS), len(CLI_RUNS)) == (14, 10, 4)


def test_reliability_doc_quotes_the_sweep() -> None:
    """docs/reliability.md states the paths, channels and CLI runs swept, and zero leaks."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")

    def quoted(label: str) -> int:
        match = re.search(rf"^\| {re.escape(label)} \| ([\d,]+) \|", text, re.M)
        assert match, f"docs/reliability.md has no '{label}' row"
        return int(match.group(1).replace(",", ""))

    assert quoted("Leak paths") == len(PATHS)
    assert quoted("Leak channels") == len(CHANNELS)
    assert quoted("CLI runs scanned") == len(CLI_RUNS)
    assert quoted("Leaks found") == 0
