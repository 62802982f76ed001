"""Run every benchmark, print the table and write ``docs/performance.md`` (``make bench``).

    python bench/run.py            # the full run (about 4-5 minutes on 2 cores)
    python bench/run.py --quick    # fewer samples (about 1.5 minutes), same figures

Benchmarks are scripts, never tests. The simulator and the fault benchmarks run in this
process; every client of the hot-path figures runs in its own worker process.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import sys
import time
from typing import Callable, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT, machine  # noqa: E402
from overhead import FULL, QUICK, run_overhead  # noqa: E402
from recovery import run_recovery  # noqa: E402
from report import render, write_png  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples; the same figures")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "performance.md"), help="Markdown output")
    parser.add_argument("--png", default=os.path.join(ROOT, "docs", "recovery-timeline.png"),
                        help="recovery timeline plot (written when matplotlib is installed)")
    parser.add_argument("--skip-recovery", action="store_true", help="hot-path figures only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")

    t_start = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    command = "make bench" if os.environ.get("IB_BENCH_VIA_MAKE") else "python bench/run.py"
    if args.quick:
        command += " --quick" if command.startswith("python") else " BENCH_ARGS=--quick"
    facts = machine()
    facts["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts["command"] = command
    log(f"machine: {facts}")

    figures = run_overhead(QUICK if args.quick else FULL, log)
    recovery = timeline = None
    if not args.skip_recovery:
        recovery, timeline = run_recovery(args.quick, log)

    png_written: Optional[str] = None
    if timeline is not None:
        png_written = write_png(timeline, args.png, log)
    facts["duration"] = f"{time.monotonic() - t_start:.0f} s"
    text = render(facts, figures, recovery, png_written, os.path.dirname(args.out))
    print(text)
    _write(args.out, text, log)
    return 0


def _write(path: str, text: str, log: Callable[[str], None]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    log(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
