"""The hostile-input catalogue: settings, keys, options and files built to mislead, each with its outcome.

Every case runs with a Key Vault emulator up and this process pointed at it
(``KEYVAULT_URL``), then reads ``signing-secret`` (or the case's key). A case
either fails with a clear ``AtlasConfigError`` subclass whose message names
the problem, or shows the documented behaviour (the value it returns). Either
way the emulator's request log stays empty: no vault request and no token
request went out. ``CASES`` is the counted list that docs/reliability.md quotes;
some overlap tests/test_environment.py and tests/test_keys.py on purpose, so
the catalogue stands on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from atlas_config import (
    AtlasConfigError,
    AtlasSecrets,
    ConfigurationError,
    ProductionGuardError,
    SecretNotAllowedError,
    SecretNotFoundError,
    get_secret,
)
from atlas_config.testing import KeyVaultEmulator

KEY = "signing-secret"
BIG_ENV_VALUE = "v" * (30 * 1024)  # over Key Vault's 25 KB limit for a secret value
HUGE_DOTENV_VALUE = "w" * (200 * 1024)
# A model-provider API key's shape (letters, digits, dashes): a value passed where the key belongs.
API_KEY_SHAPED = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" + "0123456789"


@dataclass(frozen=True)
class Case:
    """One hostile input and what must happen.

    ``env`` values may use ``{vault_url}`` and ``{port}`` (the running emulator's); ``None``
    unsets the variable. ``files`` are written into the working directory first.
    """

    id: str
    env: Mapping[str, str | None] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)
    key: object = KEY
    options: Mapping[str, object] = field(default_factory=dict)
    raises: type[AtlasConfigError] | None = ConfigurationError
    match: str = ""  # regex the message must contain
    returns: str | None = None  # the value, when the documented behaviour is to return one
    absent: tuple[str, ...] = ()  # text the message must not contain
    at_read: bool = False  # a setting checked when the first read needs it, not when the model builds
    marks: tuple[pytest.MarkDecorator, ...] = ()


NO_VAULT: Mapping[str, str | None] = {"KEYVAULT_URL": None}


def _dotenv(text: str | bytes, name: str = ".env") -> dict[str, bytes]:
    return {name: text.encode() if isinstance(text, str) else text}


CASES: list[Case] = [
    # -- vault names that try to move the token to another host ----------
    Case("name-dotted-host", {"KEYVAULT_NAME": "kv-abc.evil.example"}, match="KEYVAULT_NAME"),
    Case("name-with-port", {"KEYVAULT_NAME": "kv-abc:444"}, match="KEYVAULT_NAME"),
    Case("name-cyrillic-homoglyph", {"KEYVAULT_NAME": "kv-\u0430bc"}, match="KEYVAULT_NAME"),
    Case("name-is-a-url", {"KEYVAULT_NAME": "https://kv-abc.vault.azure.net"}, match="KEYVAULT_NAME"),
    Case("name-percent-encoded-dot", {"KEYVAULT_NAME": "kv-abc%2eevil"}, match="KEYVAULT_NAME"),
    Case("name-too-long", {"KEYVAULT_NAME": "kv-" + "a" * 30}, match="KEYVAULT_NAME"),
    Case(
        "name-and-url-disagree",
        {"KEYVAULT_NAME": "kv-abc", "KEYVAULT_URL": "{vault_url}"},
        match="different vaults",
    ),
    # -- vault URLs that try to redirect the bearer token ----------
    Case(
        "url-userinfo-after-port", {"KEYVAULT_URL": "https://localhost:{port}@evil.example"}, match="userinfo"
    ),
    Case("url-encoded-at", {"KEYVAULT_URL": "https://kv-abc.vault.azure.net%40evil.example"}, match="domain"),
    Case("url-trailing-dot", {"KEYVAULT_URL": "https://kv-abc.vault.azure.net."}, match="domain"),
    Case("url-ideographic-dot", {"KEYVAULT_URL": "https://kv-abc\u3002vault.azure.net"}, match="non-ASCII"),
    Case("url-embedded-tab", {"KEYVAULT_URL": "https://kv-abc\t.vault.azure.net"}, match="whitespace"),
    Case(
        "url-crlf-header-injection",
        {"KEYVAULT_URL": "https://kv-abc.vault.azure.net/\r\nHost: evil.example"},
        match="KEYVAULT_URL",
    ),
    Case("url-ipv4-mapped-ipv6", {"KEYVAULT_URL": "https://[::ffff:127.0.0.1]:{port}"}, match="domain"),
    Case("url-hex-ip", {"KEYVAULT_URL": "https://0x7f000001:{port}"}, match="domain"),
    Case("url-wildcard-dns", {"KEYVAULT_URL": "https://127.0.0.1.nip.io"}, match="domain"),
    Case("url-javascript-scheme", {"KEYVAULT_URL": "javascript://kv-abc.vault.azure.net"}, match="https"),
    Case("url-file-scheme", {"KEYVAULT_URL": "file:///etc/passwd"}, match="KEYVAULT_URL"),
    Case(
        "url-production-at-loopback-emulator",
        {"ATLAS_ENV": "production", "KEYVAULT_URL": "{vault_url}"},
        raises=ProductionGuardError,
        match="local vault",
    ),
    Case(
        "url-production-at-ipv6-loopback",
        {"NODE_ENV": "production", "KEYVAULT_URL": "https://[::1]:{port}"},
        raises=ProductionGuardError,
        match="local vault",
    ),
    # -- keys: traversal, case, unicode, whitespace, control characters ----------
    Case("key-encoded-traversal", key="..%2fsigning-secret", raises=SecretNotAllowedError),
    Case("key-versions-path", key="signing-secret/versions", raises=SecretNotAllowedError),
    Case("key-uppercase", key="SIGNING-SECRET", raises=SecretNotAllowedError, match="did you mean"),
    Case(
        "key-fullwidth", key="\uff53\uff49\uff47\uff4e\uff49\uff4e\uff47-secret", raises=SecretNotAllowedError
    ),
    Case("key-zero-width-space", key="signing\u200b-secret", raises=SecretNotAllowedError),
    Case("key-rtl-override", key="\u202esigning-secret", raises=SecretNotAllowedError),
    Case("key-combining-accent", key="signing-secre\u0301t", raises=SecretNotAllowedError),
    Case("key-trailing-nbsp", key="signing-secret\u00a0", raises=SecretNotAllowedError),
    Case("key-crlf-injection", key="signing-secret\r\nX-Injected: 1", raises=SecretNotAllowedError),
    Case("key-ansi-escape", key="\x1b[2Jsigning-secret", raises=SecretNotAllowedError, absent=("\x1b",)),
    Case("key-tab", key="signing-secret\t", raises=SecretNotAllowedError),
    Case("key-100k-characters", key="a" * 100_000, raises=SecretNotAllowedError, match="100000-character"),
    Case(
        "key-api-key-shaped",
        key=API_KEY_SHAPED,
        raises=SecretNotAllowedError,
        absent=(API_KEY_SHAPED,),
    ),
    # -- per-call options ----------
    Case("option-ttl-nan", options={"cache_ttl": float("nan")}, match="cache_ttl"),
    Case("option-ttl-infinite", options={"cache_ttl": float("inf")}, match="cache_ttl"),
    Case("option-ttl-string", options={"cache_ttl": "300"}, match="cache_ttl"),
    Case("option-negative-timedelta", options={"cache_ttl": timedelta(seconds=-1)}, match="cache_ttl"),
    Case("option-version-traversal", options={"version": "../../keys/other"}, match="32 hex"),
    Case("option-version-trailing-slash", options={"version": "a" * 32 + "/"}, match="32 hex"),
    Case("option-attempts-bool", options={"max_attempts": True}, match="max_attempts"),
    Case("option-attempts-million", options={"max_attempts": 10**6}, match="max_attempts"),
    Case("option-negative-delay", options={"initial_retry_delay": -1}, match="initial_retry_delay"),
    # -- production flags and settings ----------
    Case("flag-control-char-suffix", {"ATLAS_ENV": "production\x7f"}, match="ATLAS_ENV"),
    Case("flag-fullwidth", {"ATLAS_ENV": "\uff50\uff52\uff4f\uff44\uff55\uff43\uff54\uff49\uff4f\uff4e"}),
    Case("flag-zero-width-suffix", {"ATLAS_ENV": "production\u200b"}, match="ATLAS_ENV"),
    Case("flag-node-env-typo", {"NODE_ENV": "prodution"}, match="NODE_ENV"),
    Case("flag-list", {"ATLAS_ENV": "production,staging"}, match="ATLAS_ENV"),
    Case(
        "production-without-vault",
        {"ATLAS_ENV": "production", "KEYVAULT_URL": None, "SIGNING_SECRET": "from-env"},
        raises=ProductionGuardError,
        match="KEYVAULT_NAME",
    ),
    Case("prefetch-not-a-boolean", {"ATLAS_SECRETS_PREFETCH": "yes please"}, match="ATLAS_SECRETS_PREFETCH"),
    Case("ttl-overflows-to-infinity", {"ATLAS_SECRETS_CACHE_TTL": "1e309"}, match="ATLAS_SECRETS_CACHE_TTL"),
    Case("ttl-hex", {"ATLAS_SECRETS_CACHE_TTL": "0x10"}, match="ATLAS_SECRETS_CACHE_TTL"),
    Case(
        "attempts-superscript-digit",
        {"ATLAS_SECRETS_MAX_ATTEMPTS": "\u00b2"},
        match="ATLAS_SECRETS_MAX_ATTEMPTS",
    ),
    Case(
        "retry-delay-1e300",
        {"ATLAS_SECRETS_RETRY_DELAY": "1e300"},
        match="ATLAS_SECRETS_RETRY_DELAY",
    ),
    Case(
        "per-key-ttl-lowercase-suffix",
        {"ATLAS_SECRETS_CACHE_TTL__signing_secret": "5"},
        match="names no allowlisted secret",
    ),
    Case(
        "version-fullwidth-digits",
        {"ATLAS_SECRETS_VERSION__SIGNING_SECRET": "\uff10" * 32},
        match="ATLAS_SECRETS_VERSION__SIGNING_SECRET",
    ),
    Case(
        "secrets-dir-missing",
        {"ATLAS_SECRETS_DIR": "/nonexistent/atlas-secrets"},
        match="ATLAS_SECRETS_DIR",
        at_read=True,
    ),
    # -- .env files ----------
    Case(
        "dotenv-escaped-closing-quote", NO_VAULT, _dotenv('SIGNING_SECRET="abc\\"\n'), match=r"\.env, line 1"
    ),
    Case("dotenv-not-utf8", NO_VAULT, _dotenv("SIGNING_SECRET=caf\xe9\n".encode("latin-1")), match="UTF-8"),
    Case("dotenv-space-in-name", NO_VAULT, _dotenv("SIGNING SECRET=x\n"), match=r"\.env, line 1"),
    Case("dotenv-equals-only", NO_VAULT, _dotenv("OK=1\n=\n"), match=r"\.env, line 2"),
    Case(
        "dotenv-development-unterminated",
        NO_VAULT,
        _dotenv("SIGNING_SECRET='open\n", ".env.development"),
        match=r"\.env\.development, line 1",
        absent=("open",),
    ),
    Case(
        "dotenv-name-without-value",
        NO_VAULT,
        _dotenv("SIGNING_SECRET\n"),
        raises=SecretNotFoundError,
        match="SIGNING_SECRET",
    ),
    Case(
        "dotenv-zero-width-in-name",
        NO_VAULT,
        _dotenv("SIGNING_SECRET\u200b=x\n"),
        raises=SecretNotFoundError,
        match="SIGNING_SECRET",
    ),
    Case(
        "dotenv-byte-order-mark",
        NO_VAULT,
        _dotenv("\ufeffSIGNING_SECRET=from-bom\n"),
        raises=None,
        returns="from-bom",
    ),
    Case("dotenv-nul-in-value", NO_VAULT, _dotenv(b"SIGNING_SECRET=a\x00b\n"), raises=None, returns="a\x00b"),
    Case(
        "env-wins-over-malformed-dotenv",
        {**NO_VAULT, "SIGNING_SECRET": "from-env"},
        _dotenv("this line is malformed\n"),
        raises=None,
        returns="from-env",
    ),
    # -- values ----------
    Case("value-empty", {**NO_VAULT, "SIGNING_SECRET": ""}, raises=SecretNotFoundError, match="empty"),
    Case(
        "value-unicode-whitespace-only",
        {**NO_VAULT, "SIGNING_SECRET": "\u00a0\u2003\u3000"},
        raises=SecretNotFoundError,
        match="empty",
    ),
    # Over Key Vault's 25 KB: it would work in development and could never be deployed.
    Case(
        "value-30kb-env",
        {**NO_VAULT, "SIGNING_SECRET": BIG_ENV_VALUE},
        match=r"SIGNING_SECRET in the environment is larger than 25600 bytes",
        absent=("v" * 16,),
        at_read=True,
    ),
    Case(
        "value-200kb-dotenv",
        NO_VAULT,
        _dotenv(f"SIGNING_SECRET={HUGE_DOTENV_VALUE}\n"),
        match=r"SIGNING_SECRET in \.env is larger than 25600 bytes",
        absent=("w" * 16,),
        at_read=True,
    ),
    Case(
        "value-exactly-25kb-env",
        {**NO_VAULT, "SIGNING_SECRET": "x" * 25600},
        raises=None,
        returns="x" * 25600,
    ),
    Case(
        "value-25kb-multibyte-env",
        {**NO_VAULT, "SIGNING_SECRET": "\u20ac" * (9 * 1024)},  # 9,216 characters, 27,648 bytes
        match="larger than 25600 bytes",
        at_read=True,
    ),
]


def _apply(case: Case, kv: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch, cwd: Path) -> None:
    for name, value in case.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value.format(vault_url=kv.vault_url, port=kv.port))
    for name, data in case.files.items():
        (cwd / name).write_bytes(data)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_hostile_input(
    case: Case, keyvault_emulator: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The input fails with a clear AtlasConfigError (or shows the documented behaviour), with no I/O."""
    _apply(case, keyvault_emulator, monkeypatch, tmp_path)
    if case.raises is None:
        assert get_secret(case.key, **case.options) == case.returns  # type: ignore[arg-type]
    else:
        with pytest.raises(case.raises, match=case.match or None) as info:
            get_secret(case.key, **case.options)  # type: ignore[arg-type]
        message = str(info.value)
        assert message and all(text not in message for text in case.absent)
    assert keyvault_emulator.requests == []


SETTING_CASES = [
    c
    for c in CASES
    if c.raises in (ConfigurationError, ProductionGuardError)
    and not (c.files or c.options or c.marks or c.at_read)
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in SETTING_CASES])
def test_settings_model_refuses_hostile_setting(
    case: Case, keyvault_emulator: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """AtlasSecrets() turns each hostile setting into a ValidationError naming it, before any I/O."""
    _apply(case, keyvault_emulator, monkeypatch, tmp_path)
    with pytest.raises(ValidationError, match=case.match or None):
        AtlasSecrets()
    assert keyvault_emulator.requests == []


def test_catalogue_is_counted() -> None:
    """At least 30 hostile inputs, each with a unique id (docs/reliability.md quotes len(CASES))."""
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


def test_reliability_doc_quotes_the_catalogue() -> None:
    """docs/reliability.md states how many hostile inputs there are and how each kind ends."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")

    def quoted(label: str) -> int:
        match = re.search(rf"^\| {re.escape(label)} \| ([\d,]+) \|", text, re.M)
        assert match, f"docs/reliability.md has no '{label}' row"
        return int(match.group(1).replace(",", ""))

    assert quoted("Hostile inputs") == len(CASES)
    assert quoted("Hostile inputs refused with an AtlasConfigError") == sum(1 for c in CASES if c.raises)
    assert quoted("Hostile inputs with a documented value") == sum(1 for c in CASES if not c.raises)
    assert quoted("Hostile inputs that expose a bug (xfail)") == sum(1 for c in CASES if c.marks)
