"""Run every benchmark in turn and rewrite RESULTS.md (about an hour on two cores).

Each script prints one line per figure and rewrites its own section of ``RESULTS.md``; this
runner only calls them one after the other (never at once: they time things) with their default
settings, and stops at the first failure.

    python studies/benchmarks/run_all.py [--skip speedups overhead ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["speedups", "overhead", "calibration_reuse", "search_quality", "workers", "truth", "peers"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", nargs="*", default=[], choices=SCRIPTS)
    args = parser.parse_args()
    for name in SCRIPTS:
        if name in args.skip:
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / f"{name}.py")], check=True)
        print(f"== {name} done in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"results: {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
