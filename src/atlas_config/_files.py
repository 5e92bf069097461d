"""The mounted-files backend: secrets the platform writes into ``ATLAS_SECRETS_DIR``.

One file per allowlisted key, named by its Key Vault name, as the Key Vault
CSI driver (AKS) and Docker secrets (``/run/secrets``) lay them out. The CSI
driver and Kubernetes' AtomicWriter use symlinks::

    signing-secret -> ..data/signing-secret
    ..data         -> ..2026_12_04_10_00_00.123456789/

and rotate by swapping ``..data``. So a path is resolved first, must land
inside the directory, and is then opened without following symlinks and
checked with ``fstat`` against what was resolved. The version id comes from
the file's identity (device, inode, mtime, size), never from its content:
a hash of a secret is something an attacker can test guesses against.

Every refusal is a ``ConfigurationError`` naming the key, the path and the
fix, never the content.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import Final

from ._backends import MAX_SECRET_BYTES, Fetched
from ._errors import ConfigurationError

# O_NOFOLLOW is applied to the already-resolved path, so it only trips if a
# symlink was swapped in after resolving. O_NONBLOCK keeps a FIFO swapped in
# the same way from hanging the open; it changes nothing for regular files.
# Both are missing on Windows, where the checks before and after still hold.
_OPEN_FLAGS: Final = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)

# A rotation can delete the directory a path resolved into between resolving
# and opening; reading again resolves through the new ``..data``.
_ATTEMPTS: Final = 3


class _Moved(Exception):
    """The file changed under us while it was resolved, opened or read: try again."""


class FilesBackend:
    """Reads ``<root>/<key>`` for the allowlisted keys; ``None`` when the key has no file.

    Example::

        backend = FilesBackend(Path("/mnt/secrets"))
        fetched = backend.fetch("signing-secret")  # Fetched(source="file", version="file-…") or None
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def fetch(self, key: str) -> Fetched | None:
        """Read ``key``'s file, or ``None`` if there is none; raise ``ConfigurationError`` on an unsafe one.

        ``key`` must already be allowlisted (the resolver checks), so it is a
        plain file name with no separators.
        """
        root = self._checked_root()
        path = root / key
        for _ in range(_ATTEMPTS):
            try:
                return self._read(key, root, path)
            except _Moved:
                continue
        raise ConfigurationError(
            f"secret {key!r}: {path} is a broken symlink or kept changing while it was read; "
            "check the secrets volume mounted at ATLAS_SECRETS_DIR"
        )

    def _checked_root(self) -> Path:
        """The real path of the directory, if it is one this process may trust and search."""
        where = f"ATLAS_SECRETS_DIR={self.root}"
        try:
            real = Path(os.path.realpath(self.root, strict=True))
            st = os.stat(real)
        except FileNotFoundError:
            raise ConfigurationError(
                f"{where} does not exist; mount the secrets volume there or unset ATLAS_SECRETS_DIR"
            ) from None
        except OSError as exc:
            raise ConfigurationError(
                f"{where} cannot be read ({type(exc).__name__}); let this process read and search it"
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigurationError(f"{where} is not a directory; point it at the mounted secrets directory")
        if st.st_mode & stat.S_IWOTH:
            raise ConfigurationError(
                f"{where} is writable by other users, so anyone could plant a secret there; "
                "remove write access for others (chmod o-w)"
            )
        if not os.access(real, os.X_OK):
            raise ConfigurationError(
                f"{where} cannot be searched by this process; grant it read and execute (r-x) access"
            )
        return real

    def _read(self, key: str, root: Path, path: Path) -> Fetched | None:
        try:
            os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unreadable(key, path, exc) from None
        try:
            real = Path(os.path.realpath(path, strict=True))
        except FileNotFoundError:
            raise _Moved from None  # mid-rotation, or dangling: a fresh resolve tells which
        except OSError as exc:
            raise _unreadable(key, path, exc) from None
        if real == root or not real.is_relative_to(root):
            raise ConfigurationError(
                f"secret {key!r}: {path} resolves outside ATLAS_SECRETS_DIR ({root}); "
                "mount the secret as a file inside that directory"
            )
        _check_dirs(key, real.parent, root)
        try:
            before = os.lstat(real)
        except FileNotFoundError:
            raise _Moved from None
        except OSError as exc:
            raise _unreadable(key, path, exc) from None
        _check_file(key, path, before)
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except FileNotFoundError:
            raise _Moved from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Moved from None  # a symlink was swapped in after resolving
            raise _unreadable(key, path, exc) from None
        try:
            opened = os.fstat(fd)
            if _identity(opened)[:2] != _identity(before)[:2]:
                raise _Moved
            _check_file(key, path, opened)
            data = _read_at_most(fd, MAX_SECRET_BYTES + 1)
            if _identity(os.fstat(fd)) != _identity(opened):
                raise _Moved  # written to while we read: read it again
        finally:
            os.close(fd)
        if len(data) > MAX_SECRET_BYTES:
            raise _too_large(key, path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigurationError(
                f"secret {key!r}: {path} is not UTF-8 text; store the secret as UTF-8"
            ) from None
        return Fetched(_strip_one_newline(text), source="file", version=_version(opened))


def _check_dirs(key: str, directory: Path, root: Path) -> None:
    """Directories between the root and the file (``..<timestamp>``) must not be writable by others."""
    while directory != root:
        try:
            mode = os.stat(directory).st_mode
        except FileNotFoundError:
            raise _Moved from None  # a rotation removed the old ``..<timestamp>`` directory
        except OSError as exc:
            raise _unreadable(key, directory, exc) from None
        if mode & stat.S_IWOTH:
            raise ConfigurationError(
                f"secret {key!r}: {directory} is writable by other users, so anyone could swap the secret; "
                "remove write access for others (chmod o-w)"
            )
        directory = directory.parent


def _check_file(key: str, path: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ConfigurationError(f"secret {key!r}: {path} is a directory; mount the secret as a file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigurationError(f"secret {key!r}: {path} is not a regular file; mount the secret as a file")
    if st.st_mode & stat.S_IWOTH:
        raise ConfigurationError(
            f"secret {key!r}: {path} is writable by other users; remove write access for others (chmod o-w)"
        )
    if st.st_size > MAX_SECRET_BYTES:
        raise _too_large(key, path)


def _too_large(key: str, path: Path) -> ConfigurationError:
    return ConfigurationError(
        f"secret {key!r}: {path} is larger than {MAX_SECRET_BYTES} bytes (Key Vault's limit for a secret); "
        "check that the right file is mounted"
    )


def _unreadable(key: str, path: Path, exc: OSError) -> ConfigurationError:
    return ConfigurationError(
        f"secret {key!r}: {path} cannot be read ({type(exc).__name__}); "
        "let this process read the mounted secret"
    )


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes: a file that grows after ``fstat`` still cannot make us read more."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _strip_one_newline(text: str) -> str:
    """Drop the one newline ``echo`` or an editor adds; anything else may be part of the secret."""
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _version(st: os.stat_result) -> str:
    """A short, opaque id that changes when the file is replaced (new inode) or rewritten."""
    identity = ":".join(str(part) for part in _identity(st))
    return "file-" + hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()
