"""RAKP's rectification strength α per block: a fixed value, a linear depth schedule, or a held-out choice.

RAKP (Li et al. 2023, Sec. 4.2) rectifies each weight for the pruned model's shifted inputs,
``W* = W + α·Δ`` (:func:`robustprune.pruning.rakp_prune`); the paper uses the full refit (α = 1). This
module says which α block ``i`` gets:

- :func:`depth_alpha`: α on a straight line from the first block to the last;
- :func:`select_alpha`: each candidate of a grid is tried on the first calibration batches and judged on
  the held-out rest, by one of three criteria (``block``, ``model``, ``output``: see its docstring).

What these rules gave on SmolLM2 and the encoder is recorded in the benchmarks' result files
(``benchmarks/results/smollm2.json``, ``benchmarks/results/rakp_ablation_encoder*.json``; commands in
``benchmarks/README.md``); none of them is the default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from robustprune.modeling import output_head
from robustprune.pruning.layerwise import PruneOptions, collect_stats, prune_linears, stats_plan
from robustprune.pruning.streams import BlockInputs, relative_error, run_blocks
from robustprune.registry import RAKP

Head = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (last block's hidden, token mask) -> logits


def kl_sum(ref_logits: torch.Tensor, got_logits: torch.Tensor, chunk: int = 256) -> float:
    """Σ over rows of KL(p_ref ‖ p_got) = Σ_v p_ref (log p_ref − log p_got), from two (rows, classes) logits.

    In float64, ``chunk`` rows at a time: candidates can differ by less than float32's rounding of a
    49k-way log-softmax, and a 49k-wide vocabulary then needs tens of MB of temporaries, not a GB."""
    total = 0.0
    for s in range(0, ref_logits.shape[0], chunk):
        lp = torch.log_softmax(ref_logits[s : s + chunk].double(), dim=-1)
        lq = torch.log_softmax(got_logits[s : s + chunk].double(), dim=-1)
        total += float((lp.exp() * (lp - lq)).sum())
    return total


def alpha_head(model: nn.Module, opts: PruneOptions) -> Head | None:
    """The head the adaptive α reads (criterion "output"), else None; raises for a model without a head, so
    :func:`robustprune.pruning.sequential.prune_model` can call it before any forward pass."""
    if not opts.adaptive_alpha or opts.rakp.alpha_criterion != "output":
        return None
    return output_head(model, opts.rakp.output_stride)


def depth_alpha(first: float, last: float, index: int, num_blocks: int) -> float:
    """RAKP's rectification strength for block ``index`` of ``num_blocks`` on a linear depth schedule.

    α_i = first + (last − first) · i / (L − 1). Both held-out rules (:func:`select_alpha`) pick small α
    early and larger α late; the schedule tests that shape without their per-block noise. An ablation
    knob, not the default. A single block gets ``first``.
    """
    if num_blocks <= 1:
        return float(first)
    return float(first + (last - first) * index / (num_blocks - 1))


def block_alpha(opts: PruneOptions, index: int, num_blocks: int) -> float | None:
    """The α of block ``index`` when it does not depend on data (fixed or depth schedule); None when adaptive
    or for a method without rectification."""
    if opts.method != RAKP.name:
        return None
    if opts.rakp.alpha_depth is not None:
        return depth_alpha(*opts.rakp.alpha_depth, index, num_blocks)
    return opts.rakp.alpha


@torch.inference_mode()
def select_alpha(
    block: nn.Module,
    groups: Sequence[dict[str, nn.Linear]],
    inputs: BlockInputs,
    opts: PruneOptions,
    index: int,
    later: Sequence[nn.Module] = (),
    head: Head | None = None,
) -> tuple[float, dict[float, float]]:
    """Adaptive rectification: the α whose pruned model best reproduces the dense one on held-out batches.

    Choosing α per module by the module's own error rewards over-correction, which then compounds
    (measured on SmolLM2 2:4 by ``benchmarks/bench_smollm2.py``: see ``benchmarks/README.md``). These
    criteria look further and out of sample: the statistics come from the first batches, and each
    candidate α is judged on the last ``holdout_fraction`` of the calibration batches, which the solver
    never saw, by the relative error against the dense model of

    - ``alpha_criterion = "block"``: the whole block's output (attention and MLP together);
    - ``"model"``: the LAST block's output, the candidate block followed by the ``later`` blocks, which are
      still dense when block ``index`` is pruned. It needs no labels and works for encoders and decoders
      alike; it costs one pass of the rest of the network per candidate on the held-out batches. Its MSE
      weighs every residual dimension alike, so in a Llama model it is dominated by the few
      massive-activation dimensions the head's norm largely divides out;
    - ``"output"``: the same pass followed by ``head`` (the final norm and LM head, or a classifier's
      head: :func:`robustprune.modeling.output_head`), scored by the mean KL(dense ‖ candidate) of the
      output distributions: what perplexity and accuracy actually read. Labels are still not needed.
    """
    rk = opts.rakp
    n = len(inputs.pruned)
    n_hold = min(max(1, round(n * rk.holdout_fraction)), n - 1)
    if n_hold < 1:
        raise ValueError(f"adaptive alpha needs at least 2 calibration batches, got {n}")
    fit, hold = inputs.subset(range(n - n_hold)), inputs.subset(range(n - n_hold, n))
    linears = {name: lin for g in groups for name, lin in g.items()}
    stats, _ = collect_stats(block, groups, fit, plan=stats_plan(opts))
    if rk.alpha_criterion == "output" and head is None:
        raise ValueError("alpha_criterion 'output' needs the model's head (select_alpha(head=...))")
    rest = list(later) if rk.alpha_criterion in ("model", "output") else []
    dense_hold = run_blocks([block, *rest], hold.dense, hold.extras)
    if rk.alpha_criterion == "output":  # the dense model's logits (float32, as the head computes them)
        dense_hold = [head(h, m) for h, m in zip(dense_hold, hold.token_mask, strict=True)]
        rows = sum(r.shape[0] for r in dense_hold)
    original = {name: lin.weight.data.clone() for name, lin in linears.items()}
    errors = {}
    for alpha in rk.alpha_grid:
        prune_linears(linears, stats, opts, index, alpha)
        got = run_blocks([block, *rest], hold.pruned, hold.extras)
        if rk.alpha_criterion == "output":  # mean KL(dense ‖ candidate) per output row
            kl = sum(kl_sum(r, head(h, m)) for r, h, m in zip(dense_hold, got, hold.token_mask, strict=True))
            errors[alpha] = kl / max(rows, 1)
        else:
            errors[alpha] = relative_error(dense_hold, got, hold.token_mask)
        for name, lin in linears.items():
            lin.weight.data.copy_(original[name])
    best = min(errors, key=lambda a: (errors[a], a))
    return best, errors
