"""The Key Vault backend: one client per vault per process, and Azure errors mapped to ours.

Azure (and, for ``aio``, aiohttp) are imported here, inside functions, so
``import atlas_config`` stays light and a development setup without a vault
never loads them.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._backends import Fetched
from ._errors import (
    AtlasConfigError,
    ConfigurationError,
    SecretAccessDeniedError,
    SecretFetchError,
    SecretNotFoundError,
)
from ._flight import SingleFlight

if TYPE_CHECKING:
    from azure.keyvault.secrets import KeyVaultSecret, SecretClient
    from azure.keyvault.secrets.aio import SecretClient as AsyncSecretClient

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a ``Retry-After`` header on the Azure error behind ``exc``, if any."""
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    headers = getattr(response, "headers", None) or {}
    raw = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


@contextmanager
def map_azure_errors(key: str, vault_url: str) -> Iterator[None]:
    """Translate Azure SDK exceptions into atlas-config's, the one place that does.

    Messages name the key, the vault and the HTTP status, and never include
    the Azure message text: response bodies and identity errors are not ours
    to vouch for. The original stays chained as ``__cause__`` for debugging.
    """
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    where = f"secret {key!r} from Key Vault {vault_url}"
    try:
        yield
    except AtlasConfigError:
        raise
    except ResourceNotFoundError as exc:
        raise SecretNotFoundError(
            f"{where} was not found (HTTP 404); create it in the vault, or check the vault name and version"
        ) from exc
    except ClientAuthenticationError as exc:
        status = exc.status_code
        if status is None:
            # The credential chain failed: no managed identity, token endpoint
            # down, or no `az login`. An identity outage is worth retrying.
            raise SecretFetchError(
                f"could not get a token to read {where} ({type(exc).__name__}); check the managed identity "
                "(or run `az login` locally)",
            ) from exc
        raise SecretFetchError(
            f"{where} was refused with HTTP {status} after re-authentication; grant this identity "
            "'get' on secrets (Key Vault Secrets User role)",
            transient=False,
            status=status,
        ) from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        code = getattr(getattr(exc, "error", None), "code", None) or "unknown"
        if status == 403:
            raise SecretAccessDeniedError(
                f"{where} was refused with HTTP 403 ({code}): the secret is disabled or this identity lacks "
                "'get' permission; enable the secret or grant the Key Vault Secrets User role"
            ) from exc
        transient = status in TRANSIENT_STATUSES
        fix = (
            "Key Vault is throttling or unavailable; it will be retried" if transient else "check the request"
        )
        raise SecretFetchError(
            f"{where} failed with HTTP {status} ({code}); {fix}", transient=transient
        ) from exc
    except (TimeoutError, ServiceRequestError, ServiceResponseError, OSError) as exc:
        raise SecretFetchError(
            f"could not reach Key Vault {vault_url} for secret {key!r} ({type(exc).__name__}); check "
            "network access to the vault"
        ) from exc


def _to_fetched(secret: KeyVaultSecret) -> Fetched:
    expires = secret.properties.expires_on
    return Fetched(
        value=secret.value or "",
        source="keyvault",
        version=secret.properties.version,
        expires_on=expires.timestamp() if expires is not None else None,
    )


def _token_key(scopes: tuple[str, ...], options: Any) -> Hashable:
    return scopes, tuple(sorted((options or {}).items()))


class _SharedTokens:
    """A credential whose concurrent token requests share one.

    azure-identity caches a token once it has one, but callers that ask at
    the same moment each go to the token endpoint: a cold start reading three
    secrets at once made three requests, a pod of workers several times that,
    and the managed-identity endpoint throttles. The waiters share the first
    request's token or its error; later calls hit the credential's own cache.
    (Only the sync client needs this: azure-core's async auth policy already
    holds a lock around its token request.)
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._flights: SingleFlight[Hashable, Any] = SingleFlight()

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        return self._flights.run(
            _token_key(scopes, options), lambda: self.inner.get_token_info(*scopes, options=options)
        )

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return self._flights.run(
            ("get_token", _token_key(scopes, kwargs)), lambda: self.inner.get_token(*scopes, **kwargs)
        )

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> _SharedTokens:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.inner.__exit__(*exc_info)


def _import_azure_error(exc: ImportError) -> ConfigurationError:
    return ConfigurationError(
        f"the Azure SDK could not be imported ({exc.name}); install atlas-config with its dependencies "
        "(`pip install atlas-config`, and `atlas-config[aio]` for async reads)"
    )


class KeyVaultBackend:
    """Reads secrets from one vault. One instance per vault URL per process.

    The SDK's own retry policy is off (``retry_total=0``): atlas-config's retry
    owns the attempt count, so ``max_attempts=3`` means three GETs.
    """

    def __init__(self, vault_url: str, *, verify_challenge_resource: bool, timeout: float) -> None:
        self.vault_url = vault_url
        self._verify = verify_challenge_resource
        self._timeout = timeout
        self._lock = threading.Lock()
        self._client: SecretClient | None = None
        self._credential: Any = None
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[AsyncSecretClient, Any]
        ] = weakref.WeakKeyDictionary()

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "verify_challenge_resource": self._verify,
            "retry_total": 0,
            "connection_timeout": self._timeout,
            "read_timeout": self._timeout,
        }

    def client(self) -> SecretClient:
        """The sync client, built on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        from azure.identity import DefaultAzureCredential
                        from azure.keyvault.secrets import SecretClient
                    except ImportError as exc:
                        raise _import_azure_error(exc) from exc
                    self._credential = _SharedTokens(DefaultAzureCredential())
                    self._client = SecretClient(self.vault_url, self._credential, **self._client_kwargs())
        return self._client

    def aclient(self) -> AsyncSecretClient:
        """The async client of the running event loop, built on first use there.

        aiohttp sessions belong to one loop, so each loop gets its own client.
        """
        loop = asyncio.get_running_loop()
        pair = self._aclients.get(loop)
        if pair is None:
            try:
                from azure.identity.aio import DefaultAzureCredential
                from azure.keyvault.secrets.aio import SecretClient as AsyncSecretClient
            except ImportError as exc:
                raise _import_azure_error(exc) from exc
            # No _SharedTokens here: azure-core's async auth policy already holds a lock
            # around token requests, so concurrent tasks make one.
            credential = DefaultAzureCredential()
            kwargs = self._client_kwargs()
            # aiohttp builds its default SSL context once, when it is first
            # imported; read SSL_CERT_FILE now, as a fresh context would.
            ca_file = os.environ.get("SSL_CERT_FILE")
            if ca_file:
                kwargs["connection_verify"] = ca_file
            pair = (AsyncSecretClient(self.vault_url, credential, **kwargs), credential)
            self._aclients[loop] = pair
        return pair[0]

    def fetch(self, key: str, version: str | None) -> Fetched:
        """One GET, no retry."""
        try:
            with map_azure_errors(key, self.vault_url):
                return _to_fetched(self.client().get_secret(key, version))
        except SecretFetchError as exc:
            if exc.status == 401:
                self._drop_sync_client()
            raise

    async def afetch(self, key: str, version: str | None) -> Fetched:
        """One GET through the ``aio`` client, no retry."""
        try:
            with map_azure_errors(key, self.vault_url):
                return _to_fetched(await self.aclient().get_secret(key, version))
        except SecretFetchError as exc:
            if exc.status == 401:
                await self.aclose()
            raise

    def _drop_sync_client(self) -> None:
        """After a 401 that survived re-authentication, start over with a new credential.

        The credential would otherwise keep presenting its cached token until
        its own refresh window (minutes). Other threads may still be using the
        old client, so it is dropped, not closed; it closes when unreferenced.
        """
        with self._lock:
            self._client = self._credential = None

    def credential_name(self) -> str | None:
        """Which credential of ``DefaultAzureCredential``'s chain produced the last token, if known."""
        successful = getattr(getattr(self._credential, "inner", None), "_successful_credential", None)
        return type(successful).__name__ if successful is not None else None

    def close(self) -> None:
        """Close the sync client; async clients are closed by ``aclose``."""
        with self._lock:
            client, credential = self._client, self._credential
            self._client = self._credential = None
        if client is not None:
            client.close()
            credential.close()

    async def aclose(self) -> None:
        """Close the async client of the running loop."""
        pair = self._aclients.pop(asyncio.get_running_loop(), None)
        if pair is not None:
            await pair[0].close()
            await pair[1].close()

    def forget(self) -> None:
        """After ``fork``: drop clients without closing them (their sockets belong to the parent)."""
        self._lock = threading.Lock()
        self._client = self._credential = None
        self._aclients = weakref.WeakKeyDictionary()
