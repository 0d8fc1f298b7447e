"""The mask selectors and patterns every pruning method shares, against a stable-argsort oracle: exact counts,
ties by index, NaN last, N:M groups, every shape; and the small kernels' edges (Wanda's score, the running
Hessian diagonal). The mutation run (``benchmarks/mutation.py``) plants the bugs these tests catch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustprune.pruning.masks import (
    Pattern,
    nm_prune_mask,
    num_to_prune,
    parse_pattern,
    rowwise_prune_mask,
    split_prune_counts,
    topk_prune_mask,
)


def _oracle_rows(scores: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Keep-mask: per row, prune the ``counts[r]`` lowest (NaN = +inf), ties by column (stable argsort)."""
    rows = scores.reshape(-1, scores.shape[-1])
    rows = torch.nan_to_num(rows, nan=float("inf")) if rows.is_floating_point() else rows
    keep = torch.ones_like(rows, dtype=torch.bool)
    for r, k in enumerate(counts):
        order = torch.argsort(rows[r], stable=True)
        keep[r, order[:k]] = False
    return keep.view(scores.shape)


def _ties(shape, seed=0) -> torch.Tensor:
    """Scores with many ties and a few NaNs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 4, shape, generator=g).float()
    x.view(-1)[::7] = float("nan")
    return x


# ------------------------------------------------------------------------------------------------ topk
@pytest.mark.parametrize("k", [0, 1, 5, 23, 24])
def test_topk_prune_mask_is_the_stable_argsort_over_all_entries(k):
    s = _ties((4, 6))
    got = topk_prune_mask(s, k)
    want = _oracle_rows(s.reshape(1, -1), [k]).view(s.shape)
    assert got.dtype == torch.bool and got.shape == s.shape and torch.equal(got, want)
    assert int((~got).sum()) == k


def test_topk_prune_mask_refuses_counts_outside_the_tensor():
    with pytest.raises(ValueError, match="num_prune"):
        topk_prune_mask(torch.zeros(3), 4)
    with pytest.raises(ValueError, match="num_prune"):
        topk_prune_mask(torch.zeros(3), -1)


# ------------------------------------------------------------------------------------------------ rows
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("sparsity", [0.0, 0.2, 0.5, 0.9])
def test_rowwise_prune_mask_per_row_counts(shape, sparsity):
    s = _ties(shape, seed=1)
    rows = s.numel() // shape[-1]
    got = rowwise_prune_mask(s, sparsity)
    assert got.shape == s.shape and got.dtype == torch.bool
    assert torch.equal(got, _oracle_rows(s, [num_to_prune(shape[-1], sparsity)] * rows))


def test_rowwise_exact_total_spreads_the_remainder_and_default_is_per_row():
    s = _ties((3, 5), seed=2)  # 0.5 of 5 columns rounds to 2 per row (6), of 15 entries to 8
    per_row = rowwise_prune_mask(s, 0.5)
    assert [int((~r).sum()) for r in per_row] == [2, 2, 2]
    total = rowwise_prune_mask(s, 0.5, exact_total=True)
    counts = split_prune_counts([5, 5, 5], 0.5)
    assert sum(counts) == 8 and torch.equal(total, _oracle_rows(s, counts))


def test_rowwise_prunes_one_per_row_and_nan_last():
    s = torch.tensor([[float("nan"), 2.0, 2.0, 1.0], [3.0, float("nan"), 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    got = rowwise_prune_mask(s, 0.25)  # one per row
    assert got.tolist() == [[True, True, True, False], [True, True, False, True], [False, True, True, True]]
    three = rowwise_prune_mask(s, 0.75)  # ties at the threshold with entries below it
    assert torch.equal(three, _oracle_rows(s, [3, 3, 3]))


def test_rowwise_refuses_a_scalar_and_integer_scores_work():
    with pytest.raises(ValueError, match="at least one dimension"):
        rowwise_prune_mask(torch.tensor(1.0), 0.5)
    ints = torch.tensor([[3, 1, 2, 1]])
    assert rowwise_prune_mask(ints, 0.5).tolist() == [[True, False, True, False]]


def test_split_prune_counts_allows_empty_parts():
    assert split_prune_counts([0, 4, 0, 4], 0.5) == [0, 2, 0, 2]
    with pytest.raises(ValueError, match=">= 0"):
        split_prune_counts([2, -1], 0.5)


# -------------------------------------------------------------------------------------------------- N:M
@pytest.mark.parametrize("shape", [(8,), (2, 8), (2, 3, 8)])
def test_nm_prune_mask_keeps_n_per_group_with_ties_by_column(shape):
    s = _ties(shape, seed=3)
    got = nm_prune_mask(s, 2, 4)
    groups = got.reshape(-1, 4)
    assert (groups.sum(-1) == 2).all()
    g = s.reshape(-1, 4)
    want = torch.ones_like(g, dtype=torch.bool)
    for i in range(g.shape[0]):
        want[i, torch.argsort(g[i], stable=True)[:2]] = False
    assert torch.equal(got, want.view(shape))


def test_nm_ties_in_wide_groups_prune_the_lower_columns_first():
    """Stable on any group width: with all scores equal, 1:2048 keeps the last column of every group."""
    got = nm_prune_mask(torch.ones(2, 4096), 1, 2048)
    want = torch.zeros(2, 4096, dtype=torch.bool)
    want[:, [2047, 4095]] = True
    assert torch.equal(got, want)


def test_nm_prune_mask_checks_the_pattern_and_the_last_dimension():
    with pytest.raises(ValueError, match="1 <= N < M"):
        nm_prune_mask(torch.zeros(2, 4), 4, 4)
    with pytest.raises(ValueError, match="multiple of 4"):
        nm_prune_mask(torch.zeros(2, 6), 2, 4)
    assert nm_prune_mask(torch.zeros(2, 3, 4), 2, 4).shape == (2, 3, 4)  # only the last dim must divide


# ---------------------------------------------------------------------------------------------- patterns
def test_pattern_and_parse_pattern_edges():
    with pytest.raises(ValueError, match="1 <= N < M"):
        Pattern(0.0, 4, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Pattern(1.0)
    close = Pattern(1 - 1 / 3 + 1e-12, 1, 3)  # within 1e-9 of 1 - n/m
    assert close.is_nm and str(close) == "1:3"
    with pytest.raises(ValueError, match="sparsity 1 - n/m"):
        Pattern(0.6, 1, 3)
    for bad in (None, True, False, [0.5]):
        with pytest.raises(ValueError, match="invalid sparsity pattern"):
            parse_pattern(bad)
    assert parse_pattern(" 2:4 ") == Pattern(0.5, 2, 4) and parse_pattern(0) == Pattern(0.0)


# ---------------------------------------------------------------------------------------------- kernels
def test_wanda_scores_are_abs_weight_times_input_norm_below_one():
    """Wanda (Sun et al. 2023, eq. 1): |W_ij| · ‖X_j‖ with ‖X_j‖ = √diag_j, also for norms below 1."""
    from robustprune.pruning.wanda import wanda_prune

    W = torch.tensor([[1.0, 0.5, 2.0, 1.0], [0.5, 1.0, 1.0, 3.0]])
    diag = torch.tensor([0.01, 0.64, 0.04, 0.25])  # norms 0.1, 0.8, 0.2, 0.5
    res = wanda_prune(W, diag, Pattern(0.5))
    # row 0 scores 0.1, 0.4, 0.4, 0.5 -> prune cols 0, 1 ; row 1: 0.05, 0.8, 0.2, 1.5 -> prune 0, 2
    mask = getattr(res, "mask", res)
    assert mask.tolist() == [[False, False, True, True], [False, True, False, True]]


def test_accumulate_diag_running_mean_and_empty_batches():
    from robustprune.pruning.hessian import accumulate_diag

    x1, x2 = torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    d1, n1 = accumulate_diag(None, x1, 0)
    assert n1 == 2 and torch.allclose(d1, torch.tensor([10.0, 4.0]))  # 2/2 · Σ x²
    d2, n2 = accumulate_diag(d1, x2, n1)
    assert n2 == 3 and torch.allclose(d2, 2 / 3 * torch.tensor([11.0, 5.0]))
    empty, n0 = accumulate_diag(None, torch.zeros(0, 3), 0)
    assert n0 == 0 and torch.equal(empty, torch.zeros(3))
    kept, n = accumulate_diag(d2, torch.zeros(0, 2), 0)  # an empty batch on a fresh count keeps acc
    assert n == 0 and torch.equal(kept, d2)
    one, n = accumulate_diag(None, torch.tensor([[2.0, 1.0]]), 0)
    assert n == 1 and torch.allclose(one, torch.tensor([8.0, 2.0]))


# ---------------------------------------------------------------------------------------------- RAKP
def _rakp_oracle(W, H, cross, ridge, jitter=0.0):
    """Δ = W · cross · (H̃' + λI + jitter·I)⁻¹ in float64, H̃' = H̃ with zero diagonal entries set to 1,
    λ = ridge · mean(diag H̃')."""
    A = H.double().clone()
    d = A.diagonal()
    d[d == 0] = 1.0
    lam = ridge * float(d.mean())
    A = A + (lam + jitter) * torch.eye(A.shape[0], dtype=torch.float64)
    return (W.double() @ cross.double() @ torch.linalg.inv(A)).float()


def _stats(d_in=5, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(30, d_in, generator=g, dtype=torch.float64) * scale
    Xt = X + 0.1 * torch.randn(30, d_in, generator=g, dtype=torch.float64)
    X[:, 3] = 0.0  # a dead input of the pruned stream
    Xt[:, 3] = 0.0
    H = 2 / 30 * Xt.T @ Xt
    cross = 2 / 30 * (X - Xt).T @ Xt
    W = torch.randn(4, d_in, generator=g)
    return W, H, cross


def test_rakp_correction_is_the_ridge_solve_with_dead_inputs_and_float64_inputs():
    """Δ = W·cross·(H̃ + λI)⁻¹, λ = ridge·mean(diag), dead inputs a unit diagonal; float64 statistics work
    (converted to float32 on W's device)."""
    from robustprune.pruning.rakp import rakp_correction

    W, H, cross = _stats()
    for ridge in (1e-4, 0.5):
        got = rakp_correction(W, H, cross, ridge)
        assert got.dtype == torch.float32 and torch.allclose(got, _rakp_oracle(W, H, cross, ridge), atol=1e-4)
    assert got[:, 3].abs().sum() == 0  # the dead column's correction is zero
    zero = rakp_correction(W.double(), H, torch.zeros_like(cross), 0.1)
    assert zero.dtype == torch.float32 and zero.shape == W.shape and not zero.any()
    bad = cross.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        rakp_correction(W, H, bad, 0.1)
    with pytest.raises(ValueError, match="NaN/Inf"):
        rakp_correction(W, bad, cross, 0.1)


def test_rakp_correction_jitters_a_singular_hessian_from_one_millionth_of_its_scale():
    """ridge 0 and a singular H̃ (two identical inputs): Cholesky fails and the first jitter,
    mean(diag)·1e-6, is the one used. With a cross term along H̃'s null direction the correction there
    grows as 1/jitter, so its size tells which jitter solved it (float32: to within a factor of 2)."""
    from robustprune.pruning.rakp import rakp_correction

    g = torch.Generator().manual_seed(1)
    Xt = torch.randn(20, 3, generator=g, dtype=torch.float64) * 0.3
    Xt[:, 2] = Xt[:, 1]
    H = 2 / 20 * Xt.T @ Xt
    cross = torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.1
    W = torch.randn(2, 3, generator=g)
    scale = float(H.diagonal().mean())
    assert scale < 1
    got = float(rakp_correction(W, H, cross, 0.0).norm())
    first = float(_rakp_oracle(W, H, cross, 0.0, jitter=scale * 1e-6).norm())
    second = float(_rakp_oracle(W, H, cross, 0.0, jitter=scale * 1e-4).norm())
    assert 0.5 < got / first < 2 and first > 20 * second


def test_rakp_prune_defaults_zero_weight_and_dampening():
    """Defaults α 1 and ridge 1e-4 (the paper's full refit); a zero W has delta_norm 0; the dampening given
    reaches SparseGPT on both paths and its damp is reported."""
    from robustprune.pruning.rakp import rakp_correction, rakp_prune
    from robustprune.pruning.sparsegpt import sparsegpt_prune

    W, H, cross = _stats(d_in=8)
    H, cross = H.float(), cross.float()
    p = Pattern(0.5)
    default = rakp_prune(W, H, cross, p)
    explicit = rakp_prune(W, H, cross, p, alpha=1.0, ridge=1e-4)
    assert torch.equal(default.weight, explicit.weight) and default.delta_norm == explicit.delta_norm
    delta = rakp_correction(W, H, cross, 1e-4)
    assert default.delta_norm == pytest.approx(float(delta.norm()) / float(W.norm()), rel=1e-5)
    ref = sparsegpt_prune(W + delta, H, p, dampening=0.2)
    got = rakp_prune(W, H, cross, p, dampening=0.2)
    assert torch.allclose(got.weight, ref.weight, atol=1e-6) and got.damp == ref.damp and got.damp is not None
    plain = rakp_prune(W, H, None, p, dampening=0.2)
    assert torch.equal(plain.weight, sparsegpt_prune(W, H, p, dampening=0.2).weight)
    assert plain.damp == sparsegpt_prune(W, H, p, dampening=0.2).damp
    assert rakp_prune(torch.zeros_like(W), H, cross, p).delta_norm == 0.0
    off = rakp_prune(W, H, cross, p, alpha=0.0)  # α 0: SparseGPT itself, no correction computed
    assert torch.equal(off.weight, sparsegpt_prune(W, H, p).weight) and off.delta_norm == 0.0


def test_sparsegpt_accepts_a_block_of_one_column():
    from robustprune.pruning.sparsegpt import sparsegpt_prune

    W, H, _ = _stats(d_in=6)
    one = sparsegpt_prune(W, H.float() + 0.1 * torch.eye(6), Pattern(0.5), block_size=1)
    assert int((~one.mask).sum()) == 12
    with pytest.raises(ValueError):
        sparsegpt_prune(W, H.float(), Pattern(0.5), block_size=0)


# -------------------------------------------------------------------------------- streams / head errors
def test_kl_sum_over_rows_in_chunks():
    from robustprune.pruning.rakp_alpha import kl_sum

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    p, q = torch.softmax(a.double(), -1), torch.softmax(b.double(), -1)
    want = float((p * (p.log() - q.log())).sum())
    assert kl_sum(a, b) == pytest.approx(want) and kl_sum(a, b, chunk=2) == pytest.approx(want)
    assert kl_sum(a, a) == pytest.approx(0.0, abs=1e-12)
    wide = torch.randn(2, 300, generator=g)  # more classes than rows and than a chunk
    assert kl_sum(wide, wide.flip(-1)) > 0
    pw, qw = torch.softmax(wide.double(), -1), torch.softmax(wide.flip(-1).double(), -1)
    assert kl_sum(wide, wide.flip(-1)) == pytest.approx(float((pw * (pw.log() - qw.log())).sum()))


def test_stream_relative_error_counts_real_tokens_only():
    from robustprune.pruning.streams import relative_error

    ref = [torch.tensor([[3.0, 4.0], [9.0, 9.0]]), torch.tensor([[0.5, 0.5]])]
    got = [torch.tensor([[3.0, 1.0], [0.0, 0.0]]), torch.tensor([[0.5, 0.0]])]
    masks = [torch.tensor([True, False]), torch.tensor([True])]
    assert relative_error(ref, got, masks) == pytest.approx((9.0 + 0.25) / (25.0 + 0.5))
    small = [torch.tensor([[0.1, 0.2]])]
    assert relative_error(small, [torch.zeros(1, 2)], [torch.tensor([True])]) == pytest.approx(1.0)
    assert relative_error([torch.zeros(1, 2)], [torch.ones(1, 2)], [torch.tensor([True])]) == pytest.approx(
        2e30
    )


def test_extras_round_trip_keeps_tuples_lists_dicts_and_refuses_non_str_keys():
    from robustprune.pruning.streams import flatten_extras, unflatten_extras

    t = torch.arange(3.0)
    extras = [((t, None, (1, [2.5, "x"])), {"mask": t + 1, "flag": True})]
    tensors, skeleton = flatten_extras(extras)
    assert set(tensors) == {"b0.0.0", "b0.1.mask"}
    back = unflatten_extras(tensors, skeleton)
    (args, kwargs) = back[0]
    assert isinstance(args, tuple) and isinstance(args[2], tuple) and isinstance(args[2][1], list)
    assert torch.equal(args[0], t) and args[1] is None and args[2] == (1, [2.5, "x"])
    assert torch.equal(kwargs["mask"], t + 1) and kwargs["flag"] is True and args[0].device.type == "cpu"
    with pytest.raises(TypeError, match="cannot persist"):
        flatten_extras([((), {1: t})])


def test_head_logit_errors_are_relative_and_kl_is_a_row_mean():
    from robustprune.pruning.rakp_alpha import kl_sum
    from robustprune.pruning.rakp_head import _logit_errors

    d = [torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0]])]
    g = [torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.tensor([[0.0, 0.0]])]
    rel, kl, rows = _logit_errors(d, g)
    assert rows == 3 and rel == pytest.approx((1.0 + 4.0) / (1 + 4 + 1 + 4))
    assert kl == pytest.approx((kl_sum(d[0], g[0]) + kl_sum(d[1], g[1])) / 3)
    tiny = [torch.tensor([[0.1, 0.0]])]
    assert _logit_errors(tiny, [torch.zeros(1, 2)])[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("neg", "jitter"),
    [(-1e-7, 1e-6), (-1e-5, 1e-4), (-3e-3, 1e-2), (-0.05, 1.0)],
    ids=["first-jitter", "second-jitter", "third-jitter", "last-jitter"],
)
def test_rakp_correction_jitter_ladder_on_an_indefinite_diagonal(neg, jitter):
    """H̃ = diag(1, 0.5, neg) with ridge 0: Cholesky fails until the jitter scale·10^e (e = −6, −4, −2, 0,
    scale = mean diag) makes the last pivot positive; the solve then divides column 2 by neg + that jitter.
    Each rung is hit by one case (−3e-3 fails at 10⁻³·scale, so a ladder with a 10⁻³ rung would differ)."""
    from robustprune.pruning.rakp import rakp_correction

    H = torch.diag(torch.tensor([1.0, 0.5, neg]))
    cross = torch.tensor([[0.3, 0.1, 0.2], [0.0, 0.4, 0.1], [0.2, 0.0, 0.5]])
    W = torch.tensor([[1.0, -2.0, 0.5]])
    scale = float(H.diagonal().mean())
    d = torch.tensor([1.0 + scale * jitter, 0.5 + scale * jitter, neg + scale * jitter])
    got = rakp_correction(W, H, cross, 0.0)
    assert torch.allclose(got, (W @ cross) / d, rtol=1e-3)


def test_rakp_correction_names_the_matrix_of_the_wrong_shape():
    from robustprune.pruning.rakp import rakp_correction

    W = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"^H_pruned must be"):
        rakp_correction(W, torch.eye(4), torch.zeros(3, 3), 0.1)
    with pytest.raises(ValueError, match=r"^cross must be"):
        rakp_correction(W, torch.eye(3), torch.zeros(3, 4), 0.1)


def test_rakp_prune_small_weights_and_alpha_zero_never_reads_cross():
    from robustprune.pruning.rakp import rakp_correction, rakp_prune
    from robustprune.pruning.sparsegpt import sparsegpt_prune

    W, H, cross = _stats(d_in=8)
    H, cross = H.float(), cross.float()
    small = 0.01 * W  # ‖W‖ < 1
    res = rakp_prune(small, H, cross, Pattern(0.5))
    delta = rakp_correction(small, H, cross, 1e-4)
    assert (
        res.delta_norm == pytest.approx(float(delta.norm()) / float(small.norm()), rel=1e-5)
        and res.delta_norm > 0
    )
    bad = cross.clone()
    bad[0, 0] = float("nan")
    off = rakp_prune(W, H, bad, Pattern(0.5), alpha=0.0)
    assert torch.equal(off.weight, sparsegpt_prune(W, H, Pattern(0.5)).weight)


def test_relative_errors_at_zero():
    """0/0 is 0, x/0 is inf for x > 0, small denominators are divided by; an exact reconstruction is 0."""
    from robustprune.pruning.result import _relative, output_error, target_error

    assert _relative(0.0, 0.0) == 0.0 and _relative(0.5, 0.0) == float("inf")
    assert _relative(0.25, 0.5) == 0.5 and _relative(2.0, 4.0) == 0.5
    W = torch.tensor([[0.1, 0.2]])
    H = torch.eye(2) * 0.5
    assert output_error(W, W, H) == 0.0
    assert target_error(W, W, H, H, torch.zeros(2, 2)) == 0.0
    assert output_error(W, torch.zeros_like(W), H) == pytest.approx(1.0)


# ------------------------------------------------------------- kill the mutants mutmut left (make mutation)


def test_stream_helpers_refuse_lists_of_different_lengths():
    """Batches are paired one to one (dense with pruned, hidden with mask, hidden with extras): a list one
    batch short is an error, not a silently shorter sum."""
    from robustprune.pruning.rakp_head import _linear_inputs, _logit_errors
    from robustprune.pruning.streams import relative_error, run_blocks

    t, m = torch.ones(1, 2), torch.tensor([True])
    with pytest.raises(ValueError):
        relative_error([t, t], [t], [m, m])
    with pytest.raises(ValueError):
        relative_error([t, t], [t, t], [m])
    with pytest.raises(ValueError):
        run_blocks([nn.Identity()], [t, t], [((), {})])
    with pytest.raises(ValueError):
        _logit_errors([t, t], [t])
    lin = nn.Linear(2, 2)
    with pytest.raises(ValueError):
        _linear_inputs(lambda h, mask: lin(h), {"lin": lin}, [t, t], [m])


def test_head_linear_inputs_are_the_rows_the_head_feeds_each_linear():
    """Each Linear's input, flattened to (rows, its in-features), per batch; the head is called with the
    batch's mask."""
    from robustprune.pruning.rakp_head import _linear_inputs

    lin = nn.Linear(4, 2)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 3, 4, generator=g)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    got = _linear_inputs(lambda x, m: lin(x * m.unsqueeze(-1)), {"lin": lin}, [h], [mask])
    assert len(got["lin"]) == 1 and torch.equal(got["lin"][0], (h * mask.unsqueeze(-1)).reshape(6, 4))


def test_logit_errors_of_one_row_and_block_forward_arguments():
    """One row: the mean KL is that row's KL; a block gets its extra positional and keyword arguments."""
    from robustprune.pruning.rakp_alpha import kl_sum
    from robustprune.pruning.rakp_head import _logit_errors
    from robustprune.pruning.streams import block_forward

    d, g = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 0.5, 0.0]])
    rel, kl, rows = _logit_errors([d], [g])
    assert (
        rows == 1
        and kl == pytest.approx(kl_sum(d, g))
        and rel == pytest.approx(float((d - g).square().sum()) / 2)
    )

    class Block(nn.Module):
        def forward(self, x, scale, shift=0.0):  # noqa: ANN001, ANN201
            return (x * scale + shift,)

    x = torch.ones(2)
    assert torch.equal(block_forward(Block(), x, ((3.0,), {"shift": 1.0})), torch.full((2,), 4.0))
