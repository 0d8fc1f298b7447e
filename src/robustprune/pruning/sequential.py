"""The layer-by-layer driver: capture block inputs, collect per-Linear statistics, prune, move on.

SparseGPT (Frantar & Alistarh 2023, Sec. 3 and App. "sequential pruning") prunes one transformer block
at a time; the inputs of block l come from the model whose blocks < l are already pruned, so each block
compensates the error made before it. RAKP (Li et al. 2023, Sec. 4.2) keeps two streams: the pruned one
(X̃, what the layer will see) and the dense one (X, what the dense model computes) and asks each layer
to reproduce the dense output W·X from X̃. This driver therefore always runs both streams side by side on
the same calibration batches (token-aligned), which also gives every method a "drift" figure: the
relative error of the block's output against the dense model's.

Within a block, every Linear's statistics are collected from the block's dense weights (as in the
reference SparseGPT code), then all of them are pruned, then the pruned block is run to produce the
next block's inputs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from robustprune.modeling import architecture_of, find_blocks, linear_groups, output_head
from robustprune.pruning import Pattern, output_error, prune_weight, target_error
from robustprune.pruning.hessian import accumulate_cross, accumulate_diag, accumulate_xtx


@dataclass(frozen=True)
class PruneOptions:
    """Solver options shared by every layer of one pruning run."""

    method: str
    pattern: Pattern
    block_size: int = 128
    dampening: float = 0.01
    alpha: float | None = 0.25  # RAKP rectification strength; None = adaptive (select_alpha)
    # RAKP depth schedule (first block's α, last block's α), linear in between; overrides ``alpha``
    alpha_depth: tuple[float, float] | None = None
    alpha_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    holdout_fraction: float = 0.25  # adaptive α: share of calibration batches held out to judge it
    # adaptive α judged at the block's output ("block"), at the model's last block ("model") or by the
    # KL divergence of the model's output distribution from the dense model's ("output")
    alpha_criterion: str = "block"
    output_stride: int = 8  # "output": judge every k-th token position of a causal LM (the head is wide)
    track_dense: bool = True  # run the dense stream for every method (drift report); RAKP always does
    ridge: float = 0.1
    next_input: str = "pruned"  # which stream feeds the next block's "pruned" input (RAKP ablation)
    modules: str | None = None


@dataclass
class BlockInputs:
    """Inputs of one block for every calibration batch: two hidden-state streams plus the call's extras."""

    pruned: list[torch.Tensor]  # (B, T, d) per batch: X̃, from the model pruned so far
    dense: list[torch.Tensor]  # (B, T, d) per batch: X, from the dense model
    extras: list[tuple[tuple, dict[str, Any]]]  # positional args after hidden states, keyword args
    token_mask: list[torch.Tensor]  # (B, T) bool: real (non-padding) tokens


@dataclass
class LayerReport:
    name: str
    error: float  # ‖(W − Ŵ)X̃‖² / ‖W X̃‖²: the layer's own reconstruction error
    target_error: float  # ‖W X − Ŵ X̃‖² / ‖W X‖²: against the dense model's output (cumulative)
    sparsity: float
    damp: float | None
    delta_norm: float
    seconds: float


@dataclass
class BlockReport:
    index: int
    layers: list[LayerReport] = field(default_factory=list)
    output_error: float = 0.0  # ‖Y_dense − Y_pruned‖² / ‖Y_dense‖² at the block's output
    seconds: float = 0.0
    alpha: float | None = None  # RAKP: the rectification strength used for this block
    alpha_errors: dict[float, float] = field(default_factory=dict)  # adaptive: held-out error per candidate


class _Stop(Exception):
    pass


@torch.inference_mode()
def capture_block_inputs(
    model: nn.Module, batches: Sequence[dict[str, torch.Tensor]], device: torch.device | str = "cpu"
) -> BlockInputs:
    """Run the embeddings only and catch what the first block is called with (the "Catcher" trick)."""
    blocks = find_blocks(model)
    calls: list[tuple[tuple, dict[str, Any]]] = []

    def hook(_mod: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        calls.append((args, dict(kwargs)))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    is_decoder = architecture_of(model).groups[0][0].startswith("self_attn")
    masks = []
    try:
        model.to(device).eval()
        for b in batches:
            b = {k: v.to(device) for k, v in b.items()}
            with contextlib.suppress(_Stop):
                model(**b, use_cache=False) if is_decoder else model(**b)
            am = b.get("attention_mask")
            masks.append(
                am.bool()
                if am is not None
                else torch.ones(b["input_ids"].shape, dtype=torch.bool, device=device)
            )
    finally:
        handle.remove()
    hidden, extras = [], []
    for args, kwargs in calls:
        if args:
            h, rest = args[0], tuple(args[1:])
        else:
            h, rest = kwargs.pop("hidden_states"), ()
        hidden.append(h.detach())
        extras.append((rest, kwargs))
    return BlockInputs(
        pruned=hidden, dense=list(hidden), extras=extras, token_mask=masks
    )  # nothing mutates them


def block_forward(
    block: nn.Module, hidden: torch.Tensor, extra: tuple[tuple, dict[str, Any]]
) -> torch.Tensor:
    args, kwargs = extra
    out = block(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple | list) else out


@dataclass
class _Stats:
    H: torch.Tensor | None = None  # 2/N X̃ᵀX̃, or only its diagonal (a vector) when that is all that is needed
    H_dense: torch.Tensor | None = None  # 2/N XᵀX (only to report the per-layer target error)
    cross: torch.Tensor | None = None  # 2/N (X − X̃)ᵀX̃
    n: int = 0


@dataclass(frozen=True)
class StatsPlan:
    """What one block's statistics pass computes (:func:`stats_plan` picks it from the options).

    ``hessian``: "full" (``H``), "diag" (its diagonal: Wanda without layer reports) or "none"
    (magnitude without layer reports: no pass at all); ``dense``: run the dense stream too (RAKP's cross
    term, the drift report, ``next_input = dense``); ``dense_hessian``: also ``H_dense``, only for the
    per-layer target error of the drift report.
    """

    hessian: str = "full"
    dense: bool = True
    dense_hessian: bool = True


def stats_plan(opts: PruneOptions) -> StatsPlan:
    """The least work that ``opts`` needs: layer reports (``track_dense``) keep the full statistics."""
    report = opts.track_dense
    dense = report or opts.method == "rakp" or opts.next_input == "dense"
    hessian = "full" if report else {"magnitude": "none", "wanda": "diag"}.get(opts.method, "full")
    return StatsPlan(hessian=hessian, dense=dense, dense_hessian=report)


@torch.inference_mode()
def collect_stats(
    block: nn.Module,
    groups: Sequence[dict[str, nn.Linear]],
    inputs: BlockInputs,
    *,
    track_dense: bool = True,
    plan: StatsPlan | None = None,
) -> tuple[dict[str, _Stats], list[torch.Tensor]]:
    """Per-Linear statistics, and the dense block's outputs (the next dense inputs; empty without them).

    Linears of one group read the same input (q/k/v; gate/up), so each group is hooked once and its
    statistics shared. ``plan`` (default: everything if ``track_dense``, else only ``H`` on the pruned
    stream) says what to build. The pruned stream's forward is cut short once every hooked group has
    seen its input (its output is not needed: the caller runs the pruned block afterwards): the hooks
    are pre-hooks, so the last hooked Linear itself (a Llama block's down projection, a fifth of its
    FLOPs at 512 tokens) and everything after it never run in this pass.
    """
    if plan is None:
        plan = StatsPlan() if track_dense else StatsPlan(dense=False, dense_hessian=False)
    shared = [_Stats() for _ in groups]
    stats = {name: st for st, g in zip(shared, groups, strict=True) for name in g}
    if plan.hessian == "none" and not plan.dense:
        return stats, []
    seen: dict[int, torch.Tensor] = {}
    fired: set[int] = set()
    phase: dict[str, Any] = {"dense": True, "mask": None}

    def make_hook(gi: int) -> Callable:
        def hook(_mod: nn.Module, inp: tuple) -> None:  # a pre-hook: fires before the Linear computes
            mask = phase["mask"]  # None: no padding in this batch, so no copy is needed
            x = (inp[0].reshape(-1, inp[0].shape[-1]) if mask is None else inp[0][mask]).float()
            s = shared[gi]
            if phase["dense"]:
                seen[gi] = x
                return
            n = s.n
            if plan.hessian == "full":
                s.H, _ = accumulate_xtx(s.H, x, n)
            elif plan.hessian == "diag":
                s.H, _ = accumulate_diag(s.H, x, n)
            if plan.dense:
                x_dense = seen.pop(gi)
                if plan.dense_hessian:
                    s.H_dense, _ = accumulate_xtx(s.H_dense, x_dense, n)
                s.cross, _ = accumulate_cross(s.cross, x_dense, x, n)
            s.n = n + x.shape[0]
            fired.add(gi)
            if len(fired) == len(groups):
                raise _Stop

        return hook

    handles = [next(iter(g.values())).register_forward_pre_hook(make_hook(gi)) for gi, g in enumerate(groups)]
    dense_out = []
    try:
        for i, (x_pruned, extra, mask) in enumerate(
            zip(inputs.pruned, inputs.extras, inputs.token_mask, strict=True)
        ):
            mask = None if bool(mask.all()) else mask  # (tokens,) selection of real tokens
            if plan.dense:
                phase.update(dense=True, mask=mask)
                dense_out.append(block_forward(block, inputs.dense[i], extra))
            phase.update(dense=False, mask=mask)
            fired.clear()
            with contextlib.suppress(_Stop):
                block_forward(block, x_pruned, extra)
    finally:
        for h in handles:
            h.remove()
    return stats, dense_out


def _relative_error(
    ref: Sequence[torch.Tensor], got: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]
) -> float:
    num = sum(float(((r - g)[m].float() ** 2).sum()) for r, g, m in zip(ref, got, masks, strict=True))
    den = sum(float((r[m].float() ** 2).sum()) for r, m in zip(ref, masks, strict=True))
    return num / max(den, 1e-30)


def _prune_linears(
    linears: dict[str, nn.Linear], stats: dict[str, _Stats], opts: PruneOptions, index: int, alpha: float
) -> tuple[dict[str, torch.Tensor], list[LayerReport]]:
    """Prune every Linear of a block in place from its statistics; masks by full name and per-layer reports."""
    masks, reports = {}, []
    for name, lin in linears.items():
        t1 = time.perf_counter()
        s = stats[name]
        W = lin.weight.data
        try:
            res = prune_weight(
                opts.method,
                W,
                opts.pattern,
                H=s.H,
                cross=s.cross,
                block_size=opts.block_size,
                dampening=opts.dampening,
                alpha=alpha,
                ridge=opts.ridge,
            )
        except ValueError as e:
            raise ValueError(f"block {index}, layer {name!r} (weight {tuple(W.shape)}): {e}") from e
        err = output_error(W, res.weight, s.H) if s.H is not None and s.H.dim() == 2 else float("nan")
        terr = target_error(W, res.weight, s.H_dense, s.H, s.cross) if s.H_dense is not None else float("nan")
        lin.weight.data.copy_(res.weight)
        masks[f"{index}.{name}"] = res.mask.cpu()
        reports.append(
            LayerReport(
                name=name,
                error=err,
                target_error=terr,
                sparsity=1 - float(res.mask.float().mean()),
                damp=res.damp,
                delta_norm=res.delta_norm,
                seconds=time.perf_counter() - t1,
            )
        )
    return masks, reports


def _subset(inputs: BlockInputs, idx: Sequence[int]) -> BlockInputs:
    return BlockInputs(
        pruned=[inputs.pruned[i] for i in idx],
        dense=[inputs.dense[i] for i in idx],
        extras=[inputs.extras[i] for i in idx],
        token_mask=[inputs.token_mask[i] for i in idx],
    )


ALPHA_CRITERIA = ("block", "model", "output")

Head = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (last block's hidden, token mask) -> logits


def _kl_sum(ref_logits: torch.Tensor, got_logits: torch.Tensor, chunk: int = 256) -> float:
    """Σ over rows of KL(p_ref ‖ p_got) = Σ_v p_ref (log p_ref − log p_got), from two (rows, classes) logits.

    In float64, ``chunk`` rows at a time: candidates can differ by less than float32's rounding of a
    49k-way log-softmax, and a 49k-wide vocabulary then needs tens of MB of temporaries, not a GB."""
    total = 0.0
    for s in range(0, ref_logits.shape[0], chunk):
        lp = torch.log_softmax(ref_logits[s : s + chunk].double(), dim=-1)
        lq = torch.log_softmax(got_logits[s : s + chunk].double(), dim=-1)
        total += float((lp.exp() * (lp - lq)).sum())
    return total


def _check_alpha_criterion(opts: PruneOptions) -> None:
    if opts.alpha_criterion not in ALPHA_CRITERIA:
        raise ValueError(f"alpha_criterion must be one of {ALPHA_CRITERIA}, got {opts.alpha_criterion!r}")


def _alpha_head(model: nn.Module, opts: PruneOptions) -> Head | None:
    """The head RAKP's adaptive α reads (criterion "output"), else None; raises for an unknown criterion
    or a model without a head, so :func:`prune_model` can call it before any forward pass."""
    if opts.method != "rakp" or opts.alpha is not None or opts.alpha_depth is not None:
        return None
    _check_alpha_criterion(opts)
    return output_head(model, opts.output_stride) if opts.alpha_criterion == "output" else None


def depth_alpha(first: float, last: float, index: int, num_blocks: int) -> float:
    """RAKP's rectification strength for block ``index`` of ``num_blocks`` on a linear depth schedule.

    α_i = first + (last − first) · i / (L − 1). Both held-out rules (:func:`select_alpha`) pick small α
    early and 0.5–0.75 in the last third; the schedule tests that shape without their per-block noise.
    Measured (README): on SmolLM2 2:4 it ties a fixed 0.25 at best (0.15 → 0.55) and loses at 0 → 0.5,
    so it is an ablation knob, not the default. A single block gets ``first``.
    """
    if num_blocks <= 1:
        return float(first)
    return float(first + (last - first) * index / (num_blocks - 1))


def _run_blocks(
    blocks: Sequence[nn.Module], hidden: Sequence[torch.Tensor], extras: Sequence[tuple]
) -> list[torch.Tensor]:
    out = list(hidden)
    for blk in blocks:
        out = [block_forward(blk, h, e) for h, e in zip(out, extras, strict=True)]
    return out


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

    The design notes measured that choosing α per module by the module's own error rewards
    over-correction, which then compounds. Both criteria look further and out of sample: the statistics
    come from the first batches, and each candidate α is judged on the last ``holdout_fraction`` of the
    calibration batches, which the solver never saw, by the relative error against the dense model of

    - ``alpha_criterion = "block"``: the whole block's output (attention and MLP together);
    - ``"model"``: the LAST block's output, the candidate block followed by the ``later`` blocks, which are
      still dense when block ``index`` is pruned. This measures how the block's error propagates to what
      the head reads, the "model's held-out loss" criterion of the issue without a task loss (it needs no
      labels and works for encoders and decoders alike); it costs one pass of the rest of the network per
      candidate on the held-out batches. Its MSE weighs every residual dimension alike, so in a Llama
      model it is dominated by the few massive-activation dimensions the head's norm largely divides out;
    - ``"output"``: the same pass followed by ``head`` (the final norm and LM head, or a classifier's
      head: :func:`robustprune.modeling.output_head`), scored by the mean KL(dense ‖ candidate) of the
      output distributions: what perplexity and accuracy actually read. Labels are still not needed.
    """
    _check_alpha_criterion(opts)
    n = len(inputs.pruned)
    n_hold = min(max(1, round(n * opts.holdout_fraction)), n - 1)
    if n_hold < 1:
        raise ValueError(f"adaptive alpha needs at least 2 calibration batches, got {n}")
    fit, hold = _subset(inputs, range(n - n_hold)), _subset(inputs, range(n - n_hold, n))
    linears = {name: lin for g in groups for name, lin in g.items()}
    stats, _ = collect_stats(block, groups, fit, plan=stats_plan(opts))
    if opts.alpha_criterion == "output" and head is None:
        raise ValueError("alpha_criterion 'output' needs the model's head (select_alpha(head=...))")
    rest = list(later) if opts.alpha_criterion in ("model", "output") else []
    dense_hold = _run_blocks([block, *rest], hold.dense, hold.extras)
    if opts.alpha_criterion == "output":  # the dense model's logits (float32, as the head computes them)
        dense_hold = [head(h, m) for h, m in zip(dense_hold, hold.token_mask, strict=True)]
        rows = sum(r.shape[0] for r in dense_hold)
    original = {name: lin.weight.data.clone() for name, lin in linears.items()}
    errors = {}
    for alpha in opts.alpha_grid:
        _prune_linears(linears, stats, opts, index, alpha)
        got = _run_blocks([block, *rest], hold.pruned, hold.extras)
        if opts.alpha_criterion == "output":  # mean KL(dense ‖ candidate) per output row
            kl = sum(_kl_sum(r, head(h, m)) for r, h, m in zip(dense_hold, got, hold.token_mask, strict=True))
            errors[alpha] = kl / max(rows, 1)
        else:
            errors[alpha] = _relative_error(dense_hold, got, hold.token_mask)
        for name, lin in linears.items():
            lin.weight.data.copy_(original[name])
    best = min(errors, key=lambda a: (errors[a], a))
    return best, errors


@torch.inference_mode()
def prune_block(
    model: nn.Module, index: int, inputs: BlockInputs, opts: PruneOptions
) -> tuple[BlockInputs, dict[str, torch.Tensor], BlockReport]:
    """Prune block ``index`` in place; return the next block's inputs, the masks (by full name) and a report."""
    t0 = time.perf_counter()
    blocks = find_blocks(model)
    block = blocks[index]
    groups = linear_groups(model, block, opts.modules)
    linears = {name: lin for g in groups for name, lin in g.items()}
    report = BlockReport(index=index, alpha=opts.alpha if opts.method == "rakp" else None)
    plan = stats_plan(opts)
    track = plan.dense
    if opts.method == "rakp" and opts.alpha_depth is not None:
        report.alpha = depth_alpha(*opts.alpha_depth, index, len(blocks))
    elif opts.method == "rakp" and opts.alpha is None:
        later = blocks[index + 1 :]
        head = _alpha_head(model, opts)
        report.alpha, report.alpha_errors = select_alpha(block, groups, inputs, opts, index, later, head)
    stats, dense_out = collect_stats(block, groups, inputs, plan=plan)
    masks, report.layers = _prune_linears(linears, stats, opts, index, report.alpha or 0.0)
    pruned_out = [block_forward(block, x, e) for x, e in zip(inputs.pruned, inputs.extras, strict=True)]
    report.output_error = _relative_error(dense_out, pruned_out, inputs.token_mask) if track else float("nan")
    report.seconds = time.perf_counter() - t0
    next_pruned = dense_out if opts.next_input == "dense" else pruned_out
    nxt = BlockInputs(pruned=next_pruned, dense=dense_out, extras=inputs.extras, token_mask=inputs.token_mask)
    return nxt, masks, report


@dataclass
class PruneOutcome:
    masks: dict[str, torch.Tensor]
    blocks: list[BlockReport]


def prune_model(
    model: nn.Module,
    batches: Sequence[dict[str, torch.Tensor]],
    opts: PruneOptions,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> PruneOutcome:
    """Prune every block of ``model`` in place, in order (the in-memory form of the pipeline's prune stage).

    Magnitude pruning without layer reports reads no calibration data: no forward pass is run at all.
    """
    outcome = PruneOutcome(masks={}, blocks=[])
    if stats_plan(opts) == StatsPlan(hessian="none", dense=False, dense_hessian=False):
        model.to(device)
        for i, block in enumerate(tqdm(find_blocks(model), desc="prune magnitude", disable=not progress)):
            t0 = time.perf_counter()
            linears = {n: lin for g in linear_groups(model, block, opts.modules) for n, lin in g.items()}
            report = BlockReport(index=i, output_error=float("nan"))
            masks, report.layers = _prune_linears(linears, {n: _Stats() for n in linears}, opts, i, 0.0)
            report.seconds = time.perf_counter() - t0
            outcome.masks.update(masks)
            outcome.blocks.append(report)
        return outcome
    _alpha_head(model, opts)  # an unknown criterion or a missing head fails before any forward pass
    inputs = capture_block_inputs(model, batches, device)
    for i in tqdm(range(len(find_blocks(model))), desc=f"prune {opts.method}", disable=not progress):
        inputs, masks, report = prune_block(model, i, inputs, opts)
        outcome.masks.update(masks)
        outcome.blocks.append(report)
    return outcome
