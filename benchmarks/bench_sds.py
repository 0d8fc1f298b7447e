"""SDS (sparse-dense-sparse) on SmolLM2-135M: one-shot prune, re-activate, re-prune, adjust; perplexity.

Same model, protocol and evaluation as ``bench_smollm2.py`` (whose ``prepare`` converts the GGUF checkpoint
once and builds the 2012-speeches protocol): for every ``--methods`` x ``--patterns`` a fresh copy of the
dense model is pruned with ``prune_model`` (step 1; cached in ``.cache/sds/first`` so that SDS settings can
be compared on the same first prune), re-activated against the dense model with
:func:`robustprune.sds.reactivate_model` (step 2), pruned again with the same method and pattern (step 3)
and, with ``--adjust-steps``, adjusted with the mask fixed (:func:`robustprune.sds.adjust_model`).
Perplexity is measured after each step (``--eval-stages``), with the wall time of each step and the peak
RSS of the whole track (sampled in a thread; plus the process's ``ru_maxrss``). ``--control-adjust`` also
measures the first prune + adjustment alone (no re-activation), to separate the two effects.

Cheap proxy for tuning: ``--calib-chunks 16 --eval-windows 8`` (rows get a ``/calibN`` and ``/evalW`` suffix).

    nice -n 19 .venv/bin/python benchmarks/bench_sds.py --methods sparsegpt wanda --patterns 2:4 0.5 \
        --l1 0.3 --steps 60

Rows are merged into ``benchmarks/results/sds_smollm2.json`` (written atomically after every row).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # noqa: F401,E402 - paths and the offline environment, as every benchmark
import torch
from _common import ROOT  # noqa: E402
from bench_smollm2 import PeakRSS, prepare  # noqa: E402

from robustprune.checkpoints import load_masks, load_tensors, read_json, save_masks, save_tensors, write_json  # noqa: E402
from robustprune.config import SdsConfig  # noqa: E402
from robustprune.lm import load_causal_lm, perplexity  # noqa: E402
from robustprune.modeling import measured_sparsity, prunable_linears  # noqa: E402
from robustprune.options import sds_options  # noqa: E402
from robustprune.pruning import METHODS, parse_pattern  # noqa: E402
from robustprune.pruning.sequential import PruneOptions, prune_model  # noqa: E402
from robustprune.sds import SDSOptions, adjust_model, reactivate_model  # noqa: E402

BASELINES = {  # benchmarks/results/smollm2.json, 64 calibration chunks, all 32 windows
    "sparsegpt@2:4": 49.534,
    "wanda@2:4": 112.802,
    "sparsegpt@0.5": 31.069,
    "wanda@0.5": 38.743,
}
TARGETS = {"sparsegpt@2:4": 44.6, "wanda@2:4": 100.0}
RSS_TARGET_MB = 2560.0
#: the command-line options that are keys of params.yaml's ``sds:`` (all but which models; ``--adjust-steps``
#: sets ``final_adjust_steps``)
SDS_KEYS = tuple(key for key in SdsConfig.model_fields if key not in ("methods", "sparsities"))


def _sds_options(args: argparse.Namespace) -> SDSOptions:
    """The solver options the command line sets, validated as an ``sds:`` section of params.yaml is."""
    return sds_options(SdsConfig(**{key: getattr(args, key) for key in SDS_KEYS}))


def _tag(opts: SDSOptions) -> str:
    reg = "" if opts.regularizer == "l1" else f",group{opts.group_size}"
    lr = "" if opts.lr == 1.0 else f",lr{opts.lr:g}"
    alr = "" if opts.adjust_lr == 1.0 else f",alr{opts.adjust_lr:g}"
    return (
        f"sds[l1={opts.l1:g}{reg},steps={opts.steps}{lr},{opts.optimizer},init={opts.init},"
        f"adj={opts.final_adjust_steps}{alr}]"
    )


def _eval(model: torch.nn.Module, eval_ids: torch.Tensor) -> float:
    return round(perplexity(model, eval_ids, window=512, batch_size=4).ppl, 3)


def _first_prune(
    dense: torch.nn.Module, data: Any, method: str, pattern: str, args: argparse.Namespace
) -> tuple[torch.nn.Module, dict[str, torch.Tensor], float | None]:
    """The step-1 model and masks, from the cache when present (its prune time is then the cached one)."""
    cache = args.cache / "first" / f"{method}_{pattern.replace(':', '-')}_calib{args.calib_chunks}"
    model = copy.deepcopy(dense)
    linears = prunable_linears(model)
    if (cache / "weights.safetensors").is_file() and not args.no_cache:
        weights = load_tensors(cache / "weights.safetensors")
        for name, lin in linears.items():
            lin.weight.data.copy_(weights[name])
        meta = read_json(cache / "meta.json")
        return model, load_masks(cache / "masks.safetensors"), meta.get("prune_s")
    opts = PruneOptions(method=method, pattern=parse_pattern(pattern), track_dense=False)
    t0 = time.perf_counter()
    outcome = prune_model(model, data.calib_batches, opts, progress=args.progress)
    seconds = round(time.perf_counter() - t0, 1)
    save_tensors(cache / "weights.safetensors", {n: lin.weight for n, lin in linears.items()})
    save_masks(cache / "masks.safetensors", outcome.masks)
    write_json(cache / "meta.json", {"prune_s": seconds})
    return model, outcome.masks, seconds


def _layer_errors(reports: list) -> dict[str, float]:
    """Mean relative error against the dense outputs over all Linears, before and after the fit."""
    fits = [f for r in reports for f in r.layers]
    return {
        "before": round(sum(f.error_before for f in fits) / len(fits), 5),
        "after": round(sum(f.error_after for f in fits) / len(fits), 5),
        "zero_share": round(sum(f.zero_share for f in fits) / len(fits), 4),
        "fit_s": round(sum(f.seconds for f in fits), 1),  # the optimisation itself; the rest is statistics
    }


def run_track(dense: torch.nn.Module, data: Any, method: str, pattern: str, args: argparse.Namespace) -> dict:
    """One row: first prune, SDS steps 2-3, perplexity after each step, times and peak RSS."""
    opts = _sds_options(args)
    prune = PruneOptions(method=method, pattern=parse_pattern(pattern), track_dense=False)
    eval_ids = data.eval_ids[:, : args.eval_windows * 512]
    stages = set(args.eval_stages)
    row: dict[str, Any] = {"method": method, "pattern": pattern, "calib_chunks": args.calib_chunks}
    row["eval_windows"], row["options"] = args.eval_windows, opts.__dict__
    ppl: dict[str, float] = {}
    times: dict[str, float | None] = {}
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        model, masks, cached_s = _first_prune(dense, data, method, pattern, args)
        times["prune"] = cached_s if cached_s is not None else round(time.perf_counter() - t0, 1)
        if "first" in stages:
            ppl["first"] = _eval(model, eval_ids)
        if args.control_adjust and opts.final_adjust_steps:
            control = copy.deepcopy(model)
            adjust_model(control, dense, data.calib_batches, masks, opts)
            ppl["first+adjust"] = _eval(control, eval_ids)
            del control
        t0 = time.perf_counter()
        react = reactivate_model(model, dense, data.calib_batches, masks, opts, progress=args.progress)
        times["reactivate"] = round(time.perf_counter() - t0, 1)
        row["reactivated_share"] = round(
            sum(f.reactivated for r in react for f in r.layers) / sum(len(r.layers) for r in react), 4
        )
        row["redense_last_block_error"] = react[-1].output_error
        row["redense_layer_error"] = _layer_errors(react)
        if "redense" in stages:
            ppl["redense"] = _eval(model, eval_ids)
        t0 = time.perf_counter()
        second = prune_model(model, data.calib_batches, prune, progress=args.progress)
        times["reprune"] = round(time.perf_counter() - t0, 1)
        changed = sum(int((second.masks[k] != masks[k]).sum()) for k in masks)
        row["mask_changed_share"] = round(changed / sum(m.numel() for m in masks.values()), 4)
        if "reprune" in stages or not opts.final_adjust_steps:
            ppl["reprune"] = _eval(model, eval_ids)
        if opts.final_adjust_steps:
            t0 = time.perf_counter()
            adj = adjust_model(model, dense, data.calib_batches, second.masks, opts, progress=args.progress)
            times["adjust"] = round(time.perf_counter() - t0, 1)
            row["adjust_last_block_error"] = adj[-1].output_error
            row["adjust_layer_error"] = _layer_errors(adj)
            ppl["adjust"] = _eval(model, eval_ids)
        row["sparsity"] = round(measured_sparsity(model), 4)
    row.update(ppl=ppl, seconds=times, track_peak_rss_mb=round(rss.peak_mb, 1))
    row["ppl_final"] = ppl["adjust"] if opts.final_adjust_steps else ppl["reprune"]
    del model
    gc.collect()
    return row


def _key(row: dict[str, Any], opts: SDSOptions) -> str:
    key = f"{row['method']}@{row['pattern']}/{_tag(opts)}"
    if row["calib_chunks"] != 64:
        key += f"/calib{row['calib_chunks']}"
    if row["eval_windows"] != 32:
        key += f"/eval{row['eval_windows']}"
    return key


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["sparsegpt"], choices=METHODS)
    ap.add_argument("--patterns", nargs="+", default=["2:4"])
    ap.add_argument("--l1", type=float, default=0.3)
    ap.add_argument("--regularizer", choices=("l1", "group"), default="l1")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--optimizer", choices=("ista", "fista", "adam"), default="fista")
    ap.add_argument("--init", choices=("pruned", "dense"), default="pruned")
    ap.add_argument("--adjust-steps", dest="final_adjust_steps", type=int, default=0)
    ap.add_argument("--adjust-lr", type=float, default=1.0)
    ap.add_argument("--calib-chunks", type=int, default=64)
    ap.add_argument("--eval-windows", type=int, default=32, help="512-token windows evaluated (protocol: 32)")
    ap.add_argument(
        "--eval-stages", nargs="*", default=["first", "reprune"], choices=("first", "redense", "reprune")
    )
    ap.add_argument("--control-adjust", action="store_true", help="also: first prune + adjust, no SDS")
    ap.add_argument("--no-cache", action="store_true", help="re-run the first prune even when cached")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "sds")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sds_smollm2.json")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = _sds_options(args)

    with PeakRSS() as total_rss:
        hf_dir, data, protocol = prepare(ROOT / ".cache" / "smollm2", "python", args.calib_chunks)
        dense = load_causal_lm(hf_dir)
        for method in args.methods:
            for pattern in args.patterns:
                row = run_track(dense, data, method, pattern, args)
                row["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                key = _key(row, opts)
                base = BASELINES.get(f"{method}@{pattern}")
                print(
                    f"{key}: ppl {row['ppl']} (baseline {base}), seconds {row['seconds']}, "
                    f"peak RSS {row['track_peak_rss_mb']:.0f} MB, mask changed {row['mask_changed_share']}",
                    flush=True,
                )
                previous = read_json(args.out) if args.out.is_file() else {}
                rows = dict(previous.get("runs", {}))
                rows[key] = row
                write_json(
                    args.out,
                    {
                        "model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to float32)",
                        "protocol": {**protocol, "calib_chunks": 64},
                        "baselines": BASELINES,
                        "targets": TARGETS,
                        "rss_target_mb": RSS_TARGET_MB,
                        "environment": {
                            "torch": torch.__version__,
                            "threads": torch.get_num_threads(),
                            "cpus": os.cpu_count(),
                            "machine": platform.machine(),
                            "python": platform.python_version(),
                        },
                        "runs": dict(sorted(rows.items())),
                    },
                )
    print(
        f"whole run peak RSS {total_rss.peak_mb:.0f} MB; ru_maxrss "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
