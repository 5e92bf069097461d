"""The public surface: __all__ is sorted and complete, and the package ships type information."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
import types

import atlas_config
import atlas_config.testing


def test_all_is_sorted_and_matches_the_real_exports() -> None:
    """__all__ is sorted and equals the public, non-module names each package really defines."""
    for module in (atlas_config, atlas_config.testing):
        assert list(module.__all__) == sorted(module.__all__)
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
        }
        assert public == set(module.__all__)


def test_required_names_are_public() -> None:
    """The names later code relies on are exported from atlas_config."""
    required = {
        "AtlasSecrets",
        "get_secret",
        "aget_secret",
        "clear_secret_cache",
        "get_secret_cache_stats",
        "ALLOWED_SECRET_KEYS",
        "add_telemetry_handler",
        "remove_telemetry_handler",
        "TelemetryEvent",
        "AtlasConfigError",
        "SecretNotAllowedError",
        "SecretNotFoundError",
        "SecretFetchError",
        "ProductionGuardError",
        "add_rotation_handler",
    }
    assert required <= set(atlas_config.__all__)


def test_every_public_name_has_a_docstring() -> None:
    """Each exported class and function documents itself."""
    for name in atlas_config.__all__:
        obj = getattr(atlas_config, name)
        if callable(obj):
            assert obj.__doc__, name


def test_py_typed_is_shipped() -> None:
    """The package carries a py.typed marker."""
    assert importlib.resources.files("atlas_config").joinpath("py.typed").is_file()


def test_typing_file_checks_clean() -> None:
    """tests/typing/usage.py type-checks under mypy --strict, as users would write it."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "tests/typing/usage.py"],
        capture_output=True,
        text=True,
        check=False,
        cwd=_repo_root(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _repo_root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent)
