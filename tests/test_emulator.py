"""The Key Vault emulator, driven by the real Azure SDK (sync and aio) through DefaultAzureCredential."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty, Queue
from typing import Any, cast

import pytest
from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.identity.aio import DefaultAzureCredential as AsyncDefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets.aio import SecretClient as AsyncSecretClient

import atlas_config
from atlas_config.testing import Fault, KeyVaultEmulator, RequestRecord
from atlas_config.testing._standalone import load_secrets_file, serve

# Variables from the machine that could steer DefaultAzureCredential or the HTTP stack elsewhere.
_FOREIGN_ENV = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
    "KEYVAULT_NAME",
    "KEYVAULT_URL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
VAULT_NAME = "atlas-test"
PRODUCTION_URL = f"https://{VAULT_NAME}.vault.azure.net"


def _apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in _FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def kv(monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyVaultEmulator]:
    with KeyVaultEmulator() as emulator:
        _apply_env(monkeypatch, emulator.environ())
        yield emulator


@pytest.fixture
def production_kv(monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyVaultEmulator]:
    with KeyVaultEmulator() as emulator:
        _apply_env(monkeypatch, emulator.environ(vault_name=VAULT_NAME))
        yield emulator


def _client(kv: KeyVaultEmulator, credential: TokenCredential, **kwargs: Any) -> SecretClient:
    return SecretClient(kv.vault_url, credential, verify_challenge_resource=False, **kwargs)


def _aclient(kv: KeyVaultEmulator, credential: AsyncTokenCredential, **kwargs: Any) -> AsyncSecretClient:
    # aiohttp built its default SSL context when it was imported, before SSL_CERT_FILE was set.
    return AsyncSecretClient(
        kv.vault_url, credential, verify_challenge_resource=False, connection_verify=kv.ca_bundle, **kwargs
    )


def _error_body(exc: HttpResponseError) -> dict[str, Any]:
    response: Any = exc.response
    return cast(dict[str, Any], response.json()["error"])


def _headers(exc: HttpResponseError) -> Mapping[str, str]:
    response: Any = exc.response
    return cast(Mapping[str, str], response.headers)


def _raw_vault_get(
    kv: KeyVaultEmulator, path: str, token: str | None = None
) -> tuple[int, http.client.HTTPMessage, dict[str, object]]:
    context = ssl.create_default_context(cafile=kv.ca_bundle)
    conn = http.client.HTTPSConnection("localhost", kv.port, context=context, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def _raw_token(kv: KeyVaultEmulator, headers: dict[str, str], query: str) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", kv.token_port, timeout=5)
    try:
        conn.request("GET", f"/msi/token?{query}", headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# --- reading secrets ---------------------------------------------------------------------------------


def test_latest_and_pinned_versions(kv: KeyVaultEmulator) -> None:
    """The sync client reads the latest version by default and an older one when pinned."""
    old = kv.set_secret("signing-secret", "first")
    new = kv.set_secret("signing-secret", "second", content_type="text/plain", tags={"team": "atlas"})
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        latest = client.get_secret("signing-secret")
        pinned = client.get_secret("signing-secret", version=old)
    assert (latest.value, latest.properties.version) == ("second", new)
    assert latest.id == f"{kv.vault_url}/secrets/signing-secret/{new}"
    assert latest.properties.content_type == "text/plain"
    assert latest.properties.tags == {"team": "atlas"}
    assert latest.properties.recovery_level == "Recoverable+Purgeable"
    assert latest.properties.enabled is True
    assert (pinned.value, pinned.properties.version) == ("first", old)
    assert len(old) == 32
    assert int(old, 16) >= 0
    assert old == old.lower()


def test_aio_client_reads_secret(kv: KeyVaultEmulator) -> None:
    """The aio client with the aio DefaultAzureCredential reads a secret through the challenge flow."""
    kv.set_secret("signing-secret", "aio-value")

    async def main() -> str | None:
        async with AsyncDefaultAzureCredential() as credential, _aclient(kv, credential) as client:
            return (await client.get_secret("signing-secret")).value

    assert asyncio.run(main()) == "aio-value"
    assert [(r.kind, r.status) for r in kv.requests] == [("secrets", 401), ("token", 200), ("secrets", 200)]


def test_missing_secret_is_404_secret_not_found(kv: KeyVaultEmulator) -> None:
    """A missing secret or version raises ResourceNotFoundError with the service's SecretNotFound body."""
    kv.set_secret("present", "x")
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        with pytest.raises(ResourceNotFoundError) as missing:
            client.get_secret("absent")
        with pytest.raises(ResourceNotFoundError):
            client.get_secret("present", version="0" * 32)
    assert missing.value.status_code == 404
    assert missing.value.error is not None
    assert missing.value.error.code == "SecretNotFound"
    assert "A secret with (name/id) absent was not found in this key vault" in str(missing.value.message)


def test_disabled_secret_is_403_secret_disabled(kv: KeyVaultEmulator) -> None:
    """Reading a disabled secret is 403 Forbidden with innererror SecretDisabled; listing still shows it."""
    kv.set_secret("off", "hidden", enabled=False)
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        with pytest.raises(HttpResponseError) as denied:
            client.get_secret("off")
        listed = [p for p in client.list_properties_of_secrets() if p.name == "off"]
    assert denied.value.status_code == 403
    error = _error_body(denied.value)
    assert error["code"] == "Forbidden"
    assert error["innererror"]["code"] == "SecretDisabled"
    assert error["message"] == "Operation get is not allowed on a disabled secret."
    assert listed
    assert listed[0].enabled is False


def test_not_yet_valid_and_expired_secrets_are_returned(kv: KeyVaultEmulator) -> None:
    """Like the service, GET returns secrets outside their nbf/exp window, with those attributes set."""
    now = datetime.now(UTC).replace(microsecond=0)
    kv.set_secret("future", "f", not_before=now + timedelta(days=1))
    kv.set_secret("past", "p", expires_on=now - timedelta(days=1))
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        future = client.get_secret("future")
        past = client.get_secret("past")
    assert (future.value, future.properties.not_before) == ("f", now + timedelta(days=1))
    assert (past.value, past.properties.expires_on) == ("p", now - timedelta(days=1))


def test_names_are_case_insensitive_and_keep_their_spelling(kv: KeyVaultEmulator) -> None:
    """Any spelling of a name finds the secret; ids keep the spelling it was created with."""
    version = kv.set_secret("Signing-Secret", "v")
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        secret = client.get_secret("SIGNING-SECRET")
        client.get_secret("signing-secret")
    assert secret.value == "v"
    assert secret.name == "Signing-Secret"
    assert secret.id == f"{kv.vault_url}/secrets/Signing-Secret/{version}"
    assert len(kv.secret_requests("signing-SECRET")) == 2


def test_bad_name_is_400_bad_parameter(kv: KeyVaultEmulator) -> None:
    """A name outside ^[0-9a-zA-Z-]{1,127}$ is 400 BadParameter from the service and ValueError locally."""
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        with pytest.raises(HttpResponseError) as bad:
            client.get_secret("bad_name")
        with pytest.raises(HttpResponseError) as too_long:
            client.get_secret("a" * 128)
    assert bad.value.status_code == too_long.value.status_code == 400
    assert bad.value.error is not None
    assert bad.value.error.code == "BadParameter"
    with pytest.raises(ValueError):
        kv.set_secret("bad_name", "x")


def test_oversize_value_is_400_bad_parameter(kv: KeyVaultEmulator) -> None:
    """A value of 25 KB is accepted and one character more is 400 BadParameter."""
    limit = 25 * 1024
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        assert client.set_secret("big", "x" * limit).value == "x" * limit
        with pytest.raises(HttpResponseError) as too_big:
            client.set_secret("big", "x" * (limit + 1))
    assert too_big.value.status_code == 400
    assert too_big.value.error is not None
    assert too_big.value.error.code == "BadParameter"
    with pytest.raises(ValueError):
        kv.set_secret("big", "x" * (limit + 1))


# --- listing -------------------------------------------------------------------------------------------


def test_list_secrets_and_versions_page_at_25(kv: KeyVaultEmulator) -> None:
    """Listing 60 secrets, and 60 versions of one, takes three pages each, items carrying no value."""
    for i in range(60):
        kv.set_secret(f"secret-{i:02d}", f"value-{i}")
        kv.set_secret("rotated", f"value-{i}")
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        names = [p.name or "" for p in client.list_properties_of_secrets()]
        versions = list(client.list_properties_of_secret_versions("rotated"))
        small_pages = list(client.list_properties_of_secrets(max_page_size=10).by_page())
    assert sorted(names) == sorted([f"secret-{i:02d}" for i in range(60)] + ["rotated"])
    assert len(versions) == 60
    assert len({v.version for v in versions}) == 60
    assert [len(list(page)) for page in small_pages] == [10] * 6 + [1]
    authenticated = [r for r in kv.requests if r.kind == "secrets" and r.authenticated]
    assert [r.operation for r in authenticated].count("list") == 3 + 7
    assert [r.operation for r in authenticated].count("list_versions") == 3


def test_list_secrets_aio_pages(kv: KeyVaultEmulator) -> None:
    """The aio client follows nextLink across pages too."""
    for i in range(30):
        kv.set_secret(f"s{i}", "v")

    async def main() -> list[str]:
        async with AsyncDefaultAzureCredential() as credential, _aclient(kv, credential) as client:
            return [p.name async for p in client.list_properties_of_secrets() if p.name]

    assert len(asyncio.run(main())) == 30
    assert [r.operation for r in kv.requests if r.kind == "secrets" and r.authenticated] == ["list", "list"]


# --- writing and deleting ------------------------------------------------------------------------------


def test_set_update_delete_recover_purge(kv: KeyVaultEmulator) -> None:
    """SDK writes round-trip; begin_delete_secret's poller finishes; soft delete blocks reuse until purged."""
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        created = client.set_secret("db-password", "hunter2", content_type="password", expires_on=expires)
        assert created.value == "hunter2"
        assert created.properties.expires_on == expires
        client.update_secret_properties("db-password", enabled=False)
        with pytest.raises(HttpResponseError):
            client.get_secret("db-password")
        client.update_secret_properties("db-password", enabled=True)

        poller = client.begin_delete_secret("db-password")
        poller.wait()
        deleted = poller.result()
        assert deleted.recovery_id == f"{kv.vault_url}/deletedsecrets/db-password"
        assert deleted.scheduled_purge_date is not None
        assert deleted.deleted_date is not None
        with pytest.raises(ResourceNotFoundError):
            client.get_secret("db-password")
        assert client.get_deleted_secret("db-password").name == "db-password"
        assert [d.name for d in client.list_deleted_secrets()] == ["db-password"]
        with pytest.raises(ResourceExistsError):
            client.set_secret("db-password", "again")

        client.begin_recover_deleted_secret("db-password").wait()
        assert client.get_secret("db-password").value == "hunter2"

        client.begin_delete_secret("db-password").wait()
        client.purge_deleted_secret("db-password")
        assert client.set_secret("db-password", "fresh").value == "fresh"
    assert any(r.operation == "get_deleted" and r.status == 200 for r in kv.requests)


def test_aio_set_and_delete(kv: KeyVaultEmulator) -> None:
    """The aio client's set_secret and (polling) delete_secret work."""

    async def main() -> None:
        async with AsyncDefaultAzureCredential() as credential, _aclient(kv, credential) as client:
            await client.set_secret("temp", "value")
            deleted = await client.delete_secret("temp")
            assert deleted.recovery_id is not None
            with pytest.raises(ResourceNotFoundError):
                await client.get_secret("temp")

    asyncio.run(main())


def test_helper_delete_secret(kv: KeyVaultEmulator) -> None:
    """kv.delete_secret soft-deletes (or purges), and kv.set_secret may reuse the name afterwards."""
    kv.set_secret("gone", "v")
    kv.delete_secret("gone")
    with pytest.raises(KeyError):
        kv.delete_secret("gone")
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        with pytest.raises(ResourceNotFoundError):
            client.get_secret("gone")
        assert client.get_deleted_secret("gone").name == "gone"
        kv.set_secret("gone", "back")
        assert client.get_secret("gone").value == "back"


# --- faults --------------------------------------------------------------------------------------------


def test_503_fault_is_retried_by_the_sdk(kv: KeyVaultEmulator) -> None:
    """A 503 is retried by the SDK's retry policy; the fault is consumed by the authenticated request only."""
    kv.set_secret("s", "v")
    kv.inject(Fault(status=503))
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        assert client.get_secret("s").value == "v"
    records = kv.secret_requests("s", include_challenges=True)
    assert [(r.authenticated, r.status) for r in records] == [(False, 401), (True, 503), (True, 200)]
    assert records[1].fault == Fault(status=503)


def test_429_fault_sends_retry_after(kv: KeyVaultEmulator) -> None:
    """A 429 fault answers Throttled with the Retry-After header; other statuses never carry one."""
    kv.set_secret("s", "v")
    with DefaultAzureCredential() as credential, _client(kv, credential, retry_total=0) as client:
        client.get_secret("s")
        kv.inject(Fault(status=429, retry_after=1), Fault(status=500))
        with pytest.raises(HttpResponseError) as throttled:
            client.get_secret("s")
        with pytest.raises(HttpResponseError) as failed:
            client.get_secret("s")
    assert throttled.value.status_code == 429
    assert _headers(throttled.value)["Retry-After"] == "1"
    assert throttled.value.error is not None
    assert throttled.value.error.code == "Throttled"
    assert failed.value.status_code == 500
    assert "Retry-After" not in _headers(failed.value)


def test_429_is_retried_after_the_advertised_delay(kv: KeyVaultEmulator) -> None:
    """The SDK waits Retry-After seconds before retrying a 429."""
    kv.set_secret("s", "v")
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        client.get_secret("s")
        kv.inject(Fault(status=429, retry_after=0.3))
        started = time.monotonic()
        assert client.get_secret("s").value == "v"
    assert time.monotonic() - started >= 0.3
    assert [r.status for r in kv.secret_requests("s")] == [200, 429, 200]


def test_403_fault_is_rbac_forbidden(kv: KeyVaultEmulator) -> None:
    """Fault(status=403) is a plain RBAC denial, and code picks the innererror code."""
    kv.set_secret("s", "v")
    kv.inject(Fault(status=403), Fault(status=403, code="ForbiddenByFirewall"))
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        errors = []
        for _ in range(2):
            with pytest.raises(HttpResponseError) as denied:
                client.get_secret("s")
            errors.append(_error_body(denied.value))
    assert [e["code"] for e in errors] == ["Forbidden", "Forbidden"]
    assert [e["innererror"]["code"] for e in errors] == ["ForbiddenByRbac", "ForbiddenByFirewall"]


def test_drop_fault_sync(kv: KeyVaultEmulator) -> None:
    """A dropped connection surfaces as a service request/response error, then the SDK recovers."""
    kv.set_secret("s", "v")
    with DefaultAzureCredential() as credential, _client(kv, credential, retry_total=0) as client:
        client.get_secret("s")
        kv.inject(Fault(drop=True))
        with pytest.raises((ServiceRequestError, ServiceResponseError)):
            client.get_secret("s")
        assert client.get_secret("s").value == "v"
    assert [r.status for r in kv.secret_requests("s")] == [200, None, 200]


def test_drop_fault_aio(kv: KeyVaultEmulator) -> None:
    """The aio client sees drops too; aiohttp retries a reused connection once, so two drops surface."""
    kv.set_secret("s", "v")

    async def main() -> None:
        async with (
            AsyncDefaultAzureCredential() as credential,
            _aclient(kv, credential, retry_total=0) as client,
        ):
            await client.get_secret("s")
            kv.inject(Fault(drop=True), Fault(drop=True))
            with pytest.raises((ServiceRequestError, ServiceResponseError)):
                await client.get_secret("s")
            assert (await client.get_secret("s")).value == "v"

    asyncio.run(main())
    assert [r.status for r in kv.secret_requests("s")] == [200, None, None, 200]


def test_drop_fault_is_retried_by_default(kv: KeyVaultEmulator) -> None:
    """With its default retry policy the sync SDK rides out a dropped connection."""
    kv.set_secret("s", "v")
    kv.inject(Fault(drop=True))
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        assert client.get_secret("s").value == "v"


def test_delay_fault_and_latency(kv: KeyVaultEmulator) -> None:
    """Fault(delay=x) answers normally after x seconds; latency slows every request."""
    kv.set_secret("s", "v")
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        client.get_secret("s")
        kv.inject(Fault(delay=0.3))
        started = time.monotonic()
        assert client.get_secret("s").value == "v"
        assert time.monotonic() - started >= 0.3
        kv.latency = 0.05
        started = time.monotonic()
        for _ in range(3):
            client.get_secret("s")
        assert time.monotonic() - started >= 0.15
    assert [r.status for r in kv.secret_requests("s")][-4:] == [200] * 4


def test_token_endpoint_fault_is_retried(kv: KeyVaultEmulator) -> None:
    """A failing token request is retried by azure-identity and the secret read still succeeds."""
    kv.set_secret("s", "v")
    kv.inject_token_fault(Fault(status=500))
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        assert client.get_secret("s").value == "v"
    assert [r.status for r in kv.token_requests()] == [500, 200]


def test_token_endpoint_fault_aio(kv: KeyVaultEmulator) -> None:
    """The aio credential retries a 503 and a dropped token request too."""
    kv.set_secret("s", "v")
    kv.inject_token_fault(Fault(status=503, retry_after=0.1), Fault(drop=True))

    async def main() -> str | None:
        async with AsyncDefaultAzureCredential() as credential, _aclient(kv, credential) as client:
            return (await client.get_secret("s")).value

    assert asyncio.run(main()) == "v"
    assert [r.status for r in kv.token_requests()] == [503, None, 200]


def test_fault_validation() -> None:
    """Fault rejects combinations the service never produces or the SDK would misread."""
    with pytest.raises(ValueError):
        Fault(status=500, retry_after=1)  # the SDK retries any status carrying Retry-After
    with pytest.raises(ValueError):
        Fault(status=503, drop=True)
    with pytest.raises(ValueError):
        Fault(status=200)
    with pytest.raises(ValueError):
        Fault(delay=-1)
    with pytest.raises(ValueError):
        Fault(code="Throttled")
    assert Fault(status=503, retry_after=2).retry_after == 2


def test_clear_faults(kv: KeyVaultEmulator) -> None:
    """clear_faults forgets queued faults."""
    kv.set_secret("s", "v")
    kv.inject(Fault(status=503))
    kv.inject_token_fault(Fault(status=500))
    kv.clear_faults()
    with DefaultAzureCredential() as credential, _client(kv, credential, retry_total=0) as client:
        assert client.get_secret("s").value == "v"


# --- authentication --------------------------------------------------------------------------------------


def test_unauthenticated_request_gets_the_challenge(kv: KeyVaultEmulator) -> None:
    """A request without a token gets 401 with the Key Vault bearer challenge."""
    status, headers, body = _raw_vault_get(kv, "/secrets/anything?api-version=7.5")
    assert status == 401
    assert headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.microsoftonline.com/{kv.tenant_id}", '
        'resource="https://vault.azure.net"'
    )
    assert "Retry-After" not in headers
    assert body["error"]["code"] == "Unauthorized"  # type: ignore[index]
    assert kv.requests[-1] == RequestRecord(
        method="GET",
        path="/secrets/anything",
        secret_name="anything",
        authenticated=False,
        status=401,
        kind="secrets",
        operation="get",
        api_version="7.5",
        received_at=kv.requests[-1].received_at,
    )


def test_expired_and_unknown_tokens_get_the_challenge(kv: KeyVaultEmulator) -> None:
    """Tokens expire after token_lifetime; unknown and expired tokens both get the 401 challenge."""
    kv.set_secret("s", "v")
    query = "api-version=2019-08-01&resource=https://vault.azure.net"
    status, token_body = _raw_token(kv, {"X-IDENTITY-HEADER": kv.identity_header}, query)
    assert status == 200
    assert token_body["token_type"] == "Bearer"
    assert token_body["resource"] == "https://vault.azure.net"
    assert int(str(token_body["expires_on"])) > time.time() + 3000
    good = str(token_body["access_token"])
    assert _raw_vault_get(kv, "/secrets/s?api-version=7.5", good)[0] == 200

    kv.token_lifetime = 0  # issued already expired
    expired = str(_raw_token(kv, {"X-IDENTITY-HEADER": kv.identity_header}, query)[1]["access_token"])
    for token in (expired, "not-a-token"):
        status, headers, _ = _raw_vault_get(kv, "/secrets/s?api-version=7.5", token)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer authorization=")


def test_token_endpoint_checks_identity_header(kv: KeyVaultEmulator) -> None:
    """The managed-identity endpoint answers 400 without X-IDENTITY-HEADER and 401 with a wrong one."""
    query = "api-version=2019-08-01&resource=https://vault.azure.net"
    assert _raw_token(kv, {}, query)[0] == 400
    assert _raw_token(kv, {"X-IDENTITY-HEADER": "wrong"}, query)[0] == 401
    assert _raw_token(kv, {"X-IDENTITY-HEADER": kv.identity_header}, "api-version=2019-08-01")[0] == 400
    assert [r.authenticated for r in kv.token_requests()] == [False, False, True]


def test_expire_tokens_then_sdk_recovers_at_refresh(kv: KeyVaultEmulator) -> None:
    """After expire_tokens() the SDK fails until azure-identity refreshes its cached token, as in Azure."""
    # On the 401 the SDK re-runs the challenge and asks the credential again, but azure-identity
    # serves its cached token (still valid as far as it knows), which is rejected again, so the call
    # raises ClientAuthenticationError and the SDK forgets its cached challenge. azure-identity
    # refreshes a token 300 s before its expires_on, so with token_lifetime=302 the cached token is
    # due for refresh 2-3 s after issue; the next call then re-runs the challenge, fetches a fresh
    # token and succeeds, with the same credential and client.
    kv.set_secret("s", "v")
    kv.token_lifetime = 302
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        assert client.get_secret("s").value == "v"
        stale = credential.get_token("https://vault.azure.net/.default").token
        kv.expire_tokens()
        with pytest.raises(ClientAuthenticationError):
            client.get_secret("s")
        assert len(kv.token_requests()) == 1
        # Wait (about 2-3 s) for azure-identity's own refresh rather than guessing its rounding.
        deadline = time.monotonic() + 6
        while credential.get_token("https://vault.azure.net/.default").token == stale:
            assert time.monotonic() < deadline, "azure-identity never refreshed the token"
            time.sleep(0.1)
        assert client.get_secret("s").value == "v"
    assert [r.status for r in kv.token_requests()] == [200, 200]
    statuses = [r.status for r in kv.secret_requests("s", include_challenges=True)]
    # read: challenge, ok | after expiry: stale token, stale token again | recovery: challenge, ok
    assert statuses == [401, 200, 401, 401, 401, 200]


# --- production-faithful vault name ------------------------------------------------------------------


def test_vault_name_route_sync(production_kv: KeyVaultEmulator) -> None:
    """KEYVAULT_NAME's production URL reaches the emulator with challenge-resource verification on."""
    kv = production_kv
    kv.set_secret("signing-secret", "prod-like")
    assert os.environ["KEYVAULT_NAME"] == VAULT_NAME
    assert "KEYVAULT_URL" not in os.environ
    url = f"https://{os.environ['KEYVAULT_NAME']}.vault.azure.net"
    with DefaultAzureCredential() as credential, SecretClient(url, credential) as client:
        secret = client.get_secret("signing-secret")
    assert secret.value == "prod-like"
    assert secret.id is not None
    assert secret.id.startswith(f"{PRODUCTION_URL}/secrets/signing-secret/")


def test_vault_name_route_aio(production_kv: KeyVaultEmulator) -> None:
    """The aio client reaches the production URL through aiohttp's resolver, verification on."""
    kv = production_kv
    kv.set_secret("signing-secret", "prod-like-aio")

    async def main() -> str | None:
        async with (
            AsyncDefaultAzureCredential() as credential,
            AsyncSecretClient(PRODUCTION_URL, credential, connection_verify=kv.ca_bundle) as client,
        ):
            return (await client.get_secret("signing-secret")).value

    assert asyncio.run(main()) == "prod-like-aio"


def test_vault_name_route_is_removed_on_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() releases the getaddrinfo route, restoring the original resolver."""
    original = socket.getaddrinfo
    with KeyVaultEmulator() as kv:
        _apply_env(monkeypatch, kv.environ(vault_name="route-check"))
        routed = socket.getaddrinfo("route-check.vault.azure.net", 443, type=socket.SOCK_STREAM)
        assert routed[0][4] == ("127.0.0.1", kv.port)
        assert socket.getaddrinfo("localhost", 443)[0][4][1] == 443  # other hosts untouched
    assert socket.getaddrinfo is original


# --- request log, concurrency, lifecycle ---------------------------------------------------------------


def test_request_log_never_holds_values_or_tokens(kv: KeyVaultEmulator) -> None:
    """Records describe requests (kind, method, path, name, auth, status) but never values or tokens."""
    kv.set_secret("preset", "preset-value-123")
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        client.set_secret("written", "written-value-456")
        client.get_secret("preset")
        token = credential.get_token("https://vault.azure.net/.default").token
    log = repr(kv.requests)
    for secret in ("preset-value-123", "written-value-456", token, kv.identity_header):
        assert secret not in log
    assert [(r.kind, r.method, r.path, r.secret_name, r.authenticated, r.status) for r in kv.requests] == [
        ("secrets", "PUT", "/secrets/written", "written", False, 401),
        ("token", "GET", "/msi/token", None, True, 200),
        ("secrets", "PUT", "/secrets/written", "written", True, 200),
        ("secrets", "GET", "/secrets/preset/", "preset", True, 200),
    ]
    assert [r.operation for r in kv.secret_requests()] == ["get"]
    kv.clear_requests()
    assert kv.requests == []


def test_concurrent_requests(kv: KeyVaultEmulator) -> None:
    """Many threads sharing one pooled client are served concurrently."""
    for i in range(8):
        kv.set_secret(f"s{i}", f"v{i}")
    kv.latency = 0.05
    with DefaultAzureCredential() as credential, _client(kv, credential) as client:
        client.get_secret("s0")
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            values = list(pool.map(lambda i: client.get_secret(f"s{i}").value, range(8)))
        elapsed = time.monotonic() - started
    assert values == [f"v{i}" for i in range(8)]
    assert elapsed < 8 * 0.05  # overlapped, not serialized


def test_stop_closes_keep_alive_connections_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() returns promptly even while a client holds a keep-alive connection open."""
    kv = KeyVaultEmulator().start()
    try:
        _apply_env(monkeypatch, kv.environ())
        kv.set_secret("s", "v")
        with DefaultAzureCredential() as credential, _client(kv, credential, retry_total=0) as client:
            client.get_secret("s")
            started = time.monotonic()
            kv.stop()
            assert time.monotonic() - started < 1.0
            assert not kv.running
            with pytest.raises((ServiceRequestError, ServiceResponseError)):
                client.get_secret("s")
    finally:
        kv.stop()


def test_environ_and_shared_ca(kv: KeyVaultEmulator) -> None:
    """environ() names every variable a process needs, and all emulators share one CA bundle."""
    env = kv.environ()
    assert env == {
        "IDENTITY_ENDPOINT": f"http://127.0.0.1:{kv.token_port}/msi/token",
        "IDENTITY_HEADER": kv.identity_header,
        "REQUESTS_CA_BUNDLE": kv.ca_bundle,
        "SSL_CERT_FILE": kv.ca_bundle,
        "KEYVAULT_URL": f"https://localhost:{kv.port}",
    }
    assert Path(kv.ca_bundle).read_text().startswith("-----BEGIN CERTIFICATE-----")
    with KeyVaultEmulator() as other:
        assert other.ca_bundle == kv.ca_bundle
        assert other.port != kv.port
    with pytest.raises(RuntimeError):
        KeyVaultEmulator().environ()


# --- standalone runner -----------------------------------------------------------------------------------


def test_load_secrets_file_maps_names(tmp_path: Path) -> None:
    """Env-style names map to Key Vault names; comments and blank lines are skipped."""
    path = tmp_path / "secrets.env"
    path.write_text("# comment\nSIGNING_SECRET=abc\n\nexport DB_PASSWORD='p a s s'\nempty=\n")
    assert load_secrets_file(path) == {"signing-secret": "abc", "db-password": "p a s s", "empty": ""}


def test_malformed_secrets_file_names_line_not_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed line is reported by file and line number, never by its content."""
    path = tmp_path / "bad.env"
    path.write_text("GOOD=fine\n\nthis-is-a-leaked-secret here\n")
    assert serve(["--secrets-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3:" in err
    assert "leaked" not in err


def test_module_command_serves_secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m atlas_config.testing` prints exports (never values), serves the file, stops on SIGTERM."""
    secrets_file = tmp_path / "dev.env"
    secrets_file.write_text("SIGNING_SECRET=never-printed-1\n# a comment\nDB_PASSWORD=never-printed-2\n")
    src = str(Path(atlas_config.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "atlas_config.testing", "--secrets-file", str(secrets_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    # A reader thread, because select() cannot see lines already buffered by the text wrapper.
    queue: Queue[str] = Queue()

    def pump() -> None:
        for line in proc.stdout or ():
            queue.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while not lines or not lines[-1].startswith("# Press Ctrl-C"):
            try:
                lines.append(queue.get(timeout=20).rstrip("\n"))
            except Empty:
                pytest.fail(f"the emulator printed no ready line; got {lines!r}")
        exported = dict(
            line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export ")
        )
        assert set(exported) == {
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            "REQUESTS_CA_BUNDLE",
            "SSL_CERT_FILE",
            "KEYVAULT_URL",
        }
        assert any("db-password, signing-secret" in line for line in lines if line.startswith("#"))

        _apply_env(monkeypatch, exported)
        with (
            DefaultAzureCredential() as credential,
            SecretClient(
                exported["KEYVAULT_URL"],
                credential,
                verify_challenge_resource=False,
                connection_verify=exported["SSL_CERT_FILE"],  # the child's own CA
            ) as client,
        ):
            assert client.get_secret("signing-secret").value == "never-printed-1"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    printed = "\n".join(lines) + "".join(queue.queue) + out + err
    assert "never-printed" not in printed
