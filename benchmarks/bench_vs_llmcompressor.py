"""Side-by-side benchmark: robustprune's SparseGPT and Wanda kernels against llm-compressor's.

For each weight shape (d_out x d_in: 768x3072 and 3072x768), one Hessian is built from 128 sequences x 64
tokens of seeded, correlated random inputs (``X = Z @ A``). For each pattern (50 % unstructured, 2:4) and
method (sparsegpt, wanda) both implementations prune the same ``W`` on the same ``H``; the script reports
the median wall time of each (``--repeats``, ours and theirs interleaved), the relative layer-output error
``tr(D H Dᵀ) / tr(W H Wᵀ)`` of each result on that ``H``, the ratios ours/theirs and whether the targets
(time ratio <= 1.0, error ratio <= 1.01) are met, and checks the sparsity of both results (exact count for
unstructured, N:M validity for 2:4). Writes ``benchmarks/results/vs_llmcompressor.json``.

Hessian scaling: robustprune uses ``H = 2/N · XᵀX`` with N = calibration TOKENS; llm-compressor's
``accumulate_hessian`` uses ``2/S · XᵀX`` with S = calibration SAMPLES (sequences), i.e. its H is
``N/S`` (= seq_len) times ours, and Wanda's ``row_scalars`` are ``||X_j||² / S = N/(2S) · H_jj``. Both
SparseGPT (relative dampening, ``err / Hinv_ii`` updates, ``w² / Hinv_ii²`` saliencies) and Wanda
(row-wise comparisons) are invariant to a positive scale of H, so both are fed the same ``H`` (their
SparseGPT gets a fresh copy per call because ``sparsify_weight`` dampens it in place; their Wanda gets
``diag(H)``). The script verifies the scale relation on the actual data and stores the check in the JSON.

Needs llm-compressor, which pins its own torch/transformers, so run it from a separate venv
(see benchmarks/README.md):  ``.venv-bench/bin/python benchmarks/bench_vs_llmcompressor.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import _common  # noqa: F401,E402 - paths and the offline environment, as every benchmark
import torch
from _common import write_results  # noqa: E402

from robustprune.pruning import (  # noqa: E402
    Pattern,
    accumulate_xtx,
    num_to_prune,
    output_error,
    sparsegpt_prune,
    wanda_prune,
)

try:
    from llmcompressor.modifiers.pruning.sparsegpt.sgpt_sparsify import (
        accumulate_hessian as lc_accumulate_hessian,
    )
    from llmcompressor.modifiers.pruning.sparsegpt.sgpt_sparsify import (
        sparsify_weight as lc_sparsegpt_sparsify,
    )
    from llmcompressor.modifiers.pruning.wanda.wanda_sparsify import (
        sparsify_weight as lc_wanda_sparsify,
    )
except ImportError as e:  # pragma: no cover - depends on the bench venv
    raise SystemExit(
        f"llm-compressor is not importable ({e}); create the bench venv first, see benchmarks/README.md"
    ) from e

SHAPES = ((768, 3072), (3072, 768))
PATTERNS = {"50%": Pattern(sparsity=0.5), "2:4": Pattern(sparsity=0.5, n=2, m=4)}
METHODS = ("sparsegpt", "wanda")
TIME_TARGET = 1.0  # ours / theirs
ERR_TARGET = 1.01  # ours / theirs


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def make_problem(d_out: int, d_in: int, seqs: int, seq_len: int, seed: int, batch: int = 16):
    """Seeded W (d_out, d_in), our H = 2/N XᵀX, and a check of llm-compressor's H on the same inputs."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g)
    A = torch.randn(d_in, d_in, generator=g) / d_in**0.5  # mixing matrix -> correlated features
    lin = torch.nn.Linear(d_in, d_out, bias=False)
    H, n_tok = None, 0
    H_lc, n_samp = torch.zeros(d_in, d_in), 0
    for first in range(0, seqs, batch):
        b = min(batch, seqs - first)
        X = torch.randn(b, seq_len, d_in, generator=g) @ A  # (samples, tokens, d_in)
        H, n_tok = accumulate_xtx(H, X, n_tok)
        H_lc, n_samp = lc_accumulate_hessian(X, lin, H_lc, n_samp)
    assert H is not None and n_tok == seqs * seq_len and n_samp == seqs
    scale = n_tok / n_samp  # H_lc = (N/S) · H_ours
    rel = float((H_lc - scale * H).norm() / (scale * H).norm())
    check = {
        "ours": "2/N_tokens · XᵀX",
        "llmcompressor": "2/N_samples · XᵀX",
        "expected_scale_theirs_over_ours": scale,
        "rel_frobenius_diff_after_rescale": rel,
        "fitted_scale": float((H_lc * H).sum() / (H * H).sum()),
    }
    return W, H, check


def sparsity_check(W_hat: torch.Tensor, pattern: Pattern) -> dict:
    """Zeros in ``W_hat`` vs the exact target count, and N:M validity for an N:M pattern."""
    zeros = int((W_hat == 0).sum())
    out = {"zeros": zeros, "target_zeros": num_to_prune(W_hat.numel(), pattern.sparsity)}
    out["sparsity"] = zeros / W_hat.numel()
    out["exact"] = zeros == out["target_zeros"]
    if pattern.is_nm:
        assert pattern.n is not None and pattern.m is not None
        nz = (W_hat != 0).reshape(W_hat.shape[0], -1, pattern.m).sum(-1)
        out["nm_valid"] = bool((nz <= pattern.n).all())
    return out


def run_ours(method: str, W: torch.Tensor, H: torch.Tensor, pattern: Pattern, block_size: int):
    if method == "sparsegpt":
        return sparsegpt_prune(W, H, pattern, block_size=block_size, dampening=0.01).weight
    return wanda_prune(W, H, pattern).weight


def prepare_theirs(method: str, W: torch.Tensor, H: torch.Tensor):
    """Untimed setup for one llm-compressor call: a Linear holding W and a fresh statistics dict."""
    lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    lin.weight.data.copy_(W)
    # sparsify_weight pops its entry and (SparseGPT) dampens H in place, so every call needs a fresh copy
    stats = {lin: H.clone() if method == "sparsegpt" else H.diagonal().clone()}
    return lin, stats


def run_theirs(method: str, lin, stats: dict, pattern: Pattern, block_size: int) -> torch.Tensor:
    n, m = (pattern.n or 0), (pattern.m or 0)
    if method == "sparsegpt":
        _loss, W_hat = lc_sparsegpt_sparsify(
            lin,
            stats,
            sparsity=pattern.sparsity,
            prune_n=n,
            prune_m=m,
            block_size=block_size,
            dampening_frac=0.01,
            preserve_sparsity_mask=False,
        )
        return W_hat
    return lc_wanda_sparsify(lin, stats, sparsity=pattern.sparsity, prune_n=n, prune_m=m)


@torch.no_grad()  # as llm-compressor calls sparsify_weight (else its loop records an autograd graph)
def bench_case(method, W, H, pattern, *, repeats: int, block_size: int) -> dict:
    # warm-up both (first-call allocations, lazy kernel init)
    run_ours(method, W, H, pattern, block_size)
    run_theirs(method, *prepare_theirs(method, W, H), pattern, block_size)
    t_ours, t_theirs, c_ours, c_theirs = [], [], [], []
    for _ in range(repeats):  # interleave so that load changes hit both sides alike
        c0, t0 = time.process_time(), time.perf_counter()
        ours = run_ours(method, W, H, pattern, block_size)
        t_ours.append(time.perf_counter() - t0)
        c_ours.append(time.process_time() - c0)
        lin, stats = prepare_theirs(method, W, H)
        c0, t0 = time.process_time(), time.perf_counter()
        theirs = run_theirs(method, lin, stats, pattern, block_size).detach()
        t_theirs.append(time.perf_counter() - t0)
        c_theirs.append(time.process_time() - c0)
    ours_s, theirs_s = statistics.median(t_ours), statistics.median(t_theirs)
    ours_cpu, theirs_cpu = statistics.median(c_ours), statistics.median(c_theirs)
    ours_err, theirs_err = output_error(W, ours, H), output_error(W, theirs, H)
    sp_ours, sp_theirs = sparsity_check(ours, pattern), sparsity_check(theirs, pattern)
    time_ratio = ours_s / theirs_s
    err_ratio = ours_err / theirs_err if theirs_err > 0 else float("inf")
    return {
        "ours_s": ours_s,
        "theirs_s": theirs_s,
        "ours_times_s": t_ours,
        "theirs_times_s": t_theirs,
        "ours_min_s": min(t_ours),
        "theirs_min_s": min(t_theirs),
        "min_time_ratio": min(t_ours) / min(t_theirs),
        "ours_cpu_s": ours_cpu,
        "theirs_cpu_s": theirs_cpu,
        "cpu_time_ratio": ours_cpu / theirs_cpu,
        "time_ratio": time_ratio,
        "time_ok": time_ratio <= TIME_TARGET,
        "ours_err": ours_err,
        "theirs_err": theirs_err,
        "err_ratio": err_ratio,
        "err_ok": err_ratio <= ERR_TARGET,
        "sparsity_ours": sp_ours,
        "sparsity_theirs": sp_theirs,
        "same_sparsity": sp_ours["zeros"] == sp_theirs["zeros"],
        "masks_identical": bool(torch.equal(ours == 0, theirs == 0)),
    }


def _sp_cell(r: dict, pattern: Pattern) -> str:
    def one(s: dict) -> str:
        if pattern.is_nm:
            return "ok" if s["nm_valid"] else "BAD"
        d = s["zeros"] - s["target_zeros"]
        return "exact" if d == 0 else f"{d:+d}"

    return f"{one(r['sparsity_ours'])}/{one(r['sparsity_theirs'])}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--seqs", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "vs_llmcompressor.json",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cores = os.cpu_count() or 1
    load_start = os.getloadavg()

    header = (
        f"{'shape':>9} {'pattern':>7} {'method':>9} {'ours_s':>8} {'theirs_s':>8} {'time_ratio':>10} "
        f"{'t<=1.0':>6} {'ours_err':>9} {'theirs_err':>10} {'err_ratio':>9} {'e<=1.01':>7} "
        f"{'sparsity(ours/theirs)':>21}"
    )
    print(header)
    print("-" * len(header))
    rows, hessian_checks = [], {}
    for d_out, d_in in SHAPES:
        W, H, check = make_problem(d_out, d_in, args.seqs, args.seq_len, args.seed)
        hessian_checks[f"{d_out}x{d_in}"] = check
        for pname, pattern in PATTERNS.items():
            for method in METHODS:
                r = bench_case(method, W, H, pattern, repeats=args.repeats, block_size=args.block_size)
                r = {"shape": [d_out, d_in], "pattern": pname, "method": method, **r}
                rows.append(r)
                print(
                    f"{f'{d_out}x{d_in}':>9} {pname:>7} {method:>9} {r['ours_s']:8.3f} "
                    f"{r['theirs_s']:8.3f} {r['time_ratio']:10.3f} {'yes' if r['time_ok'] else 'NO':>6} "
                    f"{r['ours_err']:9.5f} {r['theirs_err']:10.5f} {r['err_ratio']:9.4f} "
                    f"{'yes' if r['err_ok'] else 'NO':>7} {_sp_cell(r, pattern):>21}",
                    flush=True,
                )

    load_end = os.getloadavg()
    shared = max(load_start[0], load_end[0]) > 0.5 * cores
    print("-" * len(header))
    print(
        "sparsity column: 'exact' = exactly num_to_prune(numel, s) zeros, '+k' = k zeros more than that; "
        "'ok' = valid N:M"
    )
    print(
        f"torch {torch.__version__}, llmcompressor {_version('llmcompressor')}, threads "
        f"{torch.get_num_threads()}, loadavg(1m) start {load_start[0]:.2f} end {load_end[0]:.2f} "
        f"on {cores} cores" + (" -- SHARED MACHINE, timings are noisy" if shared else "")
    )
    report = {
        "benchmark": "robustprune vs llm-compressor pruning kernels (CPU)",
        "torch": torch.__version__,
        "llmcompressor": _version("llmcompressor"),
        "compressed_tensors": _version("compressed-tensors"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": cores,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "block_size": args.block_size,
        "dampening": 0.01,
        "calibration": {"seqs": args.seqs, "seq_len": args.seq_len, "tokens": args.seqs * args.seq_len},
        "seed": args.seed,
        "targets": {"time_ratio_max": TIME_TARGET, "err_ratio_max": ERR_TARGET},
        "loadavg_start": list(load_start),
        "loadavg_end": list(load_end),
        "shared_machine": shared,
        "note": (
            f"machine was shared: 1-min loadavg {max(load_start[0], load_end[0]):.2f} > 0.5 x {cores} cores; "
            "wall times (and their ratios) are noisy"
            if shared
            else "machine was quiet (loadavg <= 0.5 x cores)"
        ),
        "timing": (
            "median wall time of `repeats` calls per side, ours and theirs interleaved after one warm-up "
            "each (min_time_ratio = best-of-repeats ratio, the steadier figure on a loaded machine), "
            "both under torch.no_grad() as llm-compressor runs it; *_cpu_s = process CPU time (all "
            "threads, less sensitive to other load than wall time); theirs excludes building the nn.Linear and copying H (its sparsify_weight consumes and "
            "dampens H in place), ours includes its internal copies"
        ),
        "hessian_scaling": hessian_checks,
        "results": rows,
    }
    return write_results(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
