"""``python -m benchmarks``: run every benchmark, print each figure with its target, write the docs.

Options: ``--quick`` (fewer repeats, a smoke run) and ``--no-write`` (print only).
Exit status 0 whatever the verdicts: a MISS is a finding to read, not a crash.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from . import Figure, _concurrency, _fleet, _hot_path, _imports, _report, _startup

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats: a smoke run")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(argv)
    # The Azure SDK and stamina warn through stdlib logging; nothing here fails on purpose.
    logging.getLogger("azure").setLevel(logging.ERROR)
    started = time.monotonic()
    figures: list[Figure] = []

    def show(label: str, found: list[Figure]) -> None:
        print(f"-- {label}", flush=True)
        for figure in found:
            print(_report.console_line(figure), flush=True)
        figures.extend(found)

    # An empty working directory: no .env of the repository is read.
    with tempfile.TemporaryDirectory() as workdir:
        here = os.getcwd()
        os.chdir(workdir)
        try:
            found, hot = _hot_path.run(quick=args.quick)
            show("hot path", found)
            found, points = _startup.run(quick=args.quick)
            show("start-up", found)
            found, imports = _imports.run(quick=args.quick)
            show("import", found)
            found, _ = _concurrency.run(quick=args.quick)
            show("concurrency", found)
            found, fleet = _fleet.run(quick=args.quick)
            show("fleet", found)
        finally:
            os.chdir(here)
    misses = [f for f in figures if f.passed is False]
    print(f"-- {len(figures)} figures, {len(misses)} MISS, {time.monotonic() - started:.0f} s")
    if not args.no_write:
        _report.chart(points, DOCS / "startup.png")
        (DOCS / "performance.md").write_text(
            _report.page(figures, points, imports, fleet, hot), encoding="utf-8"
        )
        print(f"wrote {DOCS / 'performance.md'} and {DOCS / 'startup.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
