"""A CI gate: run ``atlas-config check --json`` and fail the step unless every secret resolves.

Run it in a deployment pipeline, with the deployment's identity and settings::

    ATLAS_ENV=production KEYVAULT_NAME=kv-myapp python examples/ci_check.py --require-production

or locally against the emulator (after pasting ``atlas-config emulator``'s export lines)::

    python examples/ci_check.py

It prints one line per secret (GitHub Actions ``::error``/``::warning`` annotations for problems;
other CI systems show them as plain lines) and exits with check's own code: 0 all resolved,
1 a secret is not resolvable, 2 a configuration or production-guard error. ``--require-production``
also fails (1) when the check ran outside production, so a pipeline cannot pass on ``.env`` values.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from typing import Any

#: The ``check --json`` document version this script understands.
SCHEMA_VERSION = 1


def check_command() -> list[str]:
    """The console script if it is on PATH, else the same CLI through this interpreter."""
    script = shutil.which("atlas-config")
    return [script] if script else [sys.executable, "-m", "atlas_config._cli"]


def run_check(env_file: str | None) -> tuple[int, dict[str, Any] | None, str]:
    command = [*check_command(), "check", "--json"]
    if env_file:
        command += ["--env-file", env_file]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        return result.returncode, json.loads(result.stdout), result.stderr
    except json.JSONDecodeError:
        return result.returncode, None, result.stderr


def report(doc: dict[str, Any], *, require_production: bool) -> int:
    if doc.get("schema_version") != SCHEMA_VERSION:
        print(f"::error title=atlas-config::unsupported check schema {doc.get('schema_version')!r}")
        return 2
    if doc["error"] is not None:
        print(f"::error title=atlas-config {doc['error']['type']}::{doc['error']['message']}")
    env = doc["environment"] or {}
    if env:
        mode = "production" if env["production"] else "development"
        print(f"atlas-config: {mode}, vault {env['vault_url']}, credential {env['credential']}")
    for secret in doc["secrets"]:
        if secret["status"] == "ok":
            print(f"ok      {secret['key']} from {secret['source']} ({secret['duration_ms']:.0f} ms)")
        else:
            print(f"::error title=secret {secret['key']}::{secret['error']}: {secret['reason']}")
        for warning in secret["warnings"]:
            print(f"::warning title=secret {secret['key']}::{warning}")
    code: int = doc["exit_code"]
    if code == 0 and require_production and not env.get("production"):
        print("::error title=atlas-config::the check ran outside production; set ATLAS_ENV=production")
        return 1
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gate a CI step on `atlas-config check --json`.")
    parser.add_argument("--env-file", help="passed on to `atlas-config check --env-file`")
    parser.add_argument("--require-production", action="store_true", help="fail unless production is on")
    args = parser.parse_args(argv)
    code, doc, stderr = run_check(args.env_file)
    if doc is None:
        print(f"::error title=atlas-config::check printed no JSON (exit {code}): {stderr.strip()}")
        return code or 2
    return report(doc, require_production=args.require_production)


if __name__ == "__main__":
    sys.exit(main())
