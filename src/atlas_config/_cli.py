"""``atlas-config``: check what an app would get, run the Key Vault emulator, or watch the demo.

Example (shell)::

    $ atlas-config check            # where each secret comes from; exit 0, 1 or 2
    $ atlas-config check --json     # the same, for CI (docs/operations.md has the shape)
    $ atlas-config emulator --secrets-file .env.development
    $ atlas-config demo             # what `make demo` runs

Nothing here ever prints a secret value: ``check`` reports sources, versions,
timings and error messages (which the library builds without values), and
the demo prints telemetry events. Errors are one line naming the fix; ``--debug``
adds the traceback and atlas-config's log lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from loguru import logger

from ._api import clear_secret_cache, get_secret, get_secret_cache_stats
from ._env import read_dotenv
from ._environment import Environment, load_environment
from ._errors import AtlasConfigError, ConfigurationError
from ._keys import ALLOWED_SECRET_KEYS, env_name
from ._resolver import RESOLVER
from ._telemetry import (
    RotationEvent,
    TelemetryEvent,
    add_rotation_handler,
    add_telemetry_handler,
    remove_rotation_handler,
    remove_telemetry_handler,
)

if TYPE_CHECKING:
    from .testing import KeyVaultEmulator

#: Version of the ``check --json`` document; bumped only when a field changes meaning or goes away.
SCHEMA_VERSION: Final = 1

EXIT_OK: Final = 0
EXIT_UNRESOLVED: Final = 1
EXIT_CONFIGURATION: Final = 2

# Variables that would point the demo somewhere else if the caller's shell sets them.
_FOREIGN_PREFIXES: Final = ("ATLAS_", "KEYVAULT_", "AZURE_", "MSI_", "IDENTITY_", "IMDS_")

_DEMO_VALUES: Final = {
    "service-bus-connection-string": (
        "Endpoint=sb://atlas-demo.servicebus.windows.net/;SharedAccessKeyName=demo;SharedAccessKey=not-real"
    ),
    "model-provider-api-key": "demo-model-provider-key-not-real",
    "signing-secret": "demo-signing-secret-not-real",
}
_DEMO_EXAMPLE_FILE: Final = ".env.development.example"
_DEMO_VAULT: Final = "atlas-demo"
_DEMO_TTL: Final = 1.0
_DEMO_ATTEMPTS: Final = 3


# -- entry point -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run ``atlas-config`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Example::

        raise SystemExit(main(["check", "--json"]))
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (argparse prints it)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIGURATION
    debug: bool = args.debug
    _quiet_foreign_loggers(debug)
    if debug:
        logger.enable("atlas_config")
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        _report_error(exc, debug=debug)
        return EXIT_CONFIGURATION if isinstance(exc, ConfigurationError | ImportError) else EXIT_UNRESOLVED
    finally:
        if debug:
            logger.disable("atlas_config")


def _quiet_foreign_loggers(debug: bool) -> None:
    """The Azure SDK (credential-chain warnings) and stamina (each scheduled retry) log through
    stdlib logging, which with no handler configured prints them raw. Our error line and the
    telemetry say the same, so outside ``--debug`` the CLI's output is only ours."""
    if debug:
        return
    for name in ("azure", "stamina"):
        target = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in target.handlers):
            target.addHandler(logging.NullHandler())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atlas-config",
        description="Check, serve and demonstrate atlas-config's secrets. Never prints a secret value.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and atlas-config's log lines")
    # SUPPRESS: `atlas-config check --debug` must not reset a `--debug` given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        parents=[common],
        help="resolve every allowlisted secret the way the app would, and say where each came from",
        description=(
            "Resolve every allowlisted secret through atlas-config's resolver and report, per key, its "
            "source, Key Vault version, time and status. Exit 0 when all resolve, 1 when one does not, "
            "2 on a configuration or production-guard error."
        ),
    )
    check.add_argument("--json", action="store_true", help="print one JSON document (schema_version 1)")
    check.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        help="load this .env-style file first; variables already set in the environment win",
    )
    check.set_defaults(run=_run_check)

    emulator = commands.add_parser(
        "emulator",
        parents=[common],
        help="serve a local Key Vault emulator and print the exports that point an app at it",
        description=(
            "Serve a local Azure Key Vault emulator (with its managed-identity token endpoint), seeded "
            "from a .env-style file, and print the `export` lines for another shell. Ctrl-C stops it."
        ),
    )
    emulator.add_argument(
        "--secrets-file", metavar="FILE", help=".env-style KEY=VALUE file to seed the vault"
    )
    emulator.add_argument("--port", type=int, default=0, help="vault HTTPS port (default: any free port)")
    emulator.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    emulator.add_argument("--token-port", type=int, default=0, help="token endpoint port (default: any)")
    emulator.set_defaults(run=_run_emulator)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="a few seconds of production-mode reads against a local emulator: cache, rotation, outage",
        description=(
            "Start a Key Vault emulator in this process, read the secrets the production way (managed "
            "identity, KEYVAULT_NAME, ATLAS_ENV=production) and show a cache hit, a rotation and an "
            "outage served from cache, with the telemetry events as they happen. Prints no value."
        ),
    )
    demo.set_defaults(run=_run_demo)
    return parser


def _report_error(exc: BaseException, *, debug: bool) -> None:
    """One line naming the problem and the fix; the traceback only with ``--debug``."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"atlas-config: error: {_one_line(exc)}", file=sys.stderr)
    if not debug and not isinstance(exc, AtlasConfigError | ImportError):
        print("atlas-config: run with --debug to see the traceback", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, AtlasConfigError | ImportError):
        # Our messages are built without values; an ImportError names the extra to install.
        text = str(exc)
    elif isinstance(exc, OSError):
        text = f"{type(exc).__name__}: {exc.strerror or exc}"
    else:
        # Someone else's message could quote anything, a value included: name the type only.
        text = f"unexpected {type(exc).__name__}"
    return " ".join(text.split())


# -- check -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SecretReport:
    """One key's line of ``check``: where it came from and how it went. Never a value."""

    key: str
    status: str  # "ok" or "failed"
    source: str  # keyvault, file, env, .env.development, .env, or missing
    version: str | None
    duration_ms: float
    attempts: int | None
    error: str | None
    reason: str | None
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CheckReport:
    """What ``check`` found: the environment it decided on and one ``SecretReport`` per key."""

    exit_code: int
    environment: dict[str, Any] | None
    secrets: list[SecretReport]
    error: dict[str, str] | None
    # The exceptions behind failures, for --debug tracebacks; not part of the JSON.
    exceptions: Sequence[BaseException] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (shape in docs/operations.md; ``schema_version`` 1)."""
        resolved = sum(1 for s in self.secrets if s.status == "ok")
        return {
            "schema_version": SCHEMA_VERSION,
            "atlas_config_version": _version(),
            "ok": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "error": self.error,
            "environment": self.environment,
            "secrets": [dataclasses.asdict(s) for s in self.secrets],
            "summary": {
                "total": len(self.secrets),
                "resolved": resolved,
                "failed": len(self.secrets) - resolved,
            },
        }


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atlas-config")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return None


def _run_check(args: argparse.Namespace) -> int:
    with _restored_environ():
        report = check(env_file=args.env_file)
    if args.debug:
        for exc in report.exceptions:
            traceback.print_exception(exc, file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_check(report, sys.stdout)
        if report.error is not None:
            print(f"atlas-config: error: {report.error['message']}", file=sys.stderr)
    return report.exit_code


@contextmanager
def _restored_environ() -> Iterator[None]:
    """``--env-file`` and the demo edit ``os.environ``; put it back, so ``main()`` can run in a test."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load_env_file(path: Path) -> tuple[int, int]:
    """Load ``path`` (strictly parsed) into ``os.environ`` without overriding what is set already.

    Returns how many variables were loaded and how many were kept from the environment. The
    environment wins so that ``ATLAS_ENV=production atlas-config check --env-file app.env`` checks
    the committed file under a one-off override, as python-dotenv and docker compose do.
    """
    if not path.is_file():
        raise ConfigurationError(f"--env-file {path} is not a readable file; check the path")
    values = read_dotenv(path)
    kept = 0
    for name, value in values.items():
        if name in os.environ:
            kept += 1
        else:
            os.environ[name] = value
    return len(values) - kept, kept


def check(*, env_file: Path | None = None) -> CheckReport:
    """Decide the environment, then resolve every allowlisted secret concurrently.

    Errors are reported, not raised: a ``ConfigurationError`` (or ``ProductionGuardError``) from
    the environment or from any read gives exit code 2, any other failed key exit code 1.
    """
    try:
        if env_file is not None:
            load_env_file(env_file)
        env = RESOLVER.configure(load_environment(os.environ))
    except ConfigurationError as exc:
        return CheckReport(EXIT_CONFIGURATION, None, [], _error(exc), [exc])
    clear_secret_cache()
    try:
        reports, failures = _resolve_all()
        environment = _describe(env, env_file)
    finally:
        RESOLVER.close()
    config_errors = [exc for exc in failures if isinstance(exc, ConfigurationError)]
    if config_errors:
        return CheckReport(EXIT_CONFIGURATION, environment, reports, _error(config_errors[0]), failures)
    exit_code = EXIT_UNRESOLVED if failures else EXIT_OK
    return CheckReport(exit_code, environment, reports, None, failures)


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": _one_line(exc)}


def _describe(env: Environment, env_file: Path | None) -> dict[str, Any]:
    vault = RESOLVER.vault()
    return {
        "production": env.production,
        "production_reason": env.production_reason,
        "vault_url": env.vault_url,
        "credential": vault.credential_name() if vault is not None else None,
        "secrets_dir": str(env.secrets_dir) if env.secrets_dir is not None else None,
        "env_file": str(env_file) if env_file is not None else None,
        "cache_ttl_seconds": env.defaults.cache_ttl,
        "max_attempts": env.defaults.max_attempts,
    }


class _EventsByKey:
    """Collects telemetry per key while ``check`` runs (Key Vault attempts, fallbacks, expiry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: dict[str, list[TelemetryEvent]] = {}

    def __call__(self, event: TelemetryEvent) -> None:
        if event.secret_key is not None:
            with self._lock:
                self.events.setdefault(event.secret_key, []).append(event)

    def fetched(self, key: str) -> TelemetryEvent | None:
        """The ``Secret.Fetch.Success`` of ``key``: its source and version."""
        found = [e for e in self.events.get(key, []) if e.name == "Secret.Fetch.Success"]
        return found[-1] if found else None

    def attempts(self, key: str) -> int | None:
        counts = [
            e.attempt
            for e in self.events.get(key, [])
            if e.name in ("Secret.Fetch.Success", "Secret.Fetch.Failure")
            and e.source == "keyvault"
            and e.attempt
        ]
        return max(counts) if counts else None

    def warnings(self, key: str) -> list[str]:
        found = []
        for e in self.events.get(key, []):
            if e.name == "Secret.Fetch.Fallback":
                found.append(f"Key Vault failed ({e.error_type}); fell back to {e.source} (development only)")
            elif e.name == "Secret.Expiry.Warning":
                found.append(f"the Key Vault expiry date is near: {e.detail}")
        return found


def _resolve_all() -> tuple[list[SecretReport], list[AtlasConfigError]]:
    events = _EventsByKey()
    add_telemetry_handler(events)
    try:
        with ThreadPoolExecutor(
            max_workers=len(ALLOWED_SECRET_KEYS), thread_name_prefix="atlas-check"
        ) as pool:
            outcomes = list(pool.map(_timed_read, ALLOWED_SECRET_KEYS))
    finally:
        remove_telemetry_handler(events)
    reports, failures = [], []
    for key, (ms, exc) in zip(ALLOWED_SECRET_KEYS, outcomes, strict=True):
        fetched = events.fetched(key) if exc is None else None
        if exc is not None:
            failures.append(exc)
        reports.append(
            SecretReport(
                key=key,
                status="ok" if exc is None else "failed",
                source=(fetched.source or "unknown") if fetched is not None else "missing",
                version=fetched.version if fetched is not None else None,
                duration_ms=round(ms, 1),
                attempts=events.attempts(key),
                error=type(exc).__name__ if exc is not None else None,
                reason=_one_line(exc) if exc is not None else None,
                warnings=events.warnings(key),
            )
        )
    return reports, failures


def _timed_read(key: str) -> tuple[float, AtlasConfigError | None]:
    started = time.perf_counter()
    try:
        get_secret(key)  # the value is dropped here: check reports only where it came from
    except AtlasConfigError as exc:
        return (time.perf_counter() - started) * 1000, exc
    return (time.perf_counter() - started) * 1000, None


def _print_check(report: CheckReport, out: TextIO) -> None:
    env = report.environment
    if env is None:
        return
    mode = "production" if env["production"] else "development"
    print(f"environment  {mode} ({env['production_reason']})", file=out)
    print(f"vault        {env['vault_url'] or '(none: KEYVAULT_NAME / KEYVAULT_URL unset)'}", file=out)
    if env["vault_url"] is not None:
        print(f"credential   {env['credential'] or '(no token obtained)'}", file=out)
    if env["secrets_dir"] is not None:
        print(f"secrets dir  {env['secrets_dir']}", file=out)
    if env["env_file"] is not None:
        print(f"env file     {env['env_file']}", file=out)
    print(file=out)
    width = max(len(k) for k in ALLOWED_SECRET_KEYS)
    print(f"{'KEY':<{width}}  {'STATUS':<6}  {'SOURCE':<16}  {'VERSION':<32}  TIME", file=out)
    for s in report.secrets:
        status = "ok" if s.status == "ok" else "FAILED"
        print(
            f"{s.key:<{width}}  {status:<6}  {s.source:<16}  {s.version or '-':<32}  {s.duration_ms:.0f} ms",
            file=out,
        )
        if s.reason is not None:
            print(f"    {s.error}: {s.reason}", file=out)
        for warning in s.warnings:
            print(f"    warning: {warning}", file=out)
    resolved = sum(1 for s in report.secrets if s.status == "ok")
    print(file=out)
    print(f"{resolved} of {len(report.secrets)} secrets resolved (exit {report.exit_code})", file=out)


# -- emulator ----------------------------------------------------------------------------------------


def _run_emulator(args: argparse.Namespace) -> int:
    from .testing._standalone import serve

    argv = ["--host", args.host, "--port", str(args.port), "--token-port", str(args.token_port)]
    if args.secrets_file is not None:
        argv += ["--secrets-file", args.secrets_file]
    return serve(argv, prog="atlas-config emulator")


# -- demo --------------------------------------------------------------------------------------------


class _Narrator:
    """Prints the demo's story and each telemetry event as it happens, one whole line at a time."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self.names: list[str] = []
        self.rotations: list[RotationEvent] = []

    def say(self, text: str = "") -> None:
        with self._lock:
            print(text, file=self._out, flush=True)

    def event(self, event: TelemetryEvent) -> None:
        self.names.append(event.name)
        parts = [f"  event  {event.name:<24}"]
        if event.secret_key is not None:
            parts.append(f"key={event.secret_key}")
        if event.source is not None:
            parts.append(f"source={event.source}")
        if event.version is not None:
            parts.append(f"version={event.version[:8]}")
        if event.attempt is not None:
            parts.append(f"attempt={event.attempt}")
        if event.duration_ms is not None:
            parts.append(f"{event.duration_ms:.0f} ms")
        if event.error_type is not None:
            parts.append(f"error={event.error_type}")
        self.say(" ".join(parts))

    def rotation(self, event: RotationEvent) -> None:
        self.rotations.append(event)
        old = (event.old_version or "-")[:8]
        new = (event.new_version or "-")[:8]
        self.say(f"  rotation handler: {event.secret_key} {old} -> {new} (an app rebuilds its client here)")


def find_demo_file(start: Path | None = None) -> Path | None:
    """``.env.development.example`` in ``start`` (default: the current directory), a parent
    that is a project root, or the atlas-config checkout this module runs from."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / _DEMO_EXAMPLE_FILE
        if candidate.is_file():
            return candidate
        if (directory / "pyproject.toml").is_file() or (directory / ".git").exists():
            break
    checkout = Path(__file__).resolve().parents[2] / _DEMO_EXAMPLE_FILE
    return checkout if checkout.is_file() else None


def _demo_values(path: Path | None) -> dict[str, str]:
    if path is None:
        return dict(_DEMO_VALUES)
    found = read_dotenv(path)
    values = {
        key: found[env_name(key)] for key in ALLOWED_SECRET_KEYS if found.get(env_name(key), "").strip()
    }
    return {**_DEMO_VALUES, **values}


def _demo_environ(kv: KeyVaultEmulator) -> None:
    """Production, as in Azure: KEYVAULT_NAME routed to the emulator, managed identity, a short TTL."""
    for name in list(os.environ):
        if name.startswith(_FOREIGN_PREFIXES) or name == "NODE_ENV":
            del os.environ[name]
    os.environ.update(kv.environ(vault_name=_DEMO_VAULT))
    os.environ.update(
        {
            "ATLAS_ENV": "production",
            "ATLAS_SECRETS_CACHE_TTL": str(_DEMO_TTL),
            "ATLAS_SECRETS_MAX_ATTEMPTS": str(_DEMO_ATTEMPTS),
            "ATLAS_SECRETS_RETRY_DELAY": "0.05",
        }
    )


def _run_demo(args: argparse.Namespace) -> int:
    from .testing import KeyVaultEmulator, reset

    out = _Narrator(sys.stdout)
    source = find_demo_file()
    values = _demo_values(source)
    started = time.perf_counter()
    with _restored_environ():
        reset()
        kv = KeyVaultEmulator()
        try:
            kv.start()
            for key, value in values.items():
                kv.set_secret(key, value)
            _demo_environ(kv)
            add_telemetry_handler(out.event)
            add_rotation_handler(out.rotation)
            out.say("atlas-config demo: production-mode reads against a local Key Vault emulator")
            origin = str(source) if source is not None else "built-in demo values"
            out.say(f"Seeded {len(values)} secrets from {origin} (values are never printed).")
            ok = _demo_story(kv, out)
        finally:
            remove_telemetry_handler(out.event)
            remove_rotation_handler(out.rotation)
            reset()
            kv.stop()
    elapsed = time.perf_counter() - started
    out.say()
    out.say(
        f"Done in {elapsed:.1f} s; no secret value was printed." if ok else "The demo did not go as expected."
    )
    return EXIT_OK if ok else EXIT_UNRESOLVED


def _demo_story(kv: KeyVaultEmulator, out: _Narrator) -> bool:
    from . import AtlasSecrets
    from .testing import Fault

    env = RESOLVER.configure(load_environment(os.environ))
    out.say(f"Environment: production ({env.production_reason}), vault {env.vault_url}, TTL {_DEMO_TTL:g} s.")

    out.say()
    out.say("1. Start-up: AtlasSecrets().prefetch() reads every secret from Key Vault, concurrently")
    settings = AtlasSecrets().prefetch()
    vault = RESOLVER.vault()
    out.say(f"  DefaultAzureCredential used: {vault.credential_name() if vault else None}")

    out.say()
    out.say("2. A read within the TTL is served from memory: no request to the vault")
    settings.signing_secret.get_secret_value()

    out.say()
    out.say(f"3. signing-secret is rotated in the vault; after the {_DEMO_TTL:g} s TTL the next read sees it")
    kv.set_secret("signing-secret", secrets.token_urlsafe(24))
    time.sleep(_DEMO_TTL + 0.1)
    settings.signing_secret.get_secret_value()
    rotated = bool(out.rotations)

    out.say()
    out.say(f"4. Key Vault goes down (HTTP 503 x {_DEMO_ATTEMPTS}); after the TTL the read retries, fails,")
    out.say("   and is served the last good value from cache")
    kv.inject(*(Fault(status=503) for _ in range(_DEMO_ATTEMPTS)))
    time.sleep(_DEMO_TTL + 0.1)
    settings.signing_secret.get_secret_value()
    stats = get_secret_cache_stats()

    out.say()
    out.say(
        f"5. Counters: hits={stats.hits} misses={stats.misses} fetches={stats.fetch_successes} "
        f"failures={stats.fetch_failures} retries={stats.retries} stale_served={stats.stale_served}"
    )
    return rotated and stats.stale_served == 1


if __name__ == "__main__":
    sys.exit(main())
