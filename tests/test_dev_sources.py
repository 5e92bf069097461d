"""Development sources: env, then .env.development, then .env; strict .env parsing; empty values."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlas_config import AtlasSecrets, ConfigurationError, SecretNotFoundError, get_secret


def test_env_wins_over_dotenv_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment variable beats .env.development, which beats .env."""
    (tmp_path / ".env").write_text(
        "SIGNING_SECRET=from-dotenv\nMODEL_PROVIDER_API_KEY=from-dotenv\n"
        "SERVICE_BUS_CONNECTION_STRING=from-dotenv\n"
    )
    (tmp_path / ".env.development").write_text("SIGNING_SECRET=from-dev\nMODEL_PROVIDER_API_KEY=from-dev\n")
    monkeypatch.setenv("SIGNING_SECRET", "from-env")
    assert get_secret("signing-secret") == "from-env"
    assert get_secret("model-provider-api-key") == "from-dev"
    assert get_secret("service-bus-connection-string") == "from-dotenv"


def test_dotenv_values_are_literal(tmp_path: Path) -> None:
    """Quotes are removed but ${VAR} is not expanded: a '$' in a secret stays a '$'."""
    (tmp_path / ".env").write_text("SIGNING_SECRET='pa$$${HOME}word'\n")
    assert get_secret("signing-secret") == "pa$$${HOME}word"


def test_missing_everywhere_names_the_fix() -> None:
    """No vault and no value: SecretNotFoundError naming the env variable and KEYVAULT_NAME."""
    with pytest.raises(SecretNotFoundError, match=r"SIGNING_SECRET.*KEYVAULT_NAME"):
        get_secret("signing-secret")


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_empty_values_are_errors(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """An empty or whitespace value is an error naming the key and its source, never returned."""
    monkeypatch.setenv("SIGNING_SECRET", value)
    with pytest.raises(SecretNotFoundError, match=r"'signing-secret' from env is empty"):
        get_secret("signing-secret")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("SIGNING_SECRET=ok\nthis is not a binding\n", 2),
        ("# comment\n\nSIGNING_SECRET='unterminated\n", 3),
        ("A=1\n\n\n=novalue-key\n", 4),
    ],
)
def test_malformed_dotenv_line_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    """A malformed .env line fails with the file and line number, and not the line's content."""
    (tmp_path / ".env").write_text(text)
    with pytest.raises(ConfigurationError, match=rf"\.env, line {line}: malformed") as info:
        get_secret("signing-secret")
    assert "unterminated" not in str(info.value)
    assert "novalue" not in str(info.value)


def test_app_fields_load_from_env_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A subclass's own fields load from env and .env as in any pydantic-settings model."""

    class Settings(AtlasSecrets):
        port: int = 8000
        region: str = "none"

    (tmp_path / ".env").write_text("REGION=westeurope\nSIGNING_SECRET=from-dotenv\n")
    monkeypatch.setenv("PORT", "9001")
    settings = Settings()
    assert (settings.port, settings.region) == (9001, "westeurope")
    assert settings.signing_secret.get_secret_value() == "from-dotenv"
