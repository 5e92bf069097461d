"""An in-process Azure Key Vault (secrets) endpoint and App Service managed-identity token endpoint.

:class:`KeyVaultEmulator` lets an application's tests drive the *unmodified* Azure SDK
(``azure.keyvault.secrets.SecretClient``, sync and aio, with ``DefaultAzureCredential``) against a
local vault that behaves like the real service wherever the SDK can tell the difference: TLS, the
Key Vault authentication challenge, managed-identity tokens that expire, service-shaped bodies and
errors, paging, soft delete, throttling and dropped connections.

Example::

    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    from atlas_config.testing import KeyVaultEmulator

    with KeyVaultEmulator() as kv:
        kv.set_secret("signing-secret", "s3cr3t")
        os.environ.update(kv.environ())
        with DefaultAzureCredential() as credential, SecretClient(
            kv.vault_url, credential, verify_challenge_resource=False
        ) as client:
            assert client.get_secret("signing-secret").value == "s3cr3t"
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hmac
import json
import re
import secrets as _random
import selectors
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple, Self, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ._tls import ca_bundle_path, server_ssl_context

__all__ = ["Fault", "KeyVaultEmulator", "RequestRecord"]

#: Secret names the service accepts.
SECRET_NAME_PATTERN: Final = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
#: Largest secret value the service accepts, in characters.
MAX_SECRET_VALUE_CHARS: Final = 25 * 1024
#: Page size of the list operations, and the largest ``maxresults`` the service accepts.
PAGE_SIZE: Final = 25
#: Resource (audience) of Key Vault data-plane tokens, as the challenge announces it.
VAULT_RESOURCE: Final = "https://vault.azure.net"
#: The App Service managed-identity protocol version azure-identity and MSAL speak.
IDENTITY_API_VERSION: Final = "2019-08-01"

_RECOVERY_LEVEL: Final = "Recoverable+Purgeable"
_RECOVERABLE_DAYS: Final = 90
_TOKEN_PATH: Final = "/msi/token"
_MAX_BODY_BYTES: Final = 1024 * 1024
_HANDSHAKE_TIMEOUT: Final = 10.0
_LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "0.0.0.0", ""})  # noqa: S104 - names, not binds
_API_VERSION_PATTERN: Final = re.compile(r"^(?:7\.\d+|20\d\d-\d\d-\d\d)(?:-preview(?:\.\d+)?)?$")
_VAULT_NAME_PATTERN: Final = re.compile(r"^(?=.{3,24}$)[a-zA-Z](?:[a-zA-Z0-9]|-(?!-))*[a-zA-Z0-9]$")
_HOST_HEADER_PATTERN: Final = re.compile(r"^[A-Za-z0-9.-]+(?::\d{1,5})?$")
_NOT_FOUND_HELP: Final = (
    "If you recently deleted this secret you may be able to recover it using the correct recovery "
    "command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)
_RBAC_MESSAGE: Final = (
    "Caller is not authorized to perform action on resource.\r\n"
    "If role assignments, deny assignments or role definitions were changed recently, "
    "please observe propagation time.\r\n"
)
_DEFAULT_FAULT_CODES: Final[Mapping[int, str]] = {
    400: "BadParameter",
    401: "Unauthorized",
    403: "ForbiddenByRbac",  # innererror code; the top-level code of every 403 is "Forbidden"
    404: "SecretNotFound",
    409: "Conflict",
    429: "Throttled",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

#: What a :class:`RequestRecord` was: the Key Vault REST operation, ``"token"`` for the identity
#: endpoint, or ``"unsupported"`` for a path/method the emulator does not implement (answered 404).
Operation = Literal[
    "get",
    "set",
    "update",
    "delete",
    "list",
    "list_versions",
    "get_deleted",
    "list_deleted",
    "purge",
    "recover",
    "token",
    "unsupported",
]


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure, consumed by exactly one request.

    * ``status`` answers with that HTTP status and a service-shaped error body. For Key Vault
      requests ``code`` picks the error code: for 403 it is the ``innererror`` code (Key Vault's
      403s are all ``"Forbidden"``; the reason, such as ``"ForbiddenByRbac"`` (default),
      ``"AccessDenied"`` or ``"ForbiddenByFirewall"``, lives in ``innererror``), for other statuses
      it is ``error.code`` (defaults: 429 ``"Throttled"``, 503 ``"ServiceUnavailable"``, ...).
      Token-endpoint faults ignore ``code``: App Service errors carry only a status and message.
    * ``retry_after`` sends a ``Retry-After`` header; allowed only with status 429 or 503, because
      the Azure SDK retries *any* status that carries one.
    * ``drop`` closes the connection without answering (the SDK raises ``ServiceRequestError`` or
      ``ServiceResponseError``, or retries).
    * ``delay`` sleeps that many seconds first, then answers normally (or with ``status`` /
      ``drop``).
    * ``Fault()`` with nothing set lets one request through untouched (a placeholder in a sequence).

    Example::

        kv.inject(Fault(status=503), Fault(status=429, retry_after=1), Fault(drop=True), Fault(delay=0.5))
        kv.inject(Fault(status=403, code="ForbiddenByRbac"))
    """

    status: int | None = None
    retry_after: float | None = None
    drop: bool = False
    delay: float = 0.0
    code: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"Fault status must be an HTTP error status (400-599), got {self.status}")
        if self.drop and self.status is not None:
            raise ValueError("A Fault either drops the connection or answers with a status, not both")
        if self.delay < 0:
            raise ValueError("Fault delay must not be negative")
        if self.retry_after is not None:
            if self.retry_after < 0:
                raise ValueError("Fault retry_after must not be negative")
            if self.status not in (429, 503):
                raise ValueError(
                    "retry_after is only allowed with status 429 or 503: the Azure SDK retries any "
                    "response carrying Retry-After, and Key Vault sends it only when throttling"
                )
        if self.code is not None and self.status is None:
            raise ValueError("Fault code needs a status")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What the emulator saw of one request. Never holds a secret value or a token.

    ``status`` is ``None`` when a :class:`Fault` dropped the connection. ``kind`` is ``"secrets"``
    for the vault and ``"token"`` for the managed-identity endpoint. ``authenticated`` is true when
    a vault request carried a valid, unexpired token (or a token request carried the right
    ``X-IDENTITY-HEADER``). ``secret_name`` is spelled as in the URL.

    Example::

        [r.status for r in kv.requests if r.kind == "secrets"]  # e.g. [401, 200]
    """

    method: str
    path: str
    secret_name: str | None
    authenticated: bool
    status: int | None
    kind: Literal["secrets", "token"]
    operation: Operation
    version: str | None = None
    fault: Fault | None = None
    api_version: str | None = None
    received_at: float = field(default_factory=time.time)


class _Response(NamedTuple):
    status: int
    body: Mapping[str, Any] | None
    headers: tuple[tuple[str, str], ...] = ()


class _Route(NamedTuple):
    operation: Operation
    name: str | None
    version: str | None


@dataclass(slots=True)
class _Version:
    version: str
    value: str
    enabled: bool
    content_type: str | None
    not_before: int | None
    expires: int | None
    tags: dict[str, str] | None
    created: int
    updated: int


@dataclass(slots=True)
class _Secret:
    # The service keeps the spelling a secret was created with and uses it in identifiers.
    name: str
    versions: list[_Version]
    deleted_date: int | None = None

    @property
    def latest(self) -> _Version:
        return self.versions[-1]

    def find(self, version: str) -> _Version | None:
        wanted = version.lower()
        return next((v for v in self.versions if v.version == wanted), None)


def _error(
    status: int, code: str, message: str, inner: str | None = None, headers: tuple[tuple[str, str], ...] = ()
) -> _Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner is not None:
        error["innererror"] = {"code": inner}
    return _Response(status, {"error": error}, headers)


def _not_found(name: str, version: str | None = None) -> _Response:
    ident = name if not version else f"{name}/{version}"
    return _error(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {ident} was not found in this key vault. {_NOT_FOUND_HELP}",
    )


def _bad_parameter(message: str) -> _Response:
    return _error(400, "BadParameter", message)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _epoch(value: dt.datetime | None, argument: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{argument} must be timezone-aware, e.g. datetime.now(timezone.utc)")
    return int(value.timestamp())


def _validate_name(name: str) -> None:
    if not isinstance(name, str) or not SECRET_NAME_PATTERN.match(name):
        raise ValueError("Secret names must match ^[0-9a-zA-Z-]{1,127}$")


def _route(method: str, path: str) -> _Route:
    parts = [unquote(p) for p in path.split("/")[1:]]
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # "/secrets/name/" is the SDK's spelling of "latest version"
    if not parts:
        return _Route("unsupported", None, None)
    collection, rest = parts[0].lower(), parts[1:]
    name = rest[0] if rest else None
    table: dict[tuple[str, int, str], Operation] = {
        ("secrets", 0, "GET"): "list",
        ("secrets", 1, "GET"): "get",
        ("secrets", 1, "PUT"): "set",
        ("secrets", 1, "DELETE"): "delete",
        ("secrets", 1, "PATCH"): "update",
        ("secrets", 2, "GET"): "get",
        ("secrets", 2, "PATCH"): "update",
        ("deletedsecrets", 0, "GET"): "list_deleted",
        ("deletedsecrets", 1, "GET"): "get_deleted",
        ("deletedsecrets", 1, "DELETE"): "purge",
    }
    if collection == "secrets" and len(rest) == 2 and rest[1].lower() == "versions" and method == "GET":
        return _Route("list_versions", name, None)
    if (
        collection == "deletedsecrets"
        and len(rest) == 2
        and rest[1].lower() == "recover"
        and method == "POST"
    ):
        return _Route("recover", name, None)
    operation = table.get((collection, len(rest), method), "unsupported")
    version = rest[1] if operation in ("get", "update") and len(rest) == 2 else None
    return _Route(operation, name, version)


def _first(query: Mapping[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


# --- routing <name>.vault.azure.net to an emulator inside this process ---------------------------

_route_lock = threading.Lock()
_routes: dict[str, tuple[str, int, int]] = {}  # host -> (ip, port, id(owner))
_original_getaddrinfo: Callable[..., Any] | None = None


def _routed_getaddrinfo(
    host: bytes | str | None,
    port: bytes | str | int | None,
    family: int = 0,
    type: int = 0,
    proto: int = 0,
    flags: int = 0,
) -> Any:
    original = _original_getaddrinfo or socket.getaddrinfo
    if host is not None and port in (443, "443", b"443", "https", b"https"):
        key = (host.decode("ascii", "replace") if isinstance(host, bytes) else host).lower().rstrip(".")
        target = _routes.get(key)
        if target is not None:
            # AF_INET only: the emulator listens on an IPv4 address.
            return original(target[0], target[1], socket.AF_INET, type, proto, flags)
    return original(host, port, family, type, proto, flags)


def _add_route(host: str, ip: str, port: int, owner: object) -> None:
    global _original_getaddrinfo
    with _route_lock:
        _routes[host] = (ip, port, id(owner))
        if _original_getaddrinfo is None:
            # Both urllib3 (sync SDK) and aiohttp's default ThreadedResolver look socket.getaddrinfo up
            # at call time, and aiohttp connects to the port in the returned sockaddr, so one patch
            # covers both while TLS still verifies the production host name.
            _original_getaddrinfo = socket.getaddrinfo
            socket.getaddrinfo = _routed_getaddrinfo


def _remove_routes(owner: object) -> None:
    global _original_getaddrinfo
    with _route_lock:
        for host in [h for h, target in _routes.items() if target[2] == id(owner)]:
            del _routes[host]
        # Leave a later patch (e.g. a test's monkeypatch) in place; ours falls through when empty.
        if not _routes and _original_getaddrinfo is not None and socket.getaddrinfo is _routed_getaddrinfo:
            socket.getaddrinfo = _original_getaddrinfo
            _original_getaddrinfo = None


# --- HTTP plumbing ---------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        emulator: KeyVaultEmulator,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.emulator = emulator
        self._tls = tls
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._closing = False
        # serve_forever() polls for shutdown every poll_interval; a wake-up socket makes stop() instant.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, handler)
        except BaseException:
            self._wake_reader.close()
            self._wake_writer.close()
            raise

    def start_serving(self, name: str) -> None:
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_reader, selectors.EVENT_READ)
                while not self._closing:
                    for key, _ in selector.select():
                        if key.fileobj is self and not self._closing:
                            self._accept()
        finally:
            self._stopped.set()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        try:
            self.process_request(request, client_address)  # hands the connection to a new thread
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def stop_serving(self) -> None:
        """Stop accepting, close every open connection (idle keep-alive ones too), release the port."""
        with self._connections_lock:
            self._closing = True
            connections = list(self._connections)
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        if self._thread is not None:
            self._stopped.wait(timeout=5)
        for conn in connections:
            with contextlib.suppress(OSError):
                # The plain-socket shutdown, even on TLS sockets: it only needs the descriptor, and it
                # wakes the handler thread blocked reading the next keep-alive request.
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        self.server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def _track(self, conn: socket.socket) -> bool:
        with self._connections_lock:
            if self._closing:
                return False
            self._connections.add(conn)
            return True

    def _untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = cast(socket.socket, request)
        try:
            if not self._track(conn):
                return
            if self._tls is not None:
                # The handshake runs here, in the connection's own thread, so a slow or broken client
                # cannot stall the accept loop.
                conn.settimeout(_HANDSHAKE_TIMEOUT)
                try:
                    tls_conn = self._tls.wrap_socket(conn, server_side=True)
                except OSError:
                    return
                self._untrack(conn)
                conn = tls_conn
                if not self._track(conn):
                    return
                conn.settimeout(None)
            handler: Callable[..., object] = self.RequestHandlerClass
            handler(conn, client_address, self)
        except OSError:
            pass  # the client went away, or stop() closed the connection under the handler
        finally:
            self._untrack(conn)
            with contextlib.suppress(OSError):
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "atlas-config-kv-emulator"
    sys_version = ""
    # One buffered write per response (flushed in _send) plus TCP_NODELAY: header and body in
    # separate segments would meet the client's delayed ACK and cost ~40 ms per request.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the default writes every request line to stderr; kv.requests is the log

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        raise NotImplementedError

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            return None
        if not 0 <= size <= _MAX_BODY_BYTES:
            return None
        return self.rfile.read(size)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > _MAX_BODY_BYTES:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send(self, response: _Response, base_headers: tuple[tuple[str, str], ...]) -> None:
        data = b"" if response.body is None else json.dumps(response.body, separators=(",", ":")).encode()
        self.send_response(response.status)
        for name, value in (*base_headers, *response.headers):
            self.send_header(name, value)
        if response.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)
        self.wfile.flush()

    def _drop(self) -> None:
        # Nothing is written: the client sees the connection close where it expected a response.
        self.close_connection = True
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.connection, socket.SHUT_RDWR)

    def _reject_body(self) -> None:
        self.close_connection = True
        self._send(_error(413, "RequestTooLarge", "The request body is malformed or too large."), ())


class _VaultHandler(_Handler):
    def _handle(self) -> None:
        emulator = self.server.emulator
        received = time.time()
        body = self._read_body()
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        route = _route(self.command, split.path)

        def record(authenticated: bool, status: int | None, fault: Fault | None = None) -> None:
            emulator._record(
                RequestRecord(
                    method=self.command,
                    path=split.path,
                    secret_name=route.name,
                    authenticated=authenticated,
                    status=status,
                    kind="secrets",
                    operation=route.operation,
                    version=route.version,
                    fault=fault,
                    api_version=_first(query, "api-version"),
                    received_at=received,
                )
            )

        if body is None:
            record(False, 413)
            self._reject_body()
            return
        emulator._apply_latency()
        auth_error = emulator._authenticate(self.headers.get("Authorization"))
        if auth_error is not None:
            # Every unauthenticated request, whatever its route, gets the challenge: that is how the
            # SDK discovers the tenant and resource, and how it learns a token went bad.
            response = emulator._challenge(auth_error)
            record(False, response.status)
            self._send(response, emulator._vault_headers())
            return
        fault = emulator._take_fault(emulator._faults)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                record(True, None, fault)
                self._drop()
                return
        if fault is not None and fault.status is not None:
            response = emulator._fault_response(fault, route)
        else:
            response = emulator._dispatch(route, query, body, self._base_url())
        record(True, response.status, fault)
        self._send(response, emulator._vault_headers())

    def _base_url(self) -> str:
        host = self.headers.get("Host", "")
        if not _HOST_HEADER_PATTERN.match(host):
            return self.server.emulator.vault_url
        if host.endswith(":443"):
            host = host[: -len(":443")]
        return f"https://{host}"


class _TokenHandler(_Handler):
    def _handle(self) -> None:
        emulator = self.server.emulator
        received = time.time()
        body = self._read_body()
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        header = self.headers.get("X-IDENTITY-HEADER")
        authenticated = header is not None and hmac.compare_digest(
            header.encode("utf-8", "replace"), emulator.identity_header.encode()
        )

        def record(status: int | None, fault: Fault | None = None) -> None:
            emulator._record(
                RequestRecord(
                    method=self.command,
                    path=split.path,
                    secret_name=None,
                    authenticated=authenticated,
                    status=status,
                    kind="token",
                    operation="token",
                    fault=fault,
                    api_version=_first(query, "api-version"),
                    received_at=received,
                )
            )

        if body is None:
            record(413)
            self._reject_body()
            return
        emulator._apply_latency()
        response: _Response
        fault: Fault | None = None
        if split.path.rstrip("/").lower() != _TOKEN_PATH:
            response = emulator._identity_error(404, "The requested resource was not found.")
        elif self.command != "GET":
            response = emulator._identity_error(405, "The requested method is not allowed.")
        elif header is None:
            response = emulator._identity_error(400, "The X-IDENTITY-HEADER header is required.")
        elif not authenticated:
            response = emulator._identity_error(401, "The X-IDENTITY-HEADER header is invalid.")
        elif _first(query, "api-version") != IDENTITY_API_VERSION:
            response = emulator._identity_error(400, f"api-version must be {IDENTITY_API_VERSION}.")
        elif not _first(query, "resource"):
            response = emulator._identity_error(400, "Required query parameter 'resource' is missing.")
        else:
            fault = emulator._take_fault(emulator._token_faults)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.drop:
                record(None, fault)
                self._drop()
                return
            if fault is not None and fault.status is not None:
                response = emulator._identity_fault_response(fault)
            else:
                response = emulator._issue_token(cast(str, _first(query, "resource")))
        record(response.status, fault)
        self._send(response, (("Cache-Control", "no-store"),))


# --- the emulator ----------------------------------------------------------------------------------


class KeyVaultEmulator:
    """A local Azure Key Vault secrets endpoint plus the managed-identity endpoint that feeds it tokens.

    Starts two servers on ``host`` (ephemeral ports unless ``port`` / ``token_port`` are given): the
    vault, over HTTPS with a certificate for ``localhost``, ``127.0.0.1`` and ``*.vault.azure.net``
    signed by a per-process CA (:attr:`ca_bundle`), and an App Service-style managed-identity token
    endpoint over plain HTTP (like App Service's own). Point an application at it with
    :meth:`environ`.

    Behaviour mirrors the service where the SDK can observe it: an unauthenticated request, or one
    with an unknown, revoked or expired token, gets ``401`` with the Key Vault ``WWW-Authenticate``
    challenge; tokens are opaque, issued only by the token endpoint, and expire after
    :attr:`token_lifetime` seconds; bodies, ids, attributes, paging (25 per page, absolute
    ``nextLink``), soft delete, and error bodies follow the REST API. As in Azure, a secret whose
    ``not_before`` is in the future or whose ``expires_on`` has passed is still returned, with its
    ``nbf`` / ``exp`` attributes set; the SDK and applications decide what to do with them.

    Faults (:meth:`inject`) are consumed one per vault request *that carries a valid token*, in
    order, so the SDK's challenge round trip never eats one and a test can count precisely.

    Example::

        with KeyVaultEmulator() as kv:
            version = kv.set_secret("signing-secret", "s3cr3t", content_type="text/plain")
            kv.inject(Fault(status=503), Fault(status=429, retry_after=1))
            env = kv.environ()  # IDENTITY_ENDPOINT, IDENTITY_HEADER, CA bundle vars, KEYVAULT_URL
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token_port: int = 0,
        tenant_id: str | None = None,
        token_lifetime: int = 3600,
        latency: float = 0.0,
    ) -> None:
        """Create a stopped emulator; :meth:`start` (or ``with``) binds the ports.

        Example::

            kv = KeyVaultEmulator(token_lifetime=600, latency=0.01)
        """
        self._host = host
        self._requested_ports = (port, token_port)
        self._tenant_id = tenant_id or str(uuid.uuid4())
        self._identity_header = _random.token_urlsafe(24)
        self._client_id = str(uuid.uuid4())
        self._lock = threading.RLock()
        self._lifecycle_lock = threading.Lock()
        self._secrets: dict[str, _Secret] = {}
        self._deleted: dict[str, _Secret] = {}
        self._tokens: dict[str, tuple[float, str]] = {}
        self._faults: list[Fault] = []
        self._token_faults: list[Fault] = []
        self._requests: list[RequestRecord] = []
        self._servers: list[_Server] = []
        self._token_lifetime = 0
        self._latency = 0.0
        self.token_lifetime = token_lifetime
        self.latency = latency

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind both servers and serve in daemon threads. Returns ``self``.

        Example::

            kv = KeyVaultEmulator().start()
            try:
                ...
            finally:
                kv.stop()
        """
        with self._lifecycle_lock:
            if self._servers:
                raise RuntimeError("KeyVaultEmulator is already running")
            extra_hosts = () if self._host in _LOCAL_HOSTS else (self._host,)
            tls = server_ssl_context(extra_hosts)
            vault = _Server((self._host, self._requested_ports[0]), _VaultHandler, self, tls)
            try:
                token = _Server((self._host, self._requested_ports[1]), _TokenHandler, self, None)
            except BaseException:
                vault.stop_serving()
                raise
            self._servers = [vault, token]
            for server, role in ((vault, "vault"), (token, "token")):
                server.start_serving(f"kv-emulator-{role}-{server.server_address[1]}")
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection (keep-alive ones too) and drop vault-name routes.

        Safe to call twice. The stored secrets survive; :meth:`start` serves them again (on new
        ephemeral ports unless fixed ports were given).

        Example::

            kv.stop()
        """
        with self._lifecycle_lock:
            servers, self._servers = self._servers, []
            _remove_routes(self)
            for server in servers:
                server.stop_serving()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the servers are up.

        Example::

            assert kv.running
        """
        return bool(self._servers)

    def _require_running(self) -> list[_Server]:
        servers = self._servers
        if not servers:
            raise RuntimeError("KeyVaultEmulator is not running; call start() or use it in a with block")
        return servers

    # --- addresses ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The vault's HTTPS port.

        Example::

            assert kv.vault_url.endswith(f":{kv.port}")
        """
        return int(self._require_running()[0].server_address[1])

    @property
    def token_port(self) -> int:
        """The managed-identity endpoint's HTTP port.

        Example::

            assert str(kv.token_port) in kv.identity_endpoint
        """
        return int(self._require_running()[1].server_address[1])

    @property
    def vault_url(self) -> str:
        """The vault URL, ``https://localhost:<port>``. Clients need ``verify_challenge_resource=False``.

        Localhost is not a ``*.vault.azure.net`` host, so the SDK's check that the challenge's
        resource matches the vault's domain must be off; :meth:`environ` with ``vault_name`` keeps it
        on.

        Example::

            SecretClient(kv.vault_url, credential, verify_challenge_resource=False)
        """
        host = "localhost" if self._host in _LOCAL_HOSTS else self._host
        return f"https://{host}:{self.port}"

    @property
    def identity_endpoint(self) -> str:
        """The value for ``IDENTITY_ENDPOINT``: the App Service managed-identity token URL.

        Example::

            os.environ["IDENTITY_ENDPOINT"] = kv.identity_endpoint
        """
        host = "127.0.0.1" if self._host in _LOCAL_HOSTS else self._host
        return f"http://{host}:{self.token_port}{_TOKEN_PATH}"

    @property
    def identity_header(self) -> str:
        """The value for ``IDENTITY_HEADER``: the token endpoint rejects requests without it.

        Example::

            os.environ["IDENTITY_HEADER"] = kv.identity_header
        """
        return self._identity_header

    @property
    def tenant_id(self) -> str:
        """The tenant GUID the challenge names (``https://login.microsoftonline.com/<tenant_id>``).

        Example::

            KeyVaultEmulator(tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47")
        """
        return self._tenant_id

    @property
    def ca_bundle(self) -> str:
        """Path of the PEM file of the CA that signs the vault certificate; shared by all emulators.

        Example::

            AsyncSecretClient(kv.vault_url, credential, connection_verify=kv.ca_bundle)
        """
        return ca_bundle_path()

    def route(self, vault_name: str) -> str:
        """Resolve ``<vault_name>.vault.azure.net:443`` to this emulator inside this process.

        Patches ``socket.getaddrinfo`` (which both the sync SDK's urllib3 and aio's default aiohttp
        resolver use) so the production URL reaches the emulator while TLS still verifies the real
        host name against the ``*.vault.azure.net`` certificate, and the SDK keeps
        challenge-resource verification on, as in Azure. Other processes are unaffected. The route
        is removed by :meth:`stop`. Returns the vault URL.

        Example::

            url = kv.route("atlas-test")  # "https://atlas-test.vault.azure.net"
            SecretClient(url, credential)
        """
        if not _VAULT_NAME_PATTERN.match(vault_name):
            raise ValueError(
                "Vault names are 3-24 characters: letters, digits and single hyphens, starting with a "
                "letter and ending with a letter or digit"
            )
        self._require_running()
        ip = "127.0.0.1" if self._host in _LOCAL_HOSTS else self._host
        host = f"{vault_name.lower()}.vault.azure.net"
        _add_route(host, ip, self.port, self)
        return f"https://{host}"

    def environ(self, *, vault_name: str | None = None) -> dict[str, str]:
        """Environment variables that point a process at this emulator.

        Always: ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` (so ``DefaultAzureCredential`` /
        ``ManagedIdentityCredential`` use App Service managed identity), and ``REQUESTS_CA_BUNDLE``
        plus ``SSL_CERT_FILE`` set to :attr:`ca_bundle` (the sync SDK's requests reads the first;
        Python's default SSL context, used by aiohttp, reads the second). Then either
        ``KEYVAULT_URL`` (:attr:`vault_url`), or with ``vault_name`` the production-faithful
        ``KEYVAULT_NAME=<vault_name>``, which also calls :meth:`route` so
        ``https://<vault_name>.vault.azure.net`` reaches the emulator *in this process*.

        aiohttp builds its default verified SSL context once, when it is imported, from
        ``SSL_CERT_FILE``; if aiohttp was imported before these variables were set, aio clients must
        be given ``connection_verify=kv.ca_bundle`` explicitly.

        Example::

            for key, value in kv.environ(vault_name="atlas-test").items():
                monkeypatch.setenv(key, value)
        """
        env = {
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
            "REQUESTS_CA_BUNDLE": self.ca_bundle,
            "SSL_CERT_FILE": self.ca_bundle,
        }
        if vault_name is None:
            env["KEYVAULT_URL"] = self.vault_url
        else:
            self.route(vault_name)
            env["KEYVAULT_NAME"] = vault_name
        return env

    # --- knobs -------------------------------------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds added to every request, vault and token endpoint alike.

        Example::

            kv.latency = 0.02
        """
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self._latency = float(seconds)

    @property
    def token_lifetime(self) -> int:
        """Lifetime in seconds of tokens issued from now on; the vault rejects them afterwards.

        azure-identity treats a token as due for refresh 300 seconds before it expires, so
        lifetimes of 300 or less make the SDK fetch a new token for every request.

        Example::

            kv.token_lifetime = 302  # the SDK refreshes after about 2 seconds
        """
        return self._token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
            raise ValueError("token_lifetime must be a non-negative whole number of seconds")
        self._token_lifetime = seconds

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far, as if each had just expired or been revoked.

        The next request bearing one gets the ``401`` challenge. Note that azure-identity caches
        tokens: on that 401 the SDK asks its credential again, gets the same cached token, and
        surfaces ``ClientAuthenticationError`` (as it does against Azure when a token is rejected
        early), until the cached token enters azure-identity's 5-minute refresh window or a new
        credential is used.

        Example::

            kv.expire_tokens()
        """
        with self._lock:
            self._tokens.clear()

    def inject(self, *faults: Fault) -> None:
        """Queue faults for vault requests; each request that carries a valid token consumes one.

        Example::

            kv.inject(Fault(status=503), Fault(drop=True))
        """
        with self._lock:
            self._faults.extend(faults)

    def inject_token_fault(self, *faults: Fault) -> None:
        """Queue faults for the managed-identity endpoint; each well-formed token request consumes one.

        Example::

            kv.inject_token_fault(Fault(status=500))
        """
        with self._lock:
            self._token_faults.extend(faults)

    def clear_faults(self) -> None:
        """Forget every queued fault, vault and token endpoint alike.

        Example::

            kv.clear_faults()
        """
        with self._lock:
            self._faults.clear()
            self._token_faults.clear()

    # --- request log -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request seen so far, oldest first (a new list on each access).

        Example::

            assert all(r.kind in ("secrets", "token") for r in kv.requests)
        """
        with self._lock:
            return list(self._requests)

    def secret_requests(
        self, name: str | None = None, *, include_challenges: bool = False
    ) -> list[RequestRecord]:
        """Records of secret reads (``GET /secrets/{name}[/{version}]``), optionally for one name.

        ``name`` compares case-insensitively, like the service. By default only requests that
        carried a valid token are returned, so each application read counts once; pass
        ``include_challenges=True`` to include the SDK's unauthenticated challenge round trips.

        Example::

            assert len(kv.secret_requests("signing-secret")) == 1
        """
        wanted = name.lower() if name is not None else None
        return [
            r
            for r in self.requests
            if r.kind == "secrets"
            and r.operation == "get"
            and (include_challenges or r.authenticated)
            and (wanted is None or (r.secret_name or "").lower() == wanted)
        ]

    def token_requests(self) -> list[RequestRecord]:
        """Records of requests to the managed-identity token endpoint.

        Example::

            assert [r.status for r in kv.token_requests()] == [200]
        """
        return [r for r in self.requests if r.kind == "token"]

    def clear_requests(self) -> None:
        """Empty the request log.

        Example::

            kv.clear_requests()
        """
        with self._lock:
            self._requests.clear()

    # --- direct state manipulation (test setup) ----------------------------------------------------

    def set_secret(
        self,
        name: str,
        value: str,
        *,
        enabled: bool = True,
        content_type: str | None = None,
        not_before: dt.datetime | None = None,
        expires_on: dt.datetime | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Add a new version of a secret (creating it if needed) and return its version id.

        Works whether or not the emulator is running. Unlike the REST ``PUT``, it also replaces a
        soft-deleted secret of the same name (the service would answer 409 until it is purged).
        ``not_before`` / ``expires_on`` must be timezone-aware.

        Example::

            tomorrow = datetime.now(UTC) + timedelta(days=1)
            version = kv.set_secret("signing-secret", "s3cr3t", expires_on=tomorrow)
        """
        _validate_name(name)
        if not isinstance(value, str):
            raise TypeError("Secret values are strings")
        if len(value) > MAX_SECRET_VALUE_CHARS:
            raise ValueError(f"Secret values are at most {MAX_SECRET_VALUE_CHARS} characters")
        nbf, exp = _epoch(not_before, "not_before"), _epoch(expires_on, "expires_on")
        with self._lock:
            self._deleted.pop(name.lower(), None)
            return self._add_version(
                name, value, enabled, content_type, nbf, exp, dict(tags) if tags else None
            )

    def delete_secret(self, name: str, *, purge: bool = False) -> None:
        """Soft-delete a secret (every version), or remove it for good with ``purge=True``.

        Raises ``KeyError`` if there is no such secret.

        Example::

            kv.delete_secret("signing-secret")
        """
        key = name.lower()
        with self._lock:
            secret = self._secrets.pop(key, None)
            if secret is None:
                if purge and self._deleted.pop(key, None) is not None:
                    return
                raise KeyError(name)
            if not purge:
                secret.deleted_date = int(time.time())
                self._deleted[key] = secret

    # --- internals used by the handlers ------------------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _apply_latency(self) -> None:
        if self._latency:
            time.sleep(self._latency)

    def _take_fault(self, queue: list[Fault]) -> Fault | None:
        with self._lock:
            return queue.pop(0) if queue else None

    def _add_version(
        self,
        name: str,
        value: str,
        enabled: bool,
        content_type: str | None,
        nbf: int | None,
        exp: int | None,
        tags: dict[str, str] | None,
    ) -> str:
        now = int(time.time())
        version = _Version(uuid.uuid4().hex, value, enabled, content_type, nbf, exp, tags, now, now)
        secret = self._secrets.get(name.lower())
        if secret is None:
            self._secrets[name.lower()] = _Secret(name, [version])
        else:
            secret.versions.append(version)
        return version.version

    def _authenticate(self, authorization: str | None) -> str | None:
        """Return None for a valid bearer token, else the 401 message."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "AKV10000: Request is missing a Bearer or PoP token."
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None:
            return (
                "The access token is not valid: this vault's identity endpoint never issued it or revoked it."
            )
        expires_at, resource = entry
        if time.time() >= expires_at:
            return "The access token has expired."
        if resource.rstrip("/").lower() != VAULT_RESOURCE:
            return f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {resource}."
        return None

    def _challenge(self, message: str) -> _Response:
        header = (
            f'Bearer authorization="https://login.microsoftonline.com/{self._tenant_id}", '
            f'resource="{VAULT_RESOURCE}"'
        )
        return _error(401, "Unauthorized", message, headers=(("WWW-Authenticate", header),))

    def _vault_headers(self) -> tuple[tuple[str, str], ...]:
        return (
            ("Cache-Control", "no-cache"),
            ("Pragma", "no-cache"),
            ("Expires", "-1"),
            ("x-ms-keyvault-region", "local"),
            ("x-ms-request-id", str(uuid.uuid4())),
            ("x-ms-keyvault-service-version", "1.9.0.0"),
            ("x-ms-keyvault-network-info", "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;"),
            ("X-Content-Type-Options", "nosniff"),
            ("Strict-Transport-Security", "max-age=31536000;includeSubDomains"),
        )

    def _fault_response(self, fault: Fault, route: _Route) -> _Response:
        status = cast(int, fault.status)
        headers: tuple[tuple[str, str], ...] = ()
        if fault.retry_after is not None:
            headers = (("Retry-After", _format_seconds(fault.retry_after)),)
        code = fault.code or _DEFAULT_FAULT_CODES.get(status) or HTTPStatus(status).phrase.replace(" ", "")
        if status == 401:
            return self._challenge("The access token is not valid.")
        if status == 403:
            return _error(403, "Forbidden", _RBAC_MESSAGE, inner=code, headers=headers)
        if status == 404 and code == "SecretNotFound":
            return _not_found(route.name or "", route.version)
        if status == 429:
            message = (
                "Request was not processed because too many requests were received. "
                "Reason: VaultRequestTypeLimitReached"
            )
            return _error(429, code, message, headers=headers)
        return _error(status, code, f"{HTTPStatus(status).phrase} (injected fault).", headers=headers)

    def _identity_error(
        self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> _Response:
        return _Response(
            status, {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}, headers
        )

    def _identity_fault_response(self, fault: Fault) -> _Response:
        status = cast(int, fault.status)
        headers: tuple[tuple[str, str], ...] = ()
        if fault.retry_after is not None:
            headers = (("Retry-After", _format_seconds(fault.retry_after)),)
        return self._identity_error(status, f"{HTTPStatus(status).phrase} (injected fault).", headers)

    def _issue_token(self, resource: str) -> _Response:
        token = _random.token_urlsafe(32)
        now = time.time()
        # Whole seconds from a whole-second start, so the client's integer arithmetic on
        # expires_on and the server's view of expiry agree.
        expires_at = int(now) + self._token_lifetime
        with self._lock:
            for stale in [t for t, (exp, _) in self._tokens.items() if exp <= now]:
                del self._tokens[stale]
            self._tokens[token] = (float(expires_at), resource)
        return _Response(
            200,
            {
                "access_token": token,
                # App Service sends expires_on as a string of epoch seconds; MSAL and azure-identity
                # both int() it.
                "expires_on": str(expires_at),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": self._client_id,
            },
        )

    # --- Key Vault REST operations -----------------------------------------------------------------

    def _dispatch(self, route: _Route, query: Mapping[str, list[str]], body: bytes, base: str) -> _Response:
        api_version = _first(query, "api-version")
        if not api_version:
            return _bad_parameter("The api-version query parameter is required.")
        if not _API_VERSION_PATTERN.match(api_version):
            return _bad_parameter(f"The specified version ({api_version}) is not recognized.")
        if route.operation == "unsupported":
            return _error(404, "NotFound", "The Key Vault emulator does not support this operation or path.")
        if route.name is not None and not SECRET_NAME_PATTERN.match(route.name):
            return _bad_parameter(f"The request URI contains an invalid name: {route.name}")
        name = cast(str, route.name)
        with self._lock:
            if route.operation == "list":
                return self._list_secrets(query, base)
            if route.operation == "list_deleted":
                return self._list_deleted(query, base)
            if route.operation == "list_versions":
                return self._list_versions(name, query, base)
            if route.operation == "get":
                return self._get(name, route.version, base)
            if route.operation == "set":
                return self._set(name, body, base)
            if route.operation == "update":
                return self._update(name, route.version, body, base)
            if route.operation == "delete":
                return self._delete(name, base)
            if route.operation == "get_deleted":
                secret = self._deleted.get(name.lower())
                return (
                    _not_found(name) if secret is None else _Response(200, self._deleted_bundle(secret, base))
                )
            if route.operation == "purge":
                if self._deleted.pop(name.lower(), None) is None:
                    return _not_found(name)
                return _Response(204, None)
            return self._recover(name, base)

    def _attributes(self, version: _Version) -> dict[str, Any]:
        attributes: dict[str, Any] = {"enabled": version.enabled}
        if version.not_before is not None:
            attributes["nbf"] = version.not_before
        if version.expires is not None:
            attributes["exp"] = version.expires
        attributes.update(
            created=version.created,
            updated=version.updated,
            recoveryLevel=_RECOVERY_LEVEL,
            recoverableDays=_RECOVERABLE_DAYS,
        )
        return attributes

    def _bundle(
        self, secret: _Secret, version: _Version, base: str, *, value: bool, versioned: bool = True
    ) -> dict[str, Any]:
        bundle: dict[str, Any] = {"value": version.value} if value else {}
        suffix = f"/{version.version}" if versioned else ""
        bundle["id"] = f"{base}/secrets/{secret.name}{suffix}"
        bundle["attributes"] = self._attributes(version)
        if version.content_type is not None:
            bundle["contentType"] = version.content_type
        if version.tags:
            bundle["tags"] = dict(version.tags)
        return bundle

    def _deleted_bundle(self, secret: _Secret, base: str) -> dict[str, Any]:
        deleted = cast(int, secret.deleted_date)
        return {
            "recoveryId": f"{base}/deletedsecrets/{secret.name}",
            "deletedDate": deleted,
            "scheduledPurgeDate": deleted + _RECOVERABLE_DAYS * 86400,
            **self._bundle(secret, secret.latest, base, value=False),
        }

    def _get(self, name: str, version_id: str | None, base: str) -> _Response:
        secret = self._secrets.get(name.lower())
        if secret is None:
            return _not_found(name, version_id)
        version = secret.latest if version_id is None else secret.find(version_id)
        if version is None:
            return _not_found(name, version_id)
        if not version.enabled:
            return _error(
                403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled"
            )
        return _Response(200, self._bundle(secret, version, base, value=True))

    def _parse_properties(
        self, payload: Mapping[str, Any]
    ) -> tuple[bool | None, int | None, int | None, str | None, dict[str, str] | None] | _Response:
        attributes = payload.get("attributes") or {}
        content_type = payload.get("contentType")
        tags = payload.get("tags")
        if not isinstance(attributes, dict):
            return _bad_parameter("attributes must be an object.")
        enabled = attributes.get("enabled")
        nbf, exp = attributes.get("nbf"), attributes.get("exp")
        if enabled is not None and not isinstance(enabled, bool):
            return _bad_parameter("attributes.enabled must be a boolean.")
        for label, stamp in (("nbf", nbf), ("exp", exp)):
            if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int)):
                return _bad_parameter(f"attributes.{label} must be seconds since 1970-01-01T00:00:00Z.")
        if content_type is not None and not isinstance(content_type, str):
            return _bad_parameter("contentType must be a string.")
        if tags is not None and (
            not isinstance(tags, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        ):
            return _bad_parameter("tags must be an object of strings.")
        return enabled, nbf, exp, content_type, tags

    def _set(self, name: str, body: bytes, base: str) -> _Response:
        payload = _json_object(body)
        if payload is None:
            return _bad_parameter("The request body is not a valid JSON object.")
        value = payload.get("value")
        if not isinstance(value, str):
            return _bad_parameter("The value of the secret is required and must be a string.")
        if len(value) > MAX_SECRET_VALUE_CHARS:
            return _bad_parameter(
                f"The secret value exceeds the maximum size of {MAX_SECRET_VALUE_CHARS // 1024} KB."
            )
        parsed = self._parse_properties(payload)
        if isinstance(parsed, _Response):
            return parsed
        enabled, nbf, exp, content_type, tags = parsed
        if name.lower() in self._deleted:
            return _error(
                409,
                "Conflict",
                f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be "
                "reused; in this state, the secret can only be recovered or purged.",
                "ObjectIsDeletedButRecoverable",
            )
        self._add_version(name, value, True if enabled is None else enabled, content_type, nbf, exp, tags)
        secret = self._secrets[name.lower()]
        return _Response(200, self._bundle(secret, secret.latest, base, value=True))

    def _update(self, name: str, version_id: str | None, body: bytes, base: str) -> _Response:
        secret = self._secrets.get(name.lower())
        version = None if secret is None else (secret.latest if not version_id else secret.find(version_id))
        if secret is None or version is None:
            return _not_found(name, version_id)
        payload = _json_object(body)
        if payload is None:
            return _bad_parameter("The request body is not a valid JSON object.")
        parsed = self._parse_properties(payload)
        if isinstance(parsed, _Response):
            return parsed
        enabled, nbf, exp, content_type, tags = parsed
        attributes = payload.get("attributes") or {}
        if enabled is not None:
            version.enabled = enabled
        if "nbf" in attributes:
            version.not_before = nbf
        if "exp" in attributes:
            version.expires = exp
        if "contentType" in payload:
            version.content_type = content_type
        if "tags" in payload:
            version.tags = tags
        version.updated = int(time.time())
        return _Response(200, self._bundle(secret, version, base, value=False))

    def _delete(self, name: str, base: str) -> _Response:
        secret = self._secrets.pop(name.lower(), None)
        if secret is None:
            return _not_found(name)
        secret.deleted_date = int(time.time())
        self._deleted[name.lower()] = secret
        return _Response(200, self._deleted_bundle(secret, base))

    def _recover(self, name: str, base: str) -> _Response:
        secret = self._deleted.pop(name.lower(), None)
        if secret is None:
            return _not_found(name)
        secret.deleted_date = None
        self._secrets[name.lower()] = secret
        return _Response(200, self._bundle(secret, secret.latest, base, value=False))

    def _list_secrets(self, query: Mapping[str, list[str]], base: str) -> _Response:
        entries = [
            (key, self._bundle(s, s.latest, base, value=False, versioned=False))
            for key, s in sorted(self._secrets.items())
        ]
        return _page(entries, query, base, "/secrets")

    def _list_versions(self, name: str, query: Mapping[str, list[str]], base: str) -> _Response:
        secret = self._secrets.get(name.lower())
        versions = sorted(secret.versions, key=lambda v: v.version) if secret is not None else []
        entries = [(v.version, self._bundle(cast(_Secret, secret), v, base, value=False)) for v in versions]
        return _page(entries, query, base, f"/secrets/{quote(name)}/versions")

    def _list_deleted(self, query: Mapping[str, list[str]], base: str) -> _Response:
        entries = [(key, self._deleted_bundle(s, base)) for key, s in sorted(self._deleted.items())]
        for _, item in entries:
            # List items identify the secret, not a version.
            item["id"] = item["id"].rsplit("/", 1)[0]
        return _page(entries, query, base, "/deletedsecrets")


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def _page(
    entries: list[tuple[str, dict[str, Any]]], query: Mapping[str, list[str]], base: str, path: str
) -> _Response:
    raw_max = _first(query, "maxresults")
    size = PAGE_SIZE
    if raw_max is not None:
        try:
            size = int(raw_max)
        except ValueError:
            size = 0
        if not 1 <= size <= PAGE_SIZE:
            return _bad_parameter(f"maxresults must be between 1 and {PAGE_SIZE}.")
    marker = ""
    token = _first(query, "$skiptoken")
    if token:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            marker = str(decoded["NextMarker"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            return _bad_parameter("The $skiptoken is not valid.")
    remaining = [item for key, item in entries if key > marker]
    page = remaining[:size]
    next_link = None
    if len(remaining) > size:
        last_key = next(key for key, item in entries if item is page[-1])
        skip = base64.urlsafe_b64encode(json.dumps({"NextMarker": last_key}).encode()).decode().rstrip("=")
        api_version = quote(_first(query, "api-version") or "")
        next_link = f"{base}{path}?api-version={api_version}&$skiptoken={skip}&maxresults={size}"
    return _Response(200, {"value": page, "nextLink": next_link})
