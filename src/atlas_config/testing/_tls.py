"""Throwaway certificate authority for the Key Vault emulator.

The Azure SDK refuses to send bearer tokens over plain HTTP, so the emulator must speak TLS, and the
client must trust whoever signed its certificate. One CA is created per process, lazily, and its PEM
is written to a temporary file that is removed when the process exits. Sharing one CA matters:
aiohttp builds its default SSL context once, at import time, from ``SSL_CERT_FILE``, so a second CA
created later in the same process would never be trusted by it.

Example::

    from atlas_config.testing._tls import ca_bundle_path, server_ssl_context

    context = server_ssl_context()  # certificate for localhost, 127.0.0.1 and *.vault.azure.net
    print(ca_bundle_path())  # PEM file to hand to REQUESTS_CA_BUNDLE / SSL_CERT_FILE
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_HOSTS", "ca_bundle_path", "server_ssl_context"]

#: Names every emulator certificate covers. ``*.vault.azure.net`` lets a process route a production
#: vault host name (``<name>.vault.azure.net``) to the emulator with hostname verification still on.
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "*.vault.azure.net")

_INSTALL_HINT = "pip install 'atlas-config[testing]'"

_lock = threading.Lock()
_ca: Any = None
_ca_path: Path | None = None
_contexts: dict[tuple[str, ...], ssl.SSLContext] = {}


def _import_trustme() -> Any:
    try:
        # Imported here so the library itself never requires the testing extra.
        import trustme
    except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
        raise ImportError(
            f"The Key Vault emulator needs the 'trustme' package for its TLS certificates: {_INSTALL_HINT}"
        ) from exc
    return trustme


def _ensure_ca() -> tuple[Any, Path]:
    global _ca, _ca_path
    with _lock:
        if _ca is None or _ca_path is None:
            trustme = _import_trustme()
            ca = trustme.CA(organization_name="atlas-config Key Vault emulator")
            directory = Path(tempfile.mkdtemp(prefix="atlas-config-kv-"))
            # The directory outlives every emulator in the process because child processes started
            # with emulator.environ() may still be reading the bundle after an emulator stops.
            atexit.register(shutil.rmtree, directory, True)
            path = directory / "ca.pem"
            ca.cert_pem.write_to_path(str(path))
            _ca, _ca_path = ca, path
        return _ca, _ca_path


def ca_bundle_path() -> str:
    """Return the path of the PEM file holding the process-wide emulator CA certificate.

    The CA is created on first use. Every emulator in the process signs its certificate with it, so
    the path is the same for all of them.

    Example::

        os.environ["SSL_CERT_FILE"] = ca_bundle_path()
    """
    return str(_ensure_ca()[1])


def server_ssl_context(extra_hosts: tuple[str, ...] = ()) -> ssl.SSLContext:
    """Return a server-side SSL context whose certificate covers ``DEFAULT_HOSTS`` plus ``extra_hosts``.

    Contexts are cached per host set because issuing a certificate costs a key generation.

    Example::

        context = server_ssl_context(("my-laptop.local",))
    """
    hosts = tuple(dict.fromkeys((*DEFAULT_HOSTS, *extra_hosts)))
    ca, _ = _ensure_ca()
    with _lock:
        context = _contexts.get(hosts)
        if context is None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            ca.issue_cert(*hosts).configure_cert(context)
            _contexts[hosts] = context
        return context
