"""What the benchmark scripts share: the repository root on ``sys.path``, offline settings, thread count,
timing, and the provenance every results file records (command, date, commit, machine, load).

Import it first in a benchmark (``import _common``, the scripts' folder is on ``sys.path`` when run as
``python benchmarks/x.py``); it puts ``src/`` and the repository root on the path and sets the offline
environment before torch or transformers are imported.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
for _p in (ROOT / "src", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
from plumbing.environment import set_defaults  # noqa: E402 - after the paths above
from robustprune.layout import Layout  # noqa: E402

set_defaults(ROOT)
RESOURCES = Layout(
    ROOT
).resources  # the unpacked offline resources: $ROBUSTPRUNE_RESOURCES, else .cache/resources


def set_threads(n: int) -> int:
    """``torch.set_num_threads(n)`` when ``n`` > 0; returns the count in effect."""
    import torch

    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def parse_run(
    ap: argparse.ArgumentParser, out: Path, argv: list[str] | None = None, *, threads: int = 2
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """``ap`` with ``--threads`` (default ``threads``) and ``--out`` (default ``out``) added, parsed; the torch
    threads set, then the :func:`provenance` (which records them). Returns the arguments and the provenance."""
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--out", default=str(out))
    args = ap.parse_args(argv)
    set_threads(args.threads)
    return args, provenance(argv)


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """``with timed() as t: ...`` then ``t["seconds"]`` (wall clock)."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - t0


def git_commit() -> str | None:
    """The checkout's HEAD (with ``+dirty`` when tracked files differ from it), or None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT, capture_output=True).returncode
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line, date, commit, machine and load average: the header of every results file."""
    import torch

    args = sys.argv[1:] if argv is None else argv
    script = Path(sys.argv[0]).resolve()
    rel = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "command": shlex.join([".venv/bin/python", str(rel), *args]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loadavg_start": [round(x, 2) for x in load],
    }


def write_results(path: Path, report: dict[str, Any]) -> int:
    """Write a benchmark's results file (indented JSON), say where, and return the exit status 0."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def print_markdown(results: Path | None, render: Callable[[dict[str, Any]], str]) -> bool:
    """``--markdown RESULTS``: print ``render`` of that results file; whether there was one to print."""
    import json

    if results is None:
        return False
    print(render(json.loads(results.read_text())), end="")
    return True
