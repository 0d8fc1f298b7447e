"""The CUDA path: every solver and the model-level drivers give the CPU's answer on the GPU.

Marked ``gpu``: skipped where no CUDA device is visible (CI); run with ``pytest -m gpu`` on a CUDA host.
Float summation order differs between devices, so near-ties may flip: masks must agree on nearly every
weight, structure (exact sparsity, N:M) must hold exactly, weights must agree wherever no flipped decision
precedes them in their row, and errors must agree to float tolerance.
"""

from __future__ import annotations

import copy

import pytest
import torch

from robustprune.lm import perplexity
from robustprune.pruning import (
    METHODS,
    accumulate_cross,
    accumulate_xtx,
    output_error,
    parse_pattern,
    prune_weight,
)
from robustprune.pruning.sequential import PruneOptions, prune_model
from robustprune.sds import SDSOptions, reactivate_model
from tests.conftest import tiny_llama

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _fp32_matmul():
    """Full fp32 GEMMs on the GPU (TF32 would make the CPU comparison meaningless)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def _layer(d_out: int = 96, d_in: int = 128, tokens: int = 1024, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g)
    X = torch.randn(tokens, d_in, generator=g) @ (torch.randn(d_in, d_in, generator=g) / d_in**0.5)
    X_pruned = X + 0.1 * torch.randn(tokens, d_in, generator=g)
    H, _ = accumulate_xtx(None, X_pruned, 0)
    cross, _ = accumulate_cross(None, X, X_pruned, 0)
    return W, H, cross


def _nm_holds(w: torch.Tensor, n: int, m: int) -> bool:
    return bool(((w.reshape(w.shape[0], -1, m) != 0).sum(-1) <= n).all())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["0.5", "0.875", "2:4", "4:8"])
def test_solver_on_cuda_matches_cpu(method: str, pattern: str) -> None:
    W, H, cross = _layer()
    pat = parse_pattern(pattern)
    kw = {"block_size": 32}
    cpu = prune_weight(method, W, pat, H, cross if method == "rakp" else None, **kw)
    gpu = prune_weight(
        method, W.to(CUDA), pat, H.to(CUDA), cross.to(CUDA) if method == "rakp" else None, **kw
    )
    assert gpu.weight.device.type == "cuda" and gpu.mask.device.type == "cuda"
    w_gpu, m_gpu = gpu.weight.cpu(), gpu.mask.cpu()
    assert torch.isfinite(w_gpu).all()
    if pat.is_nm:
        assert _nm_holds(w_gpu, pat.n, pat.m)
    else:
        assert int((~m_gpu).sum()) == int((~cpu.mask).sum())  # exact sparsity on both devices
    agree = float((m_gpu == cpu.mask).float().mean())
    assert agree >= 0.99, f"masks agree on {agree:.4f} of the weights"
    compared = _assert_weights_agree_up_to_first_flip(w_gpu, m_gpu, cpu.weight, cpu.mask)
    assert compared >= 0.9, f"only {compared:.3f} of the weights precede a flipped mask decision"
    err_cpu, err_gpu = output_error(W, cpu.weight, H), output_error(W, w_gpu, H)
    assert err_gpu == pytest.approx(err_cpu, rel=0.02, abs=1e-7)


def _assert_weights_agree_up_to_first_flip(
    w_gpu: torch.Tensor, m_gpu: torch.Tensor, w_cpu: torch.Tensor, m_cpu: torch.Tensor
) -> float:
    """Compare the weights of every row left of that row's first mask disagreement (all of a row whose masks
    agree): a flipped near-tie changes the OBS updates only of the columns after it. Returns the share compared.
    """
    before_flip = torch.cumsum((m_gpu != m_cpu).int(), dim=1) == 0
    torch.testing.assert_close(w_gpu[before_flip], w_cpu[before_flip], rtol=1e-3, atol=1e-4)
    return float(before_flip.float().mean())


def test_prune_model_on_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 99, (2, 16), generator=g)} for _ in range(3)]
    for method in ("wanda", "sparsegpt", "rakp"):
        opts = PruneOptions(method=method, pattern=parse_pattern("2:4"), block_size=16)
        cpu_model, gpu_model = tiny_llama(), tiny_llama()
        cpu = prune_model(cpu_model, batches, opts, device="cpu")
        gpu = prune_model(gpu_model, batches, opts, device=CUDA)
        assert next(gpu_model.parameters()).device.type == "cuda"
        assert cpu.masks.keys() == gpu.masks.keys()
        agree = sum(int((gpu.masks[k].cpu() == cpu.masks[k]).sum()) for k in cpu.masks) / sum(
            m.numel() for m in cpu.masks.values()
        )
        assert agree >= 0.98, f"{method}: masks agree on {agree:.4f}"
        for b_cpu, b_gpu in zip(cpu.blocks, gpu.blocks, strict=True):
            assert b_gpu.output_error == pytest.approx(b_cpu.output_error, rel=0.05, abs=1e-6)


def test_sds_reactivate_and_perplexity_on_cuda() -> None:
    g = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(0, 99, (2, 16), generator=g)} for _ in range(2)]
    eval_ids = torch.randint(0, 99, (1, 4 * 16), generator=g)
    dense = tiny_llama()
    ppl_cpu = perplexity(copy.deepcopy(dense), eval_ids, window=16, batch_size=2).ppl
    ppl_gpu = perplexity(copy.deepcopy(dense), eval_ids, window=16, batch_size=2, device=CUDA).ppl
    assert ppl_gpu == pytest.approx(ppl_cpu, rel=1e-4)

    opts = PruneOptions(method="sparsegpt", pattern=parse_pattern("0.5"), block_size=16)
    model = tiny_llama()
    first = prune_model(model, batches, opts, device=CUDA)
    reactivate_model(model, dense.to(CUDA), batches, first.masks, SDSOptions(l1=0.0, steps=50), device=CUDA)
    assert all(torch.isfinite(p.detach()).all() for p in model.parameters())
    again = prune_model(model, batches, opts, device=CUDA)
    kept = sum(int(m.sum()) for m in again.masks.values())
    total = sum(m.numel() for m in again.masks.values())
    assert kept == total // 2  # exact 50% per layer (every layer has an even size)
