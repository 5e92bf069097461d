"""Run the Key Vault emulator as a standalone process for local development.

Example (shell)::

    $ python -m atlas_config.testing --secrets-file .env.secrets
    # Key Vault emulator serving https://localhost:50123 ...
    export IDENTITY_ENDPOINT=http://127.0.0.1:50124/msi/token
    ...

Paste the ``export`` lines into another shell and run the application there.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ._emulator import SECRET_NAME_PATTERN, KeyVaultEmulator

__all__ = ["SecretsFileError", "load_secrets_file", "serve"]


class SecretsFileError(ValueError):
    """A secrets file could not be read or has a malformed line. The message never quotes the line.

    Example::

        try:
            load_secrets_file(".env")
        except SecretsFileError as exc:
            print(exc)  # ".env:3: malformed line (expected KEY=VALUE)"
    """


def load_secrets_file(path: str | Path) -> dict[str, str]:
    """Read a ``.env``-style file into Key Vault secret names and values.

    ``KEY=VALUE`` lines (``export`` prefixes, quotes and comments as python-dotenv understands
    them); blank and comment lines are skipped. Env-style names map to Key Vault names by
    lowercasing and turning ``_`` into ``-`` (``SIGNING_SECRET`` -> ``signing-secret``). A malformed
    line raises :class:`SecretsFileError` naming the file and line number but never its content,
    since the content is a secret.

    Example::

        load_secrets_file(".env")  # {"signing-secret": "..."}
    """
    from dotenv.parser import parse_stream  # lazily: only the standalone runner needs python-dotenv

    secrets: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as stream:
            for binding in parse_stream(stream):
                # python-dotenv attaches preceding blank lines to a binding and numbers it from the
                # first of them; count them off so the reported line is the offending one.
                text = binding.original.string
                blank_prefix = text[: len(text) - len(text.lstrip(" \t\r\n"))]
                line = binding.original.line + blank_prefix.count("\n")
                if binding.error:
                    raise SecretsFileError(f"{path}:{line}: malformed line (expected KEY=VALUE)")
                if binding.key is None:
                    continue  # blank line or comment
                if binding.value is None:
                    raise SecretsFileError(f"{path}:{line}: a name without '=VALUE'")
                name = binding.key.lower().replace("_", "-")
                if not SECRET_NAME_PATTERN.match(name):
                    raise SecretsFileError(
                        f"{path}:{line}: the name does not map to a Key Vault secret name "
                        "(letters, digits, '-' and '_' only; at most 127 characters)"
                    )
                if len(binding.value) > 25 * 1024:
                    raise SecretsFileError(f"{path}:{line}: the value is longer than Key Vault's 25 KB limit")
                secrets[name] = binding.value
    except UnicodeDecodeError as exc:
        raise SecretsFileError(f"{path}: not UTF-8 text") from exc
    except OSError as exc:
        raise SecretsFileError(f"cannot read {path}: {exc.strerror}") from exc
    return secrets


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m atlas_config.testing",
        description=(
            "Serve a local Azure Key Vault emulator (plus its managed-identity token endpoint) and print "
            "the environment variables that point an application at it."
        ),
    )
    parser.add_argument("--secrets-file", type=Path, help=".env-style KEY=VALUE file of secrets to load")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="vault HTTPS port (default: any free port)")
    parser.add_argument(
        "--token-port", type=int, default=0, help="token endpoint port (default: any free port)"
    )
    return parser


def serve(argv: list[str] | None = None, *, prog: str | None = None, out: TextIO | None = None) -> int:
    """Run the emulator until Ctrl-C or SIGTERM; return the process exit status.

    Loads ``--secrets-file`` (see :func:`load_secrets_file`), prints ``export`` lines for
    :meth:`KeyVaultEmulator.environ` and the names (never the values) of the loaded secrets, then
    serves. ``prog`` names the command in ``--help`` (e.g. ``"atlas-config emulator"``).

    Example::

        raise SystemExit(serve(["--secrets-file", ".env", "--port", "8443"]))
    """
    args = _parser(prog).parse_args(argv)
    out = out or sys.stdout
    try:
        secrets = load_secrets_file(args.secrets_file) if args.secrets_file is not None else {}
    except SecretsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    emulator = KeyVaultEmulator(host=args.host, port=args.port, token_port=args.token_port)
    try:
        emulator.start()
    except OSError as exc:
        print(f"error: cannot start the emulator: {exc.strerror or exc}", file=sys.stderr)
        return 1

    stop = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler: Any = None
    try:
        if in_main_thread:

            def _on_sigterm(signum: int, frame: FrameType | None) -> None:
                stop.set()

            # SIGTERM (from a process manager, or a test) stops as cleanly as Ctrl-C.
            previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
        for name, value in secrets.items():
            emulator.set_secret(name, value)
        print(f"# Key Vault emulator serving {emulator.vault_url}", file=out)
        if args.secrets_file is not None:
            names = ", ".join(sorted(secrets)) or "none"
            print(
                f"# Loaded {len(secrets)} secret(s) from {args.secrets_file} (values not shown): {names}",
                file=out,
            )
        # SSL_CERT_FILE replaces the system CA bundle for whatever reads it, so say where they belong.
        print("# Export these only in the shell that runs the application:", file=out)
        for key, value in emulator.environ().items():
            print(f"export {key}={shlex.quote(value)}", file=out)
        print("# Press Ctrl-C to stop.", file=out, flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        if in_main_thread:
            signal.signal(
                signal.SIGTERM, previous_handler if previous_handler is not None else signal.SIG_DFL
            )
    return 0
