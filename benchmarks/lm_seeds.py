"""The `lm` profile's whole table over several calibration seeds, on any device (CPU or a CUDA host).

The same options as ``python -m flows.lm`` (read from ``--params`` and validated; built by
:mod:`robustprune.options`), the same protocol (:func:`robustprune.lm.perplexity_protocol` per
calibration seed), the same library calls, but no Prefect / MLflow / DVC: a plain script that a CUDA
host with only torch + transformers can run. For every seed and ``lm.methods`` x ``lm.sparsities``:
prune a fresh dense copy, measure perplexity; for ``lm.sds`` combinations reactivate (SDS step 2) and
re-prune (step 3), measuring each. Rows are merged into ``--out`` after every stage (atomic writes; a
rerun skips the rows already there, so a run can be split across calls). Prints the table: perplexity
mean [min-max] over the seeds per method x pattern x stage, and the seconds per stage.

    python benchmarks/lm_seeds.py --seeds 0 1 2 --device cuda --model smollm2.gguf
    python benchmarks/lm_seeds.py --seeds 0 --only-protocols --protocols .gpu/protocols   # tokens only
    python benchmarks/lm_seeds.py --seeds 0 --device cpu --cpu-baseline sparsegpt@2:4      # GPU/CPU ratio

``--cpu-baseline M@P`` also prunes M at P on the CPU of the same machine (once, seed 0), so the table
gives the GPU's speed as a ratio against the CPU in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # noqa: F401,E402 - paths and the offline environment, as every benchmark
import torch
from _common import RESOURCES, ROOT  # noqa: E402

from robustprune.checkpoints import read_json, write_json  # noqa: E402
from robustprune.config import Params, load_params  # noqa: E402
from robustprune.lm import convert_gguf, load_causal_lm, load_protocol, perplexity, protocol_file  # noqa: E402
from robustprune.modeling import measured_sparsity, resolve_device  # noqa: E402
from robustprune.options import prune_options, sds_options  # noqa: E402
from robustprune.pruning.sequential import prune_model  # noqa: E402
from robustprune.sds import adjust_model, reactivate_model  # noqa: E402

STAGES = ("one-shot", "reactivated", "sds")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(
    on: torch.device, fn: Callable[..., Any], *args: Any, **kw: Any
) -> tuple[Any, float, float | None]:
    """Run ``fn(*args, **kw)``; return its result, wall seconds and (CUDA) the peak GPU memory in MiB."""
    if on.type == "cuda":
        torch.cuda.reset_peak_memory_stats(on)
    _sync(on)
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    _sync(on)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(on) / 2**20 if on.type == "cuda" else None
    return out, seconds, peak


def model_dir(spec: str, work: Path) -> str:
    """A HF directory or hub name; a ``.gguf`` file is converted once into ``work/hf``."""
    if not spec.endswith(".gguf"):
        return spec
    out = work / "hf"
    if not (out / "model.safetensors").is_file():
        t0 = time.perf_counter()
        convert_gguf(Path(spec), out)
        print(f"converted {spec} -> {out} in {time.perf_counter() - t0:.1f} s", flush=True)
    return str(out)


def protocol(params: Params, model: str, seed: int, directory: Path) -> tuple[torch.Tensor, list[dict]]:
    """Evaluation ids and calibration batches for one calibration seed (built once per settings, then read back)."""
    path = protocol_file(params.lm, model, RESOURCES, directory, seed=params.seed, calib_seed=seed)
    return load_protocol(path, params.lm.calib_batch_size)


class Results:
    """Rows keyed by (method, sparsity, seed, stage, device kind), merged into a JSON file as they come."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        old = read_json(path) if path.is_file() else {}
        self.rows: list[dict[str, Any]] = old.get("rows", [])
        self.meta = meta

    @staticmethod
    def key(row: dict[str, Any]) -> tuple:
        return (row["method"], row["sparsity"], row["seed"], row["stage"], row["device_kind"])

    def get(self, **key: Any) -> dict[str, Any] | None:
        want = self.key(key)
        return next((r for r in self.rows if self.key(r) == want), None)

    def add(self, row: dict[str, Any]) -> None:
        self.rows = [r for r in self.rows if self.key(r) != self.key(row)] + [row]
        write_json(self.path, {"meta": self.meta, "rows": self.rows})
        ppl = f"{row['ppl']:.2f}" if row.get("ppl") is not None else "-"
        print(
            f"  {row['method']:>9} {row['sparsity']:>4} s{row['seed']} {row['stage']:<11} "
            f"{row['device_kind']:<4} ppl {ppl:>8}  {row.get('seconds', 0):7.1f} s",
            flush=True,
        )


def _reprune(net, dense, calib, opts, sopts, device) -> None:  # noqa: ANN001 - SDS step 3
    again = prune_model(net, calib, opts, device=device)
    if sopts.final_adjust_steps:
        adjust_model(net, dense, calib, again.masks, sopts, device=device)


def run(args: argparse.Namespace) -> Results:
    params = load_params(args.params)
    lm = params.lm
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the CPU's fp32 arithmetic, not TF32
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    model = model_dir(args.model or lm.model, args.work)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    res = Results(
        args.out,
        {
            "params": str(args.params),
            "model": args.model or lm.model,
            "device": gpu or platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    kind = device.type
    eval_cache: dict[int, Any] = {}

    def ppl(net: torch.nn.Module, eval_ids: torch.Tensor) -> tuple[float, float]:
        out, seconds, _ = _timed(
            device, perplexity, net, eval_ids, window=lm.window, batch_size=lm.eval_batch_size, device=device
        )
        return out.ppl, seconds

    combos = [c for c in lm.combos if not args.only or f"{c[0]}@{c[1]}" in args.only]
    sds_combos = set(lm.sds.combos)
    sopts = sds_options(lm.sds)
    for seed in args.seeds:
        eval_ids, calib = eval_cache.setdefault(seed, protocol(params, model, seed, args.protocols))
        if args.only_protocols:
            continue
        if res.get(method="dense", sparsity="0", seed=0, stage="dense", device_kind=kind) is None:
            value, seconds = ppl(load_causal_lm(model), eval_ids)
            res.add(
                {"method": "dense", "sparsity": "0", "seed": 0, "stage": "dense", "device_kind": kind}
                | {"ppl": value, "eval_seconds": seconds, "seconds": 0.0}
            )
        for method, sparsity in combos:
            key = {"method": method, "sparsity": sparsity, "seed": seed, "device_kind": kind}
            wants_sds = (method, sparsity) in sds_combos and not args.no_sds
            if res.get(**key, stage="one-shot") and (not wants_sds or res.get(**key, stage="sds")):
                continue
            opts = prune_options(lm, method, sparsity)
            net = load_causal_lm(model)
            torch.manual_seed(params.seed)
            outcome, seconds, peak = _timed(device, prune_model, net, calib, opts, device=device)
            value, eval_s = ppl(net, eval_ids)
            res.add(
                key
                | {"stage": "one-shot", "ppl": value, "seconds": seconds, "eval_seconds": eval_s}
                | {"gpu_peak_mib": peak, "measured_sparsity": measured_sparsity(net)}
            )
            if not wants_sds:
                continue
            dense = load_causal_lm(model).to(device)
            _, seconds, peak = _timed(
                device, reactivate_model, net, dense, calib, outcome.masks, sopts, device=device
            )
            value, eval_s = ppl(net, eval_ids)
            res.add(
                key
                | {"stage": "reactivated", "ppl": value, "seconds": seconds, "eval_seconds": eval_s}
                | {"gpu_peak_mib": peak}
            )
            _, seconds, peak = _timed(device, _reprune, net, dense, calib, opts, sopts, device)
            value, eval_s = ppl(net, eval_ids)
            res.add(
                key
                | {"stage": "sds", "ppl": value, "seconds": seconds, "eval_seconds": eval_s}
                | {"gpu_peak_mib": peak, "measured_sparsity": measured_sparsity(net)}
            )
            del dense, net, outcome
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for spec in args.cpu_baseline:
        method, sparsity = spec.split("@")
        key = {"method": method, "sparsity": sparsity, "seed": args.seeds[0], "device_kind": "cpu"}
        if res.get(**key, stage="one-shot") is None:
            eval_ids, calib = eval_cache[args.seeds[0]]
            net = load_causal_lm(model)
            opts = prune_options(lm, method, sparsity)
            cpu = torch.device("cpu")
            _, seconds, _ = _timed(cpu, prune_model, net, calib, opts, device=cpu)
            value = perplexity(net, eval_ids, window=lm.window, batch_size=lm.eval_batch_size).ppl
            res.add(
                key
                | {
                    "stage": "one-shot",
                    "ppl": value,
                    "seconds": seconds,
                    "cpu_threads": torch.get_num_threads(),
                }
            )
    return res


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (device kind, method, sparsity, stage): perplexity mean / min / max over seeds, mean seconds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["device_kind"], r["method"], r["sparsity"], r["stage"]), []).append(r)
    out = []
    for (kind, method, sparsity, stage), rs in groups.items():
        ppls = [r["ppl"] for r in rs]
        out.append(
            {
                "device_kind": kind,
                "method": method,
                "sparsity": sparsity,
                "stage": stage,
                "seeds": sorted(r["seed"] for r in rs),
                "ppl_mean": statistics.fmean(ppls),
                "ppl_min": min(ppls),
                "ppl_max": max(ppls),
                "seconds_mean": statistics.fmean(r["seconds"] for r in rs),
            }
        )
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    print(
        f"{'device':<6} {'method':>9} {'pattern':>7} {'stage':<11} {'seeds':<8} {'ppl mean [min-max]':<26} s/run"
    )
    for s in summary:
        seeds = ",".join(map(str, s["seeds"]))
        spread = f"{s['ppl_mean']:.2f} [{s['ppl_min']:.2f}-{s['ppl_max']:.2f}]"
        print(
            f"{s['device_kind']:<6} {s['method']:>9} {s['sparsity']:>7} {s['stage']:<11} {seeds:<8} "
            f"{spread:<26} {s['seconds_mean']:.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=Path, default=ROOT / "params-lm.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--model", default=None, help="HF directory, hub name or .gguf file (default: lm.model)")
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "lm-seeds")
    p.add_argument("--protocols", type=Path, default=ROOT / ".cache" / "lm-seeds" / "protocols")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lm_seeds.json")
    p.add_argument(
        "--only", nargs="*", default=[], help="restrict to METHOD@PATTERN combos (e.g. sparsegpt@2:4)"
    )
    p.add_argument("--no-sds", action="store_true", help="one-shot rows only")
    p.add_argument("--only-protocols", action="store_true", help="build the protocol files and stop")
    p.add_argument("--cpu-baseline", nargs="*", default=[], help="METHOD@PATTERN also pruned on this CPU")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.model is None and load_params(args.params).lm.model == "smollm2":
        from robustprune.resources import download, extract

        download("smollm2")
        args.model = str(extract("smollm2", RESOURCES / "smollm2"))
    args.protocols.mkdir(parents=True, exist_ok=True)
    res = run(args)
    if not args.only_protocols:
        summary = summarize(res.rows)
        write_json(args.out, {"meta": res.meta, "rows": res.rows, "summary": summary})
        print_table(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
