"""Every program in examples/ runs against the emulator, so the examples cannot rot."""

from __future__ import annotations

import ast
import hashlib
import hmac
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from atlas_config.testing import FakeClock, Fault, KeyVaultEmulator

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT = 120

# Each example and the test(s) below that run it; a new example without a test fails here.
COVERED = {
    "minimal_app.py": "test_minimal_app",
    "fastapi_app.py": "test_fastapi_app",
    "worker.py": "test_worker",
    "ci_check.py": "test_ci_check",
    "test_app_example.py": "test_user_test_module",
}


def run_example(
    name: str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with this interpreter in a child process (cwd: the test's tmp dir)."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_client(app: Any) -> Any:
    """FastAPI's TestClient (httpx), imported quietly: starlette warns about a future httpx2 at import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient
    return TestClient(app)


def assert_no_value(text: str, canaries: Mapping[str, str]) -> None:
    """No canary value appears in ``text``."""
    for value in canaries.values():
        assert value not in text


def test_every_example_is_covered_and_says_how_to_run() -> None:
    """Each example has a test here and a module docstring telling the reader how to run it."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(COVERED)
    for name in COVERED:
        docstring = ast.get_docstring(ast.parse((EXAMPLES / name).read_text())) or ""
        assert "Run it" in docstring, name


def test_minimal_app(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """The minimal app prefetches from the vault, reads its own PORT, and prints only masked secrets."""
    result = run_example("minimal_app.py", env={**os.environ, "PORT": "8123"})
    assert result.returncode == 0, result.stderr
    assert "listening on port 8123" in result.stdout
    assert "signing secret: **********" in result.stdout
    assert_no_value(result.stdout + result.stderr, canaries)


def test_minimal_app_fails_fast(keyvault_emulator: KeyVaultEmulator) -> None:
    """With the vault empty, the minimal app exits 1 naming each missing secret."""
    result = run_example("minimal_app.py")
    assert result.returncode == 1
    assert "3 secret(s) could not be resolved" in result.stderr
    assert "signing-secret" in result.stderr


def test_fastapi_app(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """The FastAPI app signs with the vault's key and rebuilds its bus client on a rotation."""
    module = load_example("fastapi_app")
    signing_key = canaries["signing-secret"].encode()
    with FakeClock() as clock, make_client(module.app) as client:
        assert client.get("/healthz").json() == {"status": "ok", "service": "atlas-example"}
        first = client.post("/messages", json={"body": "hello"}).json()
        assert first["signature"] == hmac.new(signing_key, b"hello", hashlib.sha256).hexdigest()
        old_bus = client.app.state.bus
        seeded.set_secret("service-bus-connection-string", "rotated-connection-string")
        clock.advance(301)
        second = client.post("/messages", json={"body": "again"}).json()
        assert second["bus_client_generation"] == first["bus_client_generation"] + 1
        assert old_bus.closed and client.app.state.bus.sent == ["again"]
        assert_no_value(json.dumps([first, second]) + repr(client.app.state.bus), canaries)


def test_fastapi_app_does_not_start_without_secrets(keyvault_emulator: KeyVaultEmulator) -> None:
    """The lifespan's aprefetch() stops the app from starting when a secret is missing."""
    module = load_example("fastapi_app")
    with pytest.raises(Exception, match="could not be resolved"), make_client(module.app):
        pass


def test_worker(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """The worker processes its jobs from cached secrets and reports the cache counters."""
    result = run_example("worker.py", "--jobs", "3", env={**os.environ, "POLL_INTERVAL": "0"})
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()[:3]] == ["job-1", "job-2", "job-3"]
    assert "processed 3 jobs; cache hits=3 misses=3 fetches=3" in result.stdout
    assert_no_value(result.stdout + result.stderr, canaries)


def test_worker_rides_out_an_outage(seeded: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: after the TTL, a Key Vault outage does not stop a job (the cached key is served stale)."""
    monkeypatch.setenv("ATLAS_SECRETS_RETRY_DELAY", "0.001")
    worker = load_example("worker")
    with FakeClock() as clock:
        settings = worker.Settings(poll_interval=0).prefetch()
        first = worker.handle("job", settings)
        clock.advance(301)
        seeded.inject(Fault(status=503), Fault(status=503), Fault(status=503))
        assert worker.handle("job", settings) == first


def test_ci_check(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """The CI gate passes when every secret resolves, fails on a missing one, and on a dev-only check."""
    result = run_example("ci_check.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("from keyvault") == 3
    result = run_example("ci_check.py", "--require-production")
    assert result.returncode == 1
    assert "::error title=atlas-config::the check ran outside production" in result.stdout
    seeded.delete_secret("signing-secret")
    result = run_example("ci_check.py")
    assert result.returncode == 1
    assert "::error title=secret signing-secret::SecretNotFoundError" in result.stdout
    assert_no_value(result.stdout + result.stderr, canaries)


def test_user_test_module(tmp_path: Path) -> None:
    """examples/test_app_example.py passes under pytest with the auto-registered plugin's fixtures."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ATLAS_", "KEYVAULT_", "AZURE_", "PYTEST_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", str(EXAMPLES / "test_app_example.py")],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
