"""SmolLM2 pruned layer by layer with llm-compressor's own functions: issue #5's whole-model anchor, re-measured.

Runs in the benchmark venv (``.venv-bench``, llm-compressor and its transformers; see README.md), never in
``.venv``. ``bench_smollm2_vs_llmc.py`` calls it as a subprocess, so both sides run in the same session on
the same protocol file (calibration chunks and evaluation ids written by our side) and the same converted
checkpoint.

What it does is llm-compressor's sequential pipeline for ``SparseGPTModifier`` / ``WandaPruningModifier``
(``sequential_update``, the default), written out with their public kernels:

1. catch the first decoder layer's inputs for every calibration batch;
2. for each layer: a forward hook on every ``nn.Linear`` calls ``sgpt_sparsify.accumulate_hessian`` (or
   ``wanda_sparsify.accumulate_row_scalars``) on the layer's calibration forwards; then each Linear is
   pruned with ``sparsify_weight`` (block size 128, dampening 0.01, as the modifier's defaults); then the
   pruned layer is run again to give the next layer its inputs (their "propagate" pass).

It prints one JSON row (time, peak RSS, perplexity with ``robustprune.lm.perplexity``) on stdout's last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from robustprune.checkpoints import load_tensors  # noqa: E402  (pure torch/safetensors)
from robustprune.lm import perplexity  # noqa: E402
from robustprune.profiling import PeakRSS  # noqa: E402


class _Stop(Exception):
    pass


def _pattern(p: str) -> tuple[float, int, int]:
    """(sparsity, prune_n, prune_m) as llm-compressor takes them: "2:4" prunes 2 of every 4."""
    if ":" in p:
        n, m = (int(v) for v in p.split(":"))
        return n / m, n, m
    return float(p), 0, 0


@torch.no_grad()
def prune_sequential(model: nn.Module, batches: list[torch.Tensor], method: str, pattern: str) -> list[float]:
    from llmcompressor.modifiers.pruning.sparsegpt import sgpt_sparsify as sgpt
    from llmcompressor.modifiers.pruning.wanda import wanda_sparsify as wanda

    sparsity, prune_n, prune_m = _pattern(pattern)
    layers = model.model.layers
    calls: list[tuple[torch.Tensor, tuple, dict[str, Any]]] = []

    def catch(_m: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        calls.append((args[0] if args else kwargs.pop("hidden_states"), tuple(args[1:]), dict(kwargs)))
        raise _Stop

    h = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    for ids in batches:
        with contextlib.suppress(_Stop):
            model(input_ids=ids, use_cache=False)
    h.remove()
    hidden = [c[0] for c in calls]
    for _, _, kw in calls:
        kw.pop("hidden_states", None)

    def run(layer: nn.Module, x: torch.Tensor, i: int) -> torch.Tensor:
        out = layer(x, *calls[i][1], **calls[i][2])
        return out[0] if isinstance(out, tuple | list) else out

    seconds = []
    for layer in layers:
        t0 = time.perf_counter()
        linears = [m for m in layer.modules() if isinstance(m, nn.Linear)]
        if method == "sparsegpt":
            stats = {m: sgpt.make_empty_hessian(m) for m in linears}
            accumulate = sgpt.accumulate_hessian
        else:
            stats = {m: wanda.make_empty_row_scalars(m) for m in linears}
            accumulate = wanda.accumulate_row_scalars
        counts = dict.fromkeys(linears, 0)

        def hook(
            mod: nn.Module, inp: tuple, _out: torch.Tensor, stats=stats, counts=counts, accumulate=accumulate
        ) -> None:
            stats[mod], counts[mod] = accumulate(inp[0], mod, stats[mod], counts[mod])

        handles = [m.register_forward_hook(hook) for m in linears]
        for i, x in enumerate(hidden):  # calibration pass (dense layer)
            run(layer, x, i)
        for hd in handles:
            hd.remove()
        for m in linears:
            if method == "sparsegpt":
                _, W = sgpt.sparsify_weight(m, stats, sparsity, prune_n, prune_m, 128, 0.01, False)
            else:
                W = wanda.sparsify_weight(m, stats, sparsity, prune_n, prune_m)
            m.weight.data = W
        hidden = [run(layer, x, i) for i, x in enumerate(hidden)]  # propagate through the pruned layer
        seconds.append(time.perf_counter() - t0)
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="converted SmolLM2 directory (safetensors)")
    ap.add_argument("--protocol", type=Path, required=True, help="safetensors with eval_ids and calib_ids")
    ap.add_argument("--method", choices=("sparsegpt", "wanda"), required=True)
    ap.add_argument("--pattern", required=True, help='"0.5" or "2:4"')
    ap.add_argument("--calib-batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import llmcompressor
    import transformers
    from transformers import AutoModelForCausalLM

    t = load_tensors(args.protocol)
    calib = t["calib_ids"]
    batches = [calib[i : i + args.calib_batch_size] for i in range(0, calib.shape[0], args.calib_batch_size)]
    model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32).eval()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        block_s = prune_sequential(model, batches, args.method, args.pattern)
        prune_s = time.perf_counter() - t0
    zeros = sum(
        int((m.weight == 0).sum())
        for layer in model.model.layers
        for m in layer.modules()
        if isinstance(m, nn.Linear)
    )
    total = sum(
        m.weight.numel() for layer in model.model.layers for m in layer.modules() if isinstance(m, nn.Linear)
    )
    t1 = time.perf_counter()
    ppl = perplexity(model, t["eval_ids"])
    row = {
        "side": "llmcompressor",
        "method": args.method,
        "pattern": args.pattern,
        "calib_batch_size": args.calib_batch_size,
        "prune_s": round(prune_s, 1),
        "block_s_mean": round(sum(block_s) / len(block_s), 2),
        "prune_peak_rss_mb": round(rss.peak_mb, 1),
        "prune_start_rss_mb": round(rss.start_mb, 1),
        "sparsity": round(zeros / total, 4),
        "ppl": round(ppl.ppl, 3),
        "eval_s": round(time.perf_counter() - t1, 1),
        "threads": torch.get_num_threads(),
        "versions": {
            "llmcompressor": llmcompressor.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
    }
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
