"""The mask selectors and patterns every pruning method shares, against a stable-argsort oracle: exact counts,
ties by index, NaN last, N:M groups, every shape; and the small kernels' edges (Wanda's score, the running
Hessian diagonal). The mutation run (``benchmarks/mutation.py``) plants the bugs these tests catch."""

from __future__ import annotations

import pytest
import torch

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
