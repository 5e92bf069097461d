"""Platform-mounted secrets (Key Vault CSI driver, Docker secrets) read from ATLAS_SECRETS_DIR."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from pydantic import ValidationError

from atlas_config import (
    AtlasSecrets,
    ConfigurationError,
    RotationEvent,
    SecretNotFoundError,
    TelemetryEvent,
    add_telemetry_handler,
    aget_secret,
    get_secret,
    get_secret_cache_stats,
)
from atlas_config._backends import MAX_SECRET_BYTES
from atlas_config._resolver import RESOLVER
from atlas_config.testing import FakeClock, KeyVaultEmulator
from conftest import Captured

KEY = "signing-secret"
_stamps = itertools.count()


# -- layouts ---------------------------------------------------------------------------------------------


def _timestamp_dir(root: Path, files: Mapping[str, str | bytes]) -> str:
    """Write ``files`` into a fresh ``..<timestamp>`` directory, as Kubernetes' AtomicWriter does."""
    name = f"..2026_12_04_10_00_00.{next(_stamps):09d}"
    directory = root / name
    directory.mkdir(mode=0o755)
    for key, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (directory / key).write_bytes(data)
        (directory / key).chmod(0o644)
    return name


def atomic_layout(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Build the CSI driver / AtomicWriter layout: ``key -> ..data/key``, ``..data -> ..<timestamp>``."""
    root.mkdir(mode=0o755, exist_ok=True)
    os.symlink(_timestamp_dir(root, files), root / "..data")
    for key in files:
        os.symlink(f"..data/{key}", root / key)
    return root


def rotate(root: Path, files: Mapping[str, str | bytes]) -> None:
    """Rotate as AtomicWriter does: new timestamped dir, then rename a new ``..data`` over the old one."""
    old = os.readlink(root / "..data")
    new = _timestamp_dir(root, files)
    os.symlink(new, root / "..data_tmp")
    os.replace(root / "..data_tmp", root / "..data")
    for key in files:
        if not (root / key).is_symlink():
            os.symlink(f"..data/{key}", root / key)
    shutil.rmtree(root / old)


def flat_layout(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Docker secrets: plain read-only files in one directory, no symlinks."""
    root.mkdir(mode=0o755, exist_ok=True)
    for key, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (root / key).write_bytes(data)
        (root / key).chmod(0o444)
    return root


def file_values(canaries: Mapping[str, str]) -> dict[str, str]:
    """A file value per key that differs from the vault's canary, so a test can tell which source won."""
    return {key: f"file-{value}" for key, value in canaries.items()}


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
def mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The secrets directory, named by ATLAS_SECRETS_DIR; tests fill it with a layout.

    Request it after any emulator fixture: those clear ATLAS_SECRETS_DIR when they start.
    """
    root = tmp_path / "secrets"
    monkeypatch.setenv("ATLAS_SECRETS_DIR", str(root))
    return root


@pytest.fixture
def production(mount: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Production with only ATLAS_SECRETS_DIR: no vault, no env."""
    monkeypatch.setenv("ATLAS_ENV", "production")
    return mount


def version_of(key: str = KEY) -> str | None:
    entry = RESOLVER.entry(key)
    assert entry is not None
    return entry.version


# -- serving ---------------------------------------------------------------------------------------------


def test_production_serves_mounted_files_without_a_vault(production: Path, canaries: dict[str, str]) -> None:
    """In production with only ATLAS_SECRETS_DIR, get_secret and AtlasSecrets serve the mounted files."""
    atomic_layout(production, canaries)
    assert RESOLVER.environment().vault_url is None
    assert get_secret("service-bus-connection-string") == canaries["service-bus-connection-string"]
    settings = AtlasSecrets()
    assert settings.signing_secret.get_secret_value() == canaries["signing-secret"]
    assert settings.model_provider_api_key.get_secret_value() == canaries["model-provider-api-key"]
    entry = RESOLVER.entry(KEY)
    assert entry is not None
    assert entry.source == "file"
    assert entry.version is not None
    assert entry.version.startswith("file-")


def test_secrets_dir_set_in_code(
    production: Path, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """atlas_secrets_dir on a subclass does what ATLAS_SECRETS_DIR does, for the model and get_secret."""
    monkeypatch.delenv("ATLAS_SECRETS_DIR")
    atomic_layout(production, canaries)

    class Settings(AtlasSecrets):
        atlas_secrets_dir = production

    with pytest.raises(ValidationError, match="ATLAS_SECRETS_DIR"):
        AtlasSecrets()  # production, and the base class names no vault and no directory
    assert Settings().signing_secret.get_secret_value() == canaries[KEY]
    assert get_secret("model-provider-api-key") == canaries["model-provider-api-key"]


def test_env_secrets_dir_overrides_the_one_in_code(
    production: Path, canaries: dict[str, str], tmp_path: Path
) -> None:
    """The deployment wins: ATLAS_SECRETS_DIR replaces a directory set in code."""
    atomic_layout(production, canaries)
    elsewhere = flat_layout(tmp_path / "elsewhere", {KEY: "from-the-code-dir"})

    class Settings(AtlasSecrets):
        atlas_secrets_dir = str(elsewhere)

    assert Settings().signing_secret.get_secret_value() == canaries[KEY]


def test_secrets_dir_in_code_must_be_a_path(production: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-path atlas_secrets_dir is a ValidationError naming it, before any read."""
    monkeypatch.delenv("ATLAS_SECRETS_DIR")

    class Settings(AtlasSecrets):
        atlas_secrets_dir = 42  # type: ignore[assignment]

    with pytest.raises(ValidationError, match="atlas_secrets_dir must be a path"):
        Settings()


def test_async_reads_serve_mounted_files(production: Path, canaries: dict[str, str]) -> None:
    """aget_secret reads the mounted file the same way."""
    atomic_layout(production, canaries)
    assert asyncio.run(aget_secret(KEY)) == canaries[KEY]


def test_production_missing_file_without_vault_is_not_found(
    production: Path, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In production with no vault, a key without a file is not found, and env is never read."""
    atomic_layout(production, {KEY: canaries[KEY]})
    monkeypatch.setenv("MODEL_PROVIDER_API_KEY", "from-env")
    with pytest.raises(SecretNotFoundError, match="ATLAS_SECRETS_DIR"):
        get_secret("model-provider-api-key")


@pytest.mark.parametrize("vault", ["seeded", "seeded_production"])
def test_file_wins_over_keyvault(
    vault: str, canaries: dict[str, str], request: pytest.FixtureRequest
) -> None:
    """A mounted file is served before Key Vault, which is never asked for that key."""
    kv: KeyVaultEmulator = request.getfixturevalue(vault)
    # After the emulator fixture, which clears ATLAS_SECRETS_DIR as it starts.
    mount: Path = request.getfixturevalue("mount")
    files = file_values(canaries)
    atomic_layout(mount, {KEY: files[KEY]})
    assert get_secret(KEY) == files[KEY]
    assert AtlasSecrets().signing_secret.get_secret_value() == files[KEY]
    assert kv.secret_requests(KEY, include_challenges=True) == []


def test_key_without_file_falls_through_to_keyvault(
    seeded: KeyVaultEmulator, mount: Path, canaries: dict[str, str]
) -> None:
    """A key with no file in the directory is read from Key Vault."""
    atomic_layout(mount, {KEY: file_values(canaries)[KEY]})
    assert get_secret("model-provider-api-key") == canaries["model-provider-api-key"]
    assert len(seeded.secret_requests("model-provider-api-key")) == 1
    entry = RESOLVER.entry("model-provider-api-key")
    assert entry is not None
    assert entry.source == "keyvault"


def test_pinned_version_skips_files(seeded: KeyVaultEmulator, mount: Path, canaries: dict[str, str]) -> None:
    """A read pinned to a Key Vault version goes to the vault even when a file exists."""
    version = seeded.set_secret(KEY, "pinned-value")
    seeded.set_secret(KEY, "newer-value")
    atomic_layout(mount, {KEY: file_values(canaries)[KEY]})
    assert get_secret(KEY, version=version) == "pinned-value"


def test_development_file_wins_over_env(
    mount: Path, canaries: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In development a mounted file beats env and .env; keys without a file still come from env."""
    monkeypatch.setenv("SIGNING_SECRET", "from-env")
    (tmp_path / ".env").write_text("MODEL_PROVIDER_API_KEY=from-dotenv\nSERVICE_BUS_CONNECTION_STRING=bus\n")
    files = file_values(canaries)
    atomic_layout(mount, {KEY: files[KEY], "model-provider-api-key": files["model-provider-api-key"]})
    assert get_secret(KEY) == files[KEY]
    assert get_secret("model-provider-api-key") == files["model-provider-api-key"]
    assert get_secret("service-bus-connection-string") == "bus"


def test_docker_secrets_flat_layout(production: Path, canaries: dict[str, str]) -> None:
    """Docker's /run/secrets layout (plain read-only files, no symlinks) is served as is."""
    flat_layout(production, {key: value + "\n" for key, value in canaries.items()})
    settings = AtlasSecrets()
    bus = settings.service_bus_connection_string.get_secret_value()
    assert bus == canaries["service-bus-connection-string"]
    assert get_secret(KEY) == canaries[KEY]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("value", "value"),
        ("value\n", "value"),
        ("value\r\n", "value"),
        ("value\n\n", "value\n"),
        ("value\r\n\r\n", "value\r\n"),
        ("value\r", "value\r"),
        ("  value \t\n", "  value \t"),
        ("line one\nline two\n", "line one\nline two"),
        ("\nvalue", "\nvalue"),
    ],
)
def test_exactly_one_trailing_newline_is_stripped(production: Path, content: str, expected: str) -> None:
    """One trailing \\n or \\r\\n is dropped; every other character is part of the secret."""
    flat_layout(production, {KEY: content})
    assert get_secret(KEY) == expected


@pytest.mark.parametrize("content", ["", "\n", "  \r\n"])
def test_empty_file_is_not_a_secret(production: Path, content: str) -> None:
    """An empty or whitespace-only file is refused as not found, as an empty vault value would be."""
    flat_layout(production, {KEY: content})
    with pytest.raises(SecretNotFoundError, match="empty"):
        get_secret(KEY)


def test_file_of_exactly_the_limit_is_served(production: Path) -> None:
    """A file of exactly 25 KB, Key Vault's own limit, is accepted."""
    flat_layout(production, {KEY: "x" * MAX_SECRET_BYTES})
    assert get_secret(KEY) == "x" * MAX_SECRET_BYTES


# -- rotation --------------------------------------------------------------------------------------------


def test_rotation_by_symlink_swap_is_seen_after_the_ttl(
    production: Path,
    canaries: dict[str, str],
    clock: FakeClock,
    captured: Captured,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ..data swap is served once the TTL has passed, with one rotation event from old to new version."""
    monkeypatch.setenv("ATLAS_SECRETS_CACHE_TTL", "60")
    atomic_layout(production, canaries)
    assert get_secret(KEY) == canaries[KEY]
    old_version = version_of()

    rotate(production, {**canaries, KEY: "rotated-" + canaries[KEY]})
    clock.advance(10)
    assert get_secret(KEY) == canaries[KEY]  # still cached
    assert captured.rotations == []

    clock.advance(51)
    assert get_secret(KEY) == "rotated-" + canaries[KEY]
    new_version = version_of()
    assert new_version is not None
    assert new_version.startswith("file-")
    assert new_version != old_version
    assert captured.rotations == [RotationEvent(KEY, old_version, new_version, "file")]
    [detected] = captured.named("Secret.Rotation.Detected")
    assert (detected.secret_key, detected.source, detected.version) == (KEY, "file", new_version)
    assert detected.detail == f"old_version={old_version}"


def test_no_rotation_when_nothing_changed(
    production: Path, canaries: dict[str, str], clock: FakeClock, captured: Captured
) -> None:
    """Re-reading an unchanged file after the TTL keeps its version and emits no rotation."""
    atomic_layout(production, canaries)
    get_secret(KEY)
    first = version_of()
    clock.advance(301)
    assert get_secret(KEY) == canaries[KEY]
    assert version_of() == first
    assert len([e for e in captured.named("Secret.Fetch.Success") if e.secret_key == KEY]) == 2
    assert captured.rotations == []
    assert captured.named("Secret.Rotation.Detected") == []


def test_version_comes_from_the_file_not_the_value(
    production: Path, canaries: dict[str, str], clock: FakeClock, captured: Captured
) -> None:
    """Rotating to the same value is still a new file and a new version; the id is opaque and short."""
    atomic_layout(production, canaries)
    get_secret(KEY)
    first = version_of()
    rotate(production, canaries)
    clock.advance(301)
    assert get_secret(KEY) == canaries[KEY]
    second = version_of()
    assert first != second
    assert [(r.old_version, r.new_version) for r in captured.rotations] == [(first, second)]
    assert second is not None
    assert len(second) == len("file-") + 16


def test_flat_file_rewritten_in_place_is_a_rotation(
    production: Path, clock: FakeClock, captured: Captured
) -> None:
    """Rewriting a plain file (new mtime and size) is detected after the TTL."""
    flat_layout(production, {KEY: "first-value"})
    get_secret(KEY)
    path = production / KEY
    path.chmod(0o644)
    path.write_text("second-value-longer")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    clock.advance(301)
    assert get_secret(KEY) == "second-value-longer"
    assert len(captured.rotations) == 1


def test_rotation_between_resolve_and_open_reads_the_new_file(
    production: Path, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation that deletes the resolved directory just before the open is retried via the new ..data."""
    atomic_layout(production, canaries)
    real_open = os.open
    rotated: list[bool] = []

    def open_after_a_rotation(path: str | os.PathLike[str], flags: int, *args: int, **kw: int | None) -> int:
        if not rotated and Path(path).name == KEY:
            rotated.append(True)
            rotate(production, {**canaries, KEY: "rotated"})
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", open_after_a_rotation)
    assert get_secret(KEY) == "rotated"
    assert rotated


def test_file_that_becomes_unsafe_is_not_served_from_cache(
    production: Path, canaries: dict[str, str], clock: FakeClock
) -> None:
    """A file made world-writable is refused at the next refresh, and the cached value is dropped."""
    flat_layout(production, canaries)
    get_secret(KEY)
    (production / KEY).chmod(0o666)
    clock.advance(301)
    with pytest.raises(ConfigurationError, match="writable by other users"):
        get_secret(KEY)
    assert RESOLVER.entry(KEY) is None


# -- refusals --------------------------------------------------------------------------------------------


def _refused(key: str, match: str) -> ConfigurationError:
    with pytest.raises(ConfigurationError, match=match) as info:
        get_secret(key)
    return info.value


def secret_outside(tmp_path: Path, value: str) -> Path:
    """A directory outside ATLAS_SECRETS_DIR holding KEY's file, for a symlink to point at."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / KEY).write_text(value)
    return outside


def test_symlink_escaping_the_directory_is_refused(
    production: Path, canaries: dict[str, str], tmp_path: Path
) -> None:
    """A key symlinked to a file outside the directory is refused, without its content in the message."""
    outside = secret_outside(tmp_path, canaries[KEY])
    production.mkdir()
    os.symlink(outside / KEY, production / KEY)
    err = _refused(KEY, "resolves outside ATLAS_SECRETS_DIR")
    assert canaries[KEY] not in str(err)


def test_refused_file_is_a_fetch_failure(production: Path, tmp_path: Path) -> None:
    """A refused file is announced like any failed fetch: a Secret.Fetch.Failure and the failure counter."""
    events: list[TelemetryEvent] = []
    add_telemetry_handler(events.append)
    production.mkdir()
    (production / KEY).mkdir()  # a directory where the file should be
    _refused(KEY, "is a directory")
    failures = [e for e in events if e.name == "Secret.Fetch.Failure"]
    assert [(e.secret_key, e.source, e.error_type) for e in failures] == [(KEY, "file", "ConfigurationError")]
    assert get_secret_cache_stats().fetch_failures == 1


def test_data_symlink_escaping_the_directory_is_refused(
    production: Path, canaries: dict[str, str], tmp_path: Path
) -> None:
    """A ..data link pointing out of the directory is refused even though the key link stays inside."""
    outside = secret_outside(tmp_path, canaries[KEY])
    production.mkdir()
    os.symlink(outside, production / "..data")
    os.symlink(f"..data/{KEY}", production / KEY)
    assert canaries[KEY] not in str(_refused(KEY, "resolves outside"))


def test_symlink_to_the_directory_itself_is_refused(production: Path) -> None:
    """A key linked to the secrets directory itself is refused rather than read."""
    production.mkdir()
    os.symlink(".", production / KEY)
    _refused(KEY, "resolves outside")


@pytest.mark.parametrize("layout", [atomic_layout, flat_layout])
def test_oversize_file_is_refused(
    layout: Callable[[Path, Mapping[str, str | bytes]], Path], production: Path, canaries: dict[str, str]
) -> None:
    """A file over 25 KB is refused, naming the limit and not the content."""
    big = canaries[KEY] + "x" * MAX_SECRET_BYTES
    layout(production, {KEY: big})
    err = _refused(KEY, f"larger than {MAX_SECRET_BYTES} bytes")
    assert canaries[KEY] not in str(err)


@pytest.mark.parametrize("what", ["file", "root", "timestamp dir"])
def test_world_writable_is_refused(what: str, production: Path, canaries: dict[str, str]) -> None:
    """A world-writable file, secrets directory or ..<timestamp> directory is refused."""
    atomic_layout(production, canaries)
    target = {
        "file": (production / KEY).resolve(),
        "root": production,
        "timestamp dir": (production / "..data").resolve(),
    }[what]
    target.chmod(target.stat().st_mode | 0o002)
    err = _refused(KEY, "writable by other users")
    assert "chmod o-w" in str(err)
    assert canaries[KEY] not in str(err)


def test_directory_in_place_of_a_file_is_refused(production: Path) -> None:
    """A directory named like a key is refused as not a file."""
    production.mkdir()
    (production / KEY).mkdir()
    _refused(KEY, "is a directory")


def test_fifo_is_refused_without_blocking(production: Path) -> None:
    """A FIFO named like a key is refused as not a regular file (and never opened)."""
    production.mkdir()
    os.mkfifo(production / KEY)
    _refused(KEY, "not a regular file")


def test_broken_symlink_is_refused(production: Path) -> None:
    """A dangling key link is reported as broken, not treated as absent."""
    production.mkdir()
    os.symlink("..data/signing-secret", production / KEY)
    _refused(KEY, "broken symlink")


def test_missing_directory_names_the_setting(mount: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing ATLAS_SECRETS_DIR is an error that names the variable, in development too."""
    _refused(KEY, "ATLAS_SECRETS_DIR=.* does not exist")


def test_directory_that_is_a_file_names_the_setting(production: Path) -> None:
    """ATLAS_SECRETS_DIR pointing at a file is an error that names the variable."""
    production.write_text("not a directory")
    _refused(KEY, "ATLAS_SECRETS_DIR=.* is not a directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_is_refused(production: Path, canaries: dict[str, str]) -> None:
    """A file this process may not read is refused with a clear error."""
    flat_layout(production, canaries)
    (production / KEY).chmod(0o000)
    _refused(KEY, "cannot be read")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root searches everything")
def test_unsearchable_directory_names_the_setting(production: Path, canaries: dict[str, str]) -> None:
    """A directory this process may not search is an error naming ATLAS_SECRETS_DIR."""
    flat_layout(production, canaries)
    production.chmod(0o600)
    try:
        _refused(KEY, "ATLAS_SECRETS_DIR=.* cannot be searched")
    finally:
        production.chmod(0o755)


def test_non_utf8_file_is_refused(production: Path) -> None:
    """A file that is not UTF-8 is refused, naming the encoding and not the bytes."""
    flat_layout(production, {KEY: b"secret-\xff\xfe-bytes"})
    err = _refused(KEY, "not UTF-8")
    assert "secret-" not in str(err)


# -- no value anywhere -----------------------------------------------------------------------------------


def test_no_canary_in_errors_logs_or_telemetry(
    production: Path, canaries: dict[str, str], tmp_path: Path, clock: FakeClock, captured: Captured
) -> None:
    """Reads, a rotation and every refusal leave no value in any error, log line or event."""
    atomic_layout(production, canaries)
    for key in canaries:
        assert get_secret(key) == canaries[key]
    rotate(production, {key: value + "-2" for key, value in canaries.items()})
    clock.advance(301)
    assert get_secret(KEY) == canaries[KEY] + "-2"

    messages: list[str] = []
    unsafe = [  # oversize, world-writable, not UTF-8: each holding the canary
        ((canaries[KEY] + "x" * MAX_SECRET_BYTES).encode(), 0o644),
        (canaries[KEY].encode(), 0o666),
        (canaries[KEY].encode() + b"\xff", 0o644),
    ]
    for content, mode in unsafe:
        (production / KEY).unlink()
        (production / KEY).write_bytes(content)
        (production / KEY).chmod(mode)
        clock.advance(301)
        with pytest.raises(ConfigurationError) as info:
            get_secret(KEY)
        messages += [str(info.value), repr(info.value)]
    (production / KEY).unlink()
    (tmp_path / "outside").write_text(canaries[KEY])
    os.symlink(tmp_path / "outside", production / KEY)
    clock.advance(301)
    with pytest.raises(ConfigurationError) as info:
        get_secret(KEY)
    messages += [str(info.value), repr(info.value)]

    said = [*messages, *captured.logs, *map(repr, captured.events), *map(repr, captured.rotations)]
    assert captured.logs
    assert captured.events
    assert captured.rotations
    for value in canaries.values():
        assert not [line for line in said if value in line]
