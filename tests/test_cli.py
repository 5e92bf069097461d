"""The ``atlas-config`` command: check (exit codes, JSON shape), emulator, demo; never a value in output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from atlas_config import ALLOWED_SECRET_KEYS, _cli, _telemetry
from atlas_config._keys import env_name
from atlas_config.testing import KeyVaultEmulator

# Generous: a shared 2-core machine, and each child imports the Azure SDK.
TIMEOUT = 120
MODULE = [sys.executable, "-m", "atlas_config._cli"]
SCRIPT = Path(sys.executable).parent / "atlas-config"

SECRET_FIELDS = {
    "key",
    "status",
    "source",
    "version",
    "duration_ms",
    "attempts",
    "error",
    "reason",
    "warnings",
}
ENVIRONMENT_FIELDS = {
    "production",
    "production_reason",
    "vault_url",
    "credential",
    "secrets_dir",
    "env_file",
    "cache_ttl_seconds",
    "max_attempts",
}


def assert_no_value(text: str, canaries: Mapping[str, str]) -> None:
    """No canary value appears in ``text``."""
    for value in canaries.values():
        assert value not in text


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in this process: exit status, stdout, stderr."""
    code = _cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_child(
    *argv: str, env: Mapping[str, str] | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process (``python -m atlas_config._cli`` or the console script)."""
    command = [str(SCRIPT)] if script else MODULE
    return subprocess.run(
        [*command, *argv],
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def check_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code, out, _ = run_main(capsys, "check", "--json", *argv)
    return code, json.loads(out)


# -- check: exit codes and output ----------------------------------------------------------------------


def test_check_all_resolved_exits_0(
    capsys: pytest.CaptureFixture[str], seeded: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """With every secret in the vault, check exits 0 and names the vault, the credential and each source."""
    code, out, err = run_main(capsys, "check")
    assert code == 0
    assert seeded.vault_url in out
    assert "ManagedIdentityCredential" in out
    for key in ALLOWED_SECRET_KEYS:
        assert re.search(rf"^{key}\s+ok\s+keyvault\s+[0-9a-f]{{32}}\s+\d+ ms$", out, re.MULTILINE)
    assert "3 of 3 secrets resolved (exit 0)" in out
    assert_no_value(out + err, canaries)


def test_check_json_shape(
    capsys: pytest.CaptureFixture[str], seeded: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """--json prints one document with schema_version 1 and exactly the documented fields."""
    code, out, err = run_main(capsys, "check", "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert set(doc) == {
        "schema_version",
        "atlas_config_version",
        "ok",
        "exit_code",
        "error",
        "environment",
        "secrets",
        "summary",
    }
    assert doc["schema_version"] == 1 and doc["ok"] is True and doc["exit_code"] == 0 and doc["error"] is None
    assert set(doc["environment"]) == ENVIRONMENT_FIELDS
    assert doc["environment"]["production"] is False
    assert doc["environment"]["vault_url"] == seeded.vault_url
    assert doc["environment"]["credential"] == "ManagedIdentityCredential"
    assert [s["key"] for s in doc["secrets"]] == list(ALLOWED_SECRET_KEYS)
    for secret in doc["secrets"]:
        assert set(secret) == SECRET_FIELDS
        assert secret["status"] == "ok" and secret["source"] == "keyvault" and secret["attempts"] == 1
        assert re.fullmatch(r"[0-9a-f]{32}", secret["version"])
        assert secret["duration_ms"] >= 0 and secret["error"] is None and secret["warnings"] == []
    assert doc["summary"] == {"total": 3, "resolved": 3, "failed": 0}
    assert_no_value(out, canaries)


def test_check_missing_secret_exits_1(
    capsys: pytest.CaptureFixture[str], seeded: KeyVaultEmulator, canaries: dict[str, str]
) -> None:
    """A secret missing from the vault (and from env) is 'failed' / 'missing' with the reason; exit 1."""
    seeded.delete_secret("signing-secret")
    code, doc = check_json(capsys)
    assert code == 1 and doc["exit_code"] == 1 and doc["ok"] is False
    failed = {s["key"]: s for s in doc["secrets"]}["signing-secret"]
    assert failed["status"] == "failed" and failed["source"] == "missing" and failed["version"] is None
    assert failed["error"] == "SecretNotFoundError"
    assert "'signing-secret'" in failed["reason"] and "404" in failed["reason"]
    assert doc["summary"] == {"total": 3, "resolved": 2, "failed": 1}
    code, out, _ = run_main(capsys, "check")
    assert code == 1
    assert re.search(r"^signing-secret\s+FAILED\s+missing", out, re.MULTILINE)
    assert "    SecretNotFoundError: secret 'signing-secret'" in out
    assert_no_value(out + json.dumps(doc), canaries)


def test_check_development_sources(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    canaries: dict[str, str],
) -> None:
    """Without a vault each key reports its development source: env, .env.development or .env."""
    bus, model, signing = ALLOWED_SECRET_KEYS
    monkeypatch.setenv(env_name(signing), canaries[signing])
    (tmp_path / ".env.development").write_text(f"{env_name(model)}={canaries[model]}\n")
    (tmp_path / ".env").write_text(f"{env_name(bus)}={canaries[bus]}\n")
    code, doc = check_json(capsys)
    assert code == 0
    assert {s["key"]: s["source"] for s in doc["secrets"]} == {
        bus: ".env",
        model: ".env.development",
        signing: "env",
    }
    assert doc["environment"]["vault_url"] is None and doc["environment"]["credential"] is None
    assert all(s["attempts"] is None for s in doc["secrets"])
    assert_no_value(json.dumps(doc), canaries)


def test_check_reports_mounted_files(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    canaries: dict[str, str],
) -> None:
    """In production with ATLAS_SECRETS_DIR, keys read from mounted files report source 'file'."""
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    for key, value in canaries.items():
        (mounted / key).write_text(value)
    monkeypatch.setenv("ATLAS_ENV", "production")
    monkeypatch.setenv("ATLAS_SECRETS_DIR", str(mounted))
    code, doc = check_json(capsys)
    assert code == 0
    assert {s["source"] for s in doc["secrets"]} == {"file"}
    assert doc["environment"]["production"] is True and doc["environment"]["secrets_dir"] == str(mounted)
    assert_no_value(json.dumps(doc), canaries)


def test_check_warns_about_a_development_fallback(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fast_retries: None,
    canaries: dict[str, str],
) -> None:
    """When the vault is unreachable in development, env values resolve (exit 0) with a fallback warning."""
    monkeypatch.setenv("KEYVAULT_URL", "https://localhost:1")
    for key, value in canaries.items():
        monkeypatch.setenv(env_name(key), value)
    code, doc = check_json(capsys)
    assert code == 0
    for secret in doc["secrets"]:
        assert secret["source"] == "env" and secret["attempts"] == 3
        assert secret["warnings"] == [
            "Key Vault failed (SecretFetchError); fell back to env (development only)"
        ]
    code, out, _ = run_main(capsys, "check")
    assert "warning: Key Vault failed (SecretFetchError); fell back to env" in out
    assert_no_value(out + json.dumps(doc), canaries)


def test_production_guard_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production without a vault exits 2 with one stderr line naming the fix, and no traceback."""
    monkeypatch.setenv("ATLAS_ENV", "production")
    code, out, err = run_main(capsys, "check")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("atlas-config: error: production is on") and "set KEYVAULT_NAME" in err
    assert "Traceback" not in err
    code, doc = check_json(capsys)
    assert code == 2 and doc["exit_code"] == 2 and doc["environment"] is None and doc["secrets"] == []
    assert doc["error"]["type"] == "ProductionGuardError"
    assert doc["summary"] == {"total": 0, "resolved": 0, "failed": 0}


def test_bad_setting_exits_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed ATLAS_* setting is a ConfigurationError: exit 2, one line naming the variable."""
    monkeypatch.setenv("ATLAS_SECRETS_CACHE_TTL", "five minutes")
    code, out, err = run_main(capsys, "check")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "ATLAS_SECRETS_CACHE_TTL" in err


@pytest.mark.parametrize("argv", [["--debug", "check"], ["check", "--debug"]])
def test_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """--debug, before or after the command, prints the traceback above the one-line error."""
    monkeypatch.setenv("ATLAS_ENV", "production")
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert "Traceback (most recent call last)" in err and "ProductionGuardError" in err


def test_unexpected_error_hides_its_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, canaries: dict[str, str]
) -> None:
    """A foreign exception is named by type only (its message could hold anything) unless --debug."""
    leaky = canaries["signing-secret"]

    def explode(key: str) -> str:
        raise RuntimeError(f"something quoted {leaky}")

    monkeypatch.setattr(_cli, "get_secret", explode)
    code, out, err = run_main(capsys, "check")
    assert code == 1
    assert err.splitlines() == [
        "atlas-config: error: unexpected RuntimeError",
        "atlas-config: run with --debug to see the traceback",
    ]
    assert_no_value(out + err, canaries)
    code, _, err = run_main(capsys, "--debug", "check")
    assert "Traceback" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No command, or an unknown one, is a usage error: exit 2, like argparse's own."""
    assert run_main(capsys, "nope")[0] == 2
    assert run_main(capsys)[0] == 2
    assert run_main(capsys, "--help")[0] == 0


# -- check --env-file --------------------------------------------------------------------------------


def test_env_file_loads_without_overriding(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    canaries: dict[str, str],
) -> None:
    """--env-file adds its variables, keeps those already set, and leaves os.environ as it was."""
    env_file = tmp_path / "deploy.env"
    key = "signing-secret"
    env_file.write_text(
        f"ATLAS_ENV=production\nATLAS_SECRETS_CACHE_TTL=42\n{env_name(key)}={canaries[key]}\n"
    )
    monkeypatch.setenv("ATLAS_ENV", "development")
    before = dict(os.environ)
    code, doc = check_json(capsys, "--env-file", str(env_file))
    assert doc["environment"]["production"] is False
    assert doc["environment"]["cache_ttl_seconds"] == 42.0
    assert doc["environment"]["env_file"] == str(env_file)
    assert {s["key"]: s["source"] for s in doc["secrets"]}[key] == "env"
    assert code == 1  # the two other keys are nowhere
    assert dict(os.environ) == before
    assert_no_value(json.dumps(doc), canaries)


def test_malformed_env_file_exits_2_without_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, canaries: dict[str, str]
) -> None:
    """A malformed line fails strictly: exit 2, naming the file and line number but not its content."""
    env_file = tmp_path / "bad.env"
    env_file.write_text(f'ATLAS_ENV=development\nSIGNING_SECRET="{canaries["signing-secret"]}\n')
    code, out, err = run_main(capsys, "check", "--env-file", str(env_file))
    assert code == 2 and err.count("\n") == 1
    assert "line 2" in err and str(env_file) in err
    assert_no_value(out + err, canaries)


def test_missing_env_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A --env-file that does not exist is a configuration error naming the path."""
    code, _, err = run_main(capsys, "check", "--env-file", str(tmp_path / "nope.env"))
    assert code == 2 and "nope.env is not a readable file" in err


# -- child processes ---------------------------------------------------------------------------------


def test_check_in_a_child_process(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """`python -m atlas_config._cli check --json` and the console script work against the emulator."""
    result = run_child("check", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {s["source"] for s in doc["secrets"]} == {"keyvault"}
    assert_no_value(result.stdout + result.stderr, canaries)
    if SCRIPT.exists():
        result = run_child("check", script=True)
        assert result.returncode == 0, result.stderr
        assert "3 of 3 secrets resolved" in result.stdout
        assert_no_value(result.stdout + result.stderr, canaries)


def test_child_process_exit_codes(seeded: KeyVaultEmulator, canaries: dict[str, str]) -> None:
    """A child process exits 1 for a missing secret and 2 for the production guard, without a traceback."""
    seeded.delete_secret("model-provider-api-key")
    result = run_child("check")
    assert result.returncode == 1
    assert_no_value(result.stdout + result.stderr, canaries)
    env = {**os.environ, "ATLAS_ENV": "production"}  # KEYVAULT_URL is the emulator's localhost URL
    result = run_child("check", env=env)
    assert result.returncode == 2
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "points at a local vault while production is on" in result.stderr


@pytest.fixture
def emulator_process(
    tmp_path: Path, canaries: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`atlas-config emulator` seeded from a .env-style file of canaries; yields it and its first lines."""
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("".join(f"{env_name(k)}={v}\n" for k, v in canaries.items()))
    process = subprocess.Popen(
        [*MODULE, "emulator", "--secrets-file", str(secrets_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("# Press Ctrl-C"):
                break
        yield process, lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()


def test_emulator_command_prints_exports_and_serves(
    emulator_process: tuple[subprocess.Popen[str], list[str]], canaries: dict[str, str]
) -> None:
    """`atlas-config emulator` prints export lines, no value; `check` in another process reads from it."""
    process, lines = emulator_process
    text = "".join(lines)
    assert_no_value(text, canaries)
    exports = dict(
        line.removeprefix("export ").strip().split("=", 1) for line in lines if line.startswith("export ")
    )
    assert {
        "KEYVAULT_URL",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
    } <= set(exports)
    result = run_child("check", "--json", env={**os.environ, **exports})
    assert result.returncode == 0, result.stderr
    assert {s["source"] for s in json.loads(result.stdout)["secrets"]} == {"keyvault"}
    assert_no_value(result.stdout + result.stderr, canaries)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=TIMEOUT) == 0
    assert process.stdout is not None and process.stderr is not None
    assert_no_value(process.stdout.read() + process.stderr.read(), canaries)


# -- demo --------------------------------------------------------------------------------------------

DEMO_EVENTS = (
    "Secret.Cache.Miss",
    "Secret.Fetch.Success",
    "Secret.Cache.Hit",
    "Secret.Rotation.Detected",
    "Secret.Fetch.Retry",
    "Secret.Fetch.Failure",
    "Secret.Cache.Stale",
)


def write_demo_file(directory: Path, canaries: Mapping[str, str]) -> Path:
    """A .env.development.example holding canaries, where the demo looks first."""
    path = directory / ".env.development.example"
    path.write_text("".join(f"{env_name(k)}={v}\n" for k, v in canaries.items()))
    return path


def test_demo_in_a_child_process(tmp_path: Path, canaries: dict[str, str]) -> None:
    """`atlas-config demo` exits 0, shows each expected event, and prints none of the seeded values."""
    path = write_demo_file(tmp_path, canaries)
    result = run_child("demo")
    assert result.returncode == 0, result.stderr
    for name in DEMO_EVENTS:
        assert name in result.stdout
    assert str(path) in result.stdout and "ManagedIdentityCredential" in result.stdout
    assert "stale_served=1" in result.stdout
    assert_no_value(result.stdout + result.stderr, canaries)


def test_demo_in_process_restores_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, canaries: dict[str, str]
) -> None:
    """main(['demo']) leaves os.environ and the telemetry handlers as it found them."""
    write_demo_file(tmp_path, canaries)
    before = dict(os.environ)
    code, out, err = run_main(capsys, "demo")
    assert code == 0, err
    assert dict(os.environ) == before
    assert _telemetry._handlers == () and _telemetry._rotation_handlers == ()
    assert "production (ATLAS_ENV=production), vault https://atlas-demo.vault.azure.net" in out
    assert_no_value(out + err, canaries)


def test_demo_file_lookup(tmp_path: Path) -> None:
    """The demo file is found in the current directory or a parent up to the project root."""
    (tmp_path / "pyproject.toml").write_text("")
    example = write_demo_file(tmp_path, {})
    nested = tmp_path / "src" / "pkg"
    nested.mkdir(parents=True)
    assert _cli.find_demo_file(nested) == example.resolve()
    assert set(_cli._demo_values(None)) == set(ALLOWED_SECRET_KEYS)
