"""Whole-model SmolLM2-135M pruning, ours vs llm-compressor's functions, in one run (issue #3's anchor).

Issue #5's anchor (sparsegpt 204 s at 50 %, 226 s at 2:4, wanda 128-141 s, 2 cores) was measured in another
session; this machine's speed drifts ~30 % between hours, so a ratio against it says little. This script
measures both sides in the same run, alternating them per row, on the same protocol (64 calibration chunks
of 512 tokens, written once by our side and read by theirs) and the same converted checkpoint:

- theirs: ``benchmarks/llmc_sequential.py`` in the benchmark venv (``--bench-python``, default
  ``.venv-bench/bin/python``): llm-compressor's ``accumulate_hessian`` / ``sparsify_weight`` layer by layer;
- ours: ``benchmarks/bench_smollm2.py`` in this venv (``prune_model``, statistics only for what the method
  reads, as the ``lm`` profile runs it).

Each side runs in its own process (clean peak RSS). Prints a table with our time ÷ theirs, perplexity and peak
RSS, and writes ``benchmarks/results/smollm2_vs_llmc.json``.

    nice -n 19 .venv/bin/python benchmarks/bench_smollm2_vs_llmc.py --methods sparsegpt wanda --patterns 0.5 2:4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # noqa: F401,E402 - paths and the offline environment, as every benchmark
from _common import ROOT  # noqa: E402
from bench_smollm2 import prepare  # noqa: E402

from robustprune.checkpoints import write_json  # noqa: E402
from robustprune.lm import save_protocol  # noqa: E402

TARGET_TIME_RATIO = 0.75  # issue #5: our sparsegpt <= 0.75x llm-compressor's whole-model time


def run_theirs(py: str, hf: Path, proto: Path, method: str, pattern: str, args: argparse.Namespace) -> dict:
    cmd = [py, str(ROOT / "benchmarks" / "llmc_sequential.py"), "--model", str(hf), "--protocol", str(proto)]
    cmd += ["--method", method, "--pattern", pattern, "--calib-batch-size", str(args.calib_batch_size)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(method: str, pattern: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_smollm2.py"), "--skip-dense", "--fresh"]
        cmd += ["--methods", method, "--patterns", pattern, "--out", str(out)]
        cmd += ["--calib-batch-size", str(args.calib_batch_size)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        row = next(iter(json.loads(out.read_text())["runs"].values()))
    row["side"] = "robustprune"
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["sparsegpt", "wanda"], choices=("sparsegpt", "wanda"))
    ap.add_argument("--patterns", nargs="+", default=["0.5", "2:4"])
    ap.add_argument(
        "--calib-batch-size", type=int, default=1, help="calibration chunks per forward, both sides"
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--bench-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "smollm2")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "smollm2_vs_llmc.json")
    args = ap.parse_args(argv)
    if not Path(args.bench_python).is_file():
        raise SystemExit(
            f"--bench-python {args.bench_python} not found: build .venv-bench (benchmarks/README.md)"
        )

    hf, data, protocol = prepare(args.cache, "python")
    proto = save_protocol(args.cache / "protocol_seed0.safetensors", data)
    rows: list[dict[str, Any]] = []
    load = [os.getloadavg()[0]]
    for method in args.methods:
        for pattern in args.patterns:
            theirs = run_theirs(args.bench_python, hf, proto, method, pattern, args)
            print(f"llmcompressor {method}@{pattern}: {theirs['prune_s']} s, ppl {theirs['ppl']}", flush=True)
            ours = run_ours(method, pattern, args)
            print(f"robustprune   {method}@{pattern}: {ours['prune_s']} s, ppl {ours['ppl']}", flush=True)
            rows.append(
                {
                    "method": method,
                    "pattern": pattern,
                    "theirs": theirs,
                    "ours": ours,
                    "time_ratio": round(ours["prune_s"] / theirs["prune_s"], 3),
                    "ppl_ratio": round(ours["ppl"] / theirs["ppl"], 4),
                }
            )
            load.append(os.getloadavg()[0])
    head = f"{'run':16} {'ours s':>8} {'theirs s':>8} {'ratio':>6} {'ppl ours':>9} {'ppl theirs':>10} {'RSS ours':>9} {'RSS theirs':>10}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        o, t = r["ours"], r["theirs"]
        print(
            f"{r['method'] + '@' + r['pattern']:16} {o['prune_s']:8.1f} {t['prune_s']:8.1f} {r['time_ratio']:6.2f} "
            f"{o['ppl']:9.3f} {t['ppl']:10.3f} {o['prune_peak_rss_mb']:9.0f} {t['prune_peak_rss_mb']:10.0f}"
        )
    write_json(
        args.out,
        {
            "benchmark": "SmolLM2-135M whole-model pruning, robustprune vs llm-compressor functions, same run",
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "protocol": protocol,
            "calib_batch_size": args.calib_batch_size,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "loadavg_between_rows": load,
            "target_time_ratio_sparsegpt": TARGET_TIME_RATIO,
            "rows": rows,
        },
    )
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
