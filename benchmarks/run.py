"""Run every benchmark in this folder (``make bench``), one process each.

    python -m benchmarks.run              # all of them
    python -m benchmarks.run produce      # those whose file name contains "produce"

Each ``bench_*.py`` measures driftline against a baseline in the same run and
prints its figures; copy them with the command and machine into RESULTS.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    wanted = argv[0] if argv else ""
    failed = 0
    for bench in sorted(here.glob("bench_*.py")):
        if wanted not in bench.stem:
            continue
        print(f"== {bench.stem}", flush=True)
        failed += subprocess.run([sys.executable, "-m", f"benchmarks.{bench.stem}"], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
