"""Unit tests of the numerical pruning kernels (robustprune.pruning): tiny shapes, seeded, CPU."""

from __future__ import annotations

import logging

import pytest
import torch

from robustprune.pruning import (
    METHODS,
    Pattern,
    accumulate_cross,
    accumulate_xtx,
    dampen,
    inverse_cholesky_upper,
    magnitude_prune,
    nm_prune_mask,
    num_to_prune,
    output_error,
    parse_pattern,
    prune_weight,
    rakp_correction,
    rakp_prune,
    rowwise_prune_mask,
    sparsegpt_prune,
    split_prune_counts,
    target_error,
    topk_prune_mask,
    wanda_prune,
)

BLOCK = 16


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layer(
    d_out: int, d_in: int, tokens: int = 256, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random weight, correlated inputs X = Z @ A (so H is far from diagonal) and H = 2/N XᵀX."""
    g = _gen(seed)
    W = torch.randn(d_out, d_in, generator=g)
    A = torch.randn(d_in, d_in, generator=g) / d_in**0.5
    X = torch.randn(tokens, d_in, generator=g) @ A
    H, n = accumulate_xtx(None, X, 0)
    assert n == tokens
    return W, X, H


def _assert_close(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-8
) -> None:
    """``torch.allclose`` with a useful message (``torch.testing`` imports sympy: ~1 s on first use)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    diff = float((actual - expected).abs().max()) if actual.numel() else 0.0
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), f"max abs diff {diff:g}"


def _prune(method: str, W: torch.Tensor, H: torch.Tensor, pattern: Pattern):
    return prune_weight(method, W, pattern, H, block_size=BLOCK)


def _assert_nm(weight: torch.Tensor, mask: torch.Tensor, n: int, m: int) -> None:
    d_out, d_in = mask.shape
    kept = mask.reshape(d_out, d_in // m, m).sum(-1)
    assert bool((kept == n).all()), "every group of M must keep exactly N"
    nonzero = (weight != 0).reshape(d_out, d_in // m, m).sum(-1)
    assert bool((nonzero <= n).all())
    assert bool((weight[~mask] == 0).all())


# --------------------------------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, Pattern(0.5)),
        ("0.5", Pattern(0.5)),
        (0, Pattern(0.0)),
        ("0.875", Pattern(0.875)),
        ("2:4", Pattern(0.5, 2, 4)),
        ("4:8", Pattern(0.5, 4, 8)),
        (" 1:4 ", Pattern(0.75, 1, 4)),
    ],
)
def test_parse_pattern_accepts(value, expected) -> None:
    assert parse_pattern(value) == expected


@pytest.mark.parametrize("value", [1.0, -0.1, "4:2", "2:2", "0:4", "abc", "2:4:8", "1", "nan", "a:b", True])
def test_parse_pattern_rejects_with_clear_message(value) -> None:
    with pytest.raises(ValueError) as info:
        parse_pattern(value)
    message = str(info.value)
    assert repr(value) in message
    assert "[0, 1)" in message and "2:4" in message


def test_pattern_str_and_flags() -> None:
    assert str(parse_pattern(0.5)) == "0.5" and not parse_pattern(0.5).is_nm
    assert str(parse_pattern("2:4")) == "2:4" and parse_pattern("2:4").is_nm
    with pytest.raises(ValueError, match="1 - n/m"):
        Pattern(0.3, 2, 4)
    with pytest.raises(ValueError, match="both n and m"):
        Pattern(0.5, 2, None)


def test_num_to_prune_rounding() -> None:
    assert num_to_prune(100, 0.5) == 50
    assert num_to_prune(13 * 37, 0.5) == 240  # 240.5 -> banker's rounding to even
    assert num_to_prune(7, 0.0) == 0
    assert num_to_prune(3, 0.999) == 3


# --------------------------------------------------------------------------------------------- masks


def test_topk_prune_mask_exact_and_tie_break_by_index() -> None:
    scores = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    keep = topk_prune_mask(scores, 2)
    assert keep.tolist() == [[True, False, False], [True, True, True]]
    with pytest.raises(ValueError, match="num_prune"):
        topk_prune_mask(scores, 7)


def test_rowwise_and_nm_masks() -> None:
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 5.0, 0.0]])
    assert rowwise_prune_mask(scores, 0.5).tolist() == [[True, True, True, False, False, False, True, False]]
    assert nm_prune_mask(scores, 2, 4).tolist() == [[True, True, False, False, False, True, True, False]]
    with pytest.raises(ValueError, match=r"\(3, 10\)"):
        nm_prune_mask(torch.zeros(3, 10), 2, 4)


def test_split_prune_counts_sum_exactly() -> None:
    for sizes, s in [([37] * 13, 0.5), ([208, 208, 65], 0.75), ([5, 5, 5], 0.875)]:
        counts = split_prune_counts(sizes, s)
        assert sum(counts) == num_to_prune(sum(sizes), s)
        assert all(abs(c - s * z) <= 1 and 0 <= c <= z for c, z in zip(counts, sizes, strict=True))


def test_rowwise_exact_total() -> None:
    scores = torch.rand(13, 37, generator=_gen(1))
    keep = rowwise_prune_mask(scores, 0.5, exact_total=True)
    assert int((~keep).sum()) == num_to_prune(13 * 37, 0.5)
    per_row = (~keep).sum(1)
    assert int(per_row.max() - per_row.min()) <= 1


# --------------------------------------------------------------------------------------------- statistics


def test_accumulate_xtx_running_mean_matches_full_batch() -> None:
    g = _gen(2)
    X = torch.randn(2, 30, 8, generator=g)  # leading dims are flattened
    acc, n = None, 0
    for chunk in (X[:1], X[1:, :7], X[1:, 7:]):
        acc, n = accumulate_xtx(acc, chunk, n)
    flat = X.reshape(-1, 8)
    assert n == 60
    _assert_close(acc, 2.0 / 60 * flat.T @ flat, rtol=1e-5, atol=1e-5)
    assert acc.dtype == torch.float32


@pytest.mark.parametrize(("d", "block"), [(64, 16), (100, 32), (96, 40), (640, None), (20, None)])
def test_gram_is_the_symmetric_product(d: int, block: int | None) -> None:
    """The striped upper-triangle product equals x.T @ x (mirrored), whatever the stripe width."""
    from robustprune.pruning.hessian import gram

    x = torch.randn(70, d, generator=_gen(d))
    g = gram(x, block)
    assert torch.equal(g, g.T)
    _assert_close(g, x.T @ x, rtol=1e-5, atol=1e-4)


def test_accumulate_cross_and_identity_with_h_pruned() -> None:
    g = _gen(3)
    X = torch.randn(40, 6, generator=g)
    Xt = X + 0.1 * torch.randn(40, 6, generator=g)
    C, n = accumulate_cross(None, X[:25], Xt[:25], 0)
    C, n = accumulate_cross(C, X[25:], Xt[25:], n)
    Hp, _ = accumulate_xtx(None, Xt, 0)
    _assert_close(C + Hp, 2.0 / 40 * X.T @ Xt, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="aligned"):
        accumulate_cross(None, X, Xt[:3], 0)


def test_output_and_target_error_match_direct_computation() -> None:
    W, X, H = _layer(8, 16, tokens=64)
    g = _gen(4)
    Xt = X + 0.2 * torch.randn(X.shape, generator=g)
    W_hat = W * (torch.rand(W.shape, generator=g) > 0.5)
    direct = float(((W - W_hat) @ X.T).square().sum() / (W @ X.T).square().sum())
    assert output_error(W, W_hat, H) == pytest.approx(direct, rel=1e-4)
    Hp, _ = accumulate_xtx(None, Xt, 0)
    C, _ = accumulate_cross(None, X, Xt, 0)
    direct_t = float((X @ W.T - Xt @ W_hat.T).square().sum() / (X @ W.T).square().sum())
    assert target_error(W, W_hat, H, Hp, C) == pytest.approx(direct_t, rel=1e-4)


# --------------------------------------------------------------------------------------------- sparsity


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.875])
@pytest.mark.parametrize("shape", [(16, 32), (13, 37), (32, 64)])
def test_exact_unstructured_sparsity(method: str, sparsity: float, shape: tuple[int, int]) -> None:
    W, _, H = _layer(*shape)
    result = _prune(method, W, H, Pattern(sparsity))
    expected = num_to_prune(W.numel(), sparsity)
    assert int((~result.mask).sum()) == expected
    assert bool((result.weight[~result.mask] == 0).all())
    assert result.weight.shape == W.shape and result.mask.dtype == torch.bool


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4"])
def test_nm_holds_in_every_group(method: str, pattern: str) -> None:
    pat = parse_pattern(pattern)
    W, _, H = _layer(16, 64)
    result = _prune(method, W, H, pat)
    _assert_nm(result.weight, result.mask, pat.n, pat.m)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "rakp"])
def test_nm_rejects_bad_column_count(method: str) -> None:
    W, _, H = _layer(4, 10)
    with pytest.raises(ValueError, match=r"\(4, 10\)"):
        _prune(method, W, H, parse_pattern("2:4"))


def test_sparsegpt_rejects_block_size_not_multiple_of_m() -> None:
    W, _, H = _layer(4, 16)
    with pytest.raises(ValueError, match="block_size"):
        sparsegpt_prune(W, H, parse_pattern("4:8"), block_size=12)


# --------------------------------------------------------------------------------------------- quality


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparsegpt_beats_magnitude_and_wanda(pattern: str, seed: int) -> None:
    W, _, H = _layer(32, 64, seed=seed)
    pat = parse_pattern(pattern)
    err = {m: output_error(W, _prune(m, W, H, pat).weight, H) for m in ("magnitude", "wanda", "sparsegpt")}
    assert err["sparsegpt"] <= err["magnitude"]
    assert err["sparsegpt"] <= err["wanda"]


def _reference_fasterprune(
    W: torch.Tensor,
    H: torch.Tensor,
    sparsity: float,
    prunen: int,
    prunem: int,
    blocksize: int,
    percdamp: float,
) -> torch.Tensor:
    """Line-by-line transcription of IST-DASLab/sparsegpt ``SparseGPT.fasterprune`` (both branches:
    ``prunen == 0`` is the unstructured one, which thresholds each block at its ``sparsity`` quantile)."""
    W = W.clone().float()
    H = H.clone()
    columns = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1) == 1
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = (
                    W1[:, i : (i + prunem)] ** 2 / (torch.diag(Hinv1)[i : (i + prunem)].reshape((1, -1))) ** 2
                )
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def test_sparsegpt_matches_reference_implementation_nm() -> None:
    W, _, H = _layer(16, 64, seed=5)
    ours = sparsegpt_prune(W, H, parse_pattern("2:4"), block_size=BLOCK, dampening=0.01)
    ref = _reference_fasterprune(W, H, 0.0, prunen=2, prunem=4, blocksize=BLOCK, percdamp=0.01)
    assert torch.equal(ours.mask, ref != 0)
    _assert_close(ours.weight, ref, rtol=1e-4, atol=1e-5)
    assert ours.damp == pytest.approx(0.01)


@pytest.mark.parametrize(("sparsity", "seed"), [(0.5, 5), (0.75, 6), (0.875, 7)])
def test_sparsegpt_matches_reference_implementation_unstructured(sparsity: float, seed: int) -> None:
    """The reference prunes ``int(s · numel) + 1`` weights per column block (``tmp <= thresh``); ours prunes
    exactly ``s · numel`` (16 x 16 blocks: 256 weights, so an integer for these s). With the reference run at
    ``s - 1/256`` both prune the same count; then masks and weights must agree."""
    W, _, H = _layer(16, 64, seed=seed)
    ours = sparsegpt_prune(W, H, Pattern(sparsity), block_size=BLOCK, dampening=0.01)
    ref = _reference_fasterprune(W, H, sparsity - 1 / 256, prunen=0, prunem=0, blocksize=BLOCK, percdamp=0.01)
    assert int((~ours.mask).sum()) == round(sparsity * W.numel())
    assert torch.equal(ours.mask, ref != 0)
    _assert_close(ours.weight, ref, rtol=1e-4, atol=1e-5)


def test_sparsegpt_sparsity_zero_is_identity() -> None:
    W, _, H = _layer(16, 32)
    result = sparsegpt_prune(W, H, Pattern(0.0), block_size=BLOCK)
    assert torch.equal(result.weight, W)
    assert bool(result.mask.all()) and result.damp is None


def test_sparsegpt_does_not_modify_inputs() -> None:
    W, _, H = _layer(16, 32)
    H[3, :] = 0
    H[:, 3] = 0
    W0, H0 = W.clone(), H.clone()
    sparsegpt_prune(W, H, Pattern(0.5), block_size=BLOCK)
    assert torch.equal(W, W0) and torch.equal(H, H0)


# --------------------------------------------------------------------------------------------- RAKP


def _two_streams(noise: float, seed: int = 0, d_out: int = 32, d_in: int = 64, tokens: int = 512):
    g = _gen(seed)
    W = torch.randn(d_out, d_in, generator=g)
    X = torch.randn(tokens, d_in, generator=g) @ (torch.randn(d_in, d_in, generator=g) / d_in**0.5)
    Xt = X + noise * X.std() * torch.randn(tokens, d_in, generator=g)
    H_dense, _ = accumulate_xtx(None, X, 0)
    H_pruned, _ = accumulate_xtx(None, Xt, 0)
    cross, _ = accumulate_cross(None, X, Xt, 0)
    return W, X, Xt, H_dense, H_pruned, cross


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
def test_rakp_with_identical_streams_equals_sparsegpt(pattern: str) -> None:
    W, X, _, _, _, _ = _two_streams(0.0)
    H, _ = accumulate_xtx(None, X, 0)
    cross, _ = accumulate_cross(None, X, X, 0)
    assert not bool(cross.any())
    assert not bool(rakp_correction(W, H, cross, ridge=0.1).any())
    assert not bool(rakp_correction(W, H, cross, ridge=0.0).any())
    pat = parse_pattern(pattern)
    ref = sparsegpt_prune(W, H, pat, block_size=BLOCK)
    for c in (cross, None):
        got = rakp_prune(W, H, c, pat, block_size=BLOCK)
        assert torch.equal(got.weight, ref.weight) and torch.equal(got.mask, ref.mask)
        assert got.delta_norm == 0.0
    _, _, _, _, Hp, real_cross = _two_streams(0.3)
    got = rakp_prune(W, Hp, real_cross, pat, alpha=0.0, block_size=BLOCK)
    assert torch.equal(got.weight, sparsegpt_prune(W, Hp, pat, block_size=BLOCK).weight)


def test_rakp_full_correction_is_the_least_squares_fit() -> None:
    """alpha=1, ridge=0: W* = W + Δ minimises ||XWᵀ - X̃W*ᵀ||², so it beats W itself and any perturbation."""
    W, X, Xt, Hd, Hp, C = _two_streams(0.3, seed=1)
    W_star = W + rakp_correction(W, Hp, C, ridge=0.0)
    lstsq = torch.linalg.lstsq(Xt.double(), (X @ W.T).double()).solution.T.float()
    _assert_close(W_star, lstsq, rtol=1e-3, atol=1e-3)
    best = target_error(W, W_star, Hd, Hp, C)
    assert best < target_error(W, W, Hd, Hp, C)
    g = _gen(9)
    assert best < target_error(W, W_star + 0.01 * torch.randn(W.shape, generator=g), Hd, Hp, C)


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rakp_lowers_target_error_on_shifted_inputs(pattern: str, seed: int) -> None:
    """With a real input shift (X̃ = X + 30 % noise) rectification beats plain SparseGPT on the dense target.

    On random data the gain is only reliable when the input shift is comparable to the pruning error: at
    5 % noise RAKP wins ~60 % of seeds, at 20-50 % noise it won 50/50 seeds for alpha in {0.25, 1}.
    """
    W, _, _, Hd, Hp, C = _two_streams(0.3, seed=seed)
    pat = parse_pattern(pattern)
    base = sparsegpt_prune(W, Hp, pat, block_size=BLOCK)
    rect = rakp_prune(W, Hp, C, pat, alpha=0.25, block_size=BLOCK)
    assert target_error(W, rect.weight, Hd, Hp, C) < target_error(W, base.weight, Hd, Hp, C)
    assert 0.0 < rect.delta_norm < 1.0
    assert int((~rect.mask).sum()) == int((~base.mask).sum())


def test_rakp_correction_dead_inputs_give_zero_columns() -> None:
    W, X, Xt, _, _, _ = _two_streams(0.3, d_in=16, d_out=8, tokens=64)
    Xt[:, 5] = 0
    Hp, _ = accumulate_xtx(None, Xt, 0)
    C, _ = accumulate_cross(None, X, Xt, 0)
    for ridge in (0.0, 0.1):
        delta = rakp_correction(W, Hp, C, ridge=ridge)
        assert bool(torch.isfinite(delta).all())
        assert not bool(delta[:, 5].any())


# --------------------------------------------------------------------------------------------- degenerate H


def _degenerate_layer(d_out: int = 16, d_in: int = 32):
    g = _gen(6)
    W = torch.randn(d_out, d_in, generator=g)
    X = torch.randn(128, d_in, generator=g)
    X[:, 1] = X[:, 0]  # duplicated features -> singular H
    X[:, 9] = X[:, 8]
    X[:, 4] = 0  # dead inputs
    X[:, 20] = 0
    H, _ = accumulate_xtx(None, X, 0)
    Xt = X + 0.1 * torch.randn(X.shape, generator=g)
    Xt[:, 4] = 0
    Xt[:, 20] = 0
    Xt[:, 1] = Xt[:, 0]
    Hp, _ = accumulate_xtx(None, Xt, 0)
    C, _ = accumulate_cross(None, X, Xt, 0)
    return W, H, Hp, C


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["0.5", "0.75", "2:4"])
def test_singular_hessian_prunes_cleanly(method: str, pattern: str) -> None:
    W, H, Hp, C = _degenerate_layer()
    pat = parse_pattern(pattern)
    if method == "rakp":
        result = prune_weight(method, W, pat, Hp, C, block_size=BLOCK, ridge=0.0)
    else:
        result = _prune(method, W, H, pat)
    assert bool(torch.isfinite(result.weight).all())
    if pat.is_nm:
        _assert_nm(result.weight, result.mask, pat.n, pat.m)
    else:
        assert int((~result.mask).sum()) == num_to_prune(W.numel(), pat.sparsity)
    if method in ("sparsegpt", "rakp"):
        assert not bool(result.weight[:, 4].any()) and not bool(result.weight[:, 20].any())


def test_dampen_fixes_dead_inputs() -> None:
    H = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    Hd = dampen(H, 0.1)
    _assert_close(Hd, torch.tensor([[2.15, 0.0], [0.0, 1.15]]))
    assert H[1, 1] == 0  # input untouched


def test_inverse_cholesky_upper_is_factor_of_inverse() -> None:
    _, _, H = _layer(4, 16)
    U, damp = inverse_cholesky_upper(H, 0.01)
    assert damp == 0.01
    assert torch.equal(U, torch.triu(U))
    _assert_close(U.T @ U, torch.linalg.inv(dampen(H, 0.01)), rtol=1e-3, atol=1e-3)


def test_inverse_cholesky_upper_raises_dampening_on_indefinite(caplog: pytest.LogCaptureFixture) -> None:
    H = torch.tensor([[1.0, 3.0], [3.0, 1.0]])  # eigenvalues 4 and -2: needs dampening > 2
    with caplog.at_level(logging.WARNING, logger="robustprune.pruning.hessian"):
        U, damp = inverse_cholesky_upper(H, 0.01)
    assert damp == pytest.approx(10.0)  # 0.01 -> 0.1 -> 1 -> 10
    assert bool(torch.isfinite(U).all())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and "0.01" in warnings[0].getMessage() and "0.1" in warnings[0].getMessage()
    with pytest.raises(ValueError, match="failed 2 times"):
        inverse_cholesky_upper(H, 0.01, max_tries=2)
    with pytest.raises(ValueError, match="NaN"):
        inverse_cholesky_upper(torch.full((2, 2), float("nan")), 0.01)


# --------------------------------------------------------------------------------------------- misc


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
def test_deterministic(method: str, pattern: str) -> None:
    W, _, H = _layer(16, 32)
    W = W.round(decimals=1)  # many ties
    pat = parse_pattern(pattern)
    a, b = _prune(method, W, H, pat), _prune(method, W, H, pat)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.weight, b.weight)


def test_prune_weight_dispatch_errors() -> None:
    W, _, H = _layer(4, 8)
    with pytest.raises(ValueError, match="unknown pruning method 'obs'.*magnitude, wanda, sparsegpt, rakp"):
        prune_weight("obs", W, Pattern(0.5), H)
    for method in ("wanda", "sparsegpt", "rakp"):
        with pytest.raises(ValueError, match="needs the layer Hessian"):
            prune_weight(method, W, Pattern(0.5))
    assert prune_weight("magnitude", W, Pattern(0.5)).damp is None
    assert torch.equal(
        prune_weight("magnitude", W, Pattern(0.5)).weight, magnitude_prune(W, Pattern(0.5)).weight
    )
    assert torch.equal(prune_weight("wanda", W, Pattern(0.5), H).mask, wanda_prune(W, H, Pattern(0.5)).mask)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_and_device_preserved(method: str, dtype: torch.dtype) -> None:
    W, X, H = _layer(16, 32)
    Xt = X + 0.1
    Hp, _ = accumulate_xtx(None, Xt.to(dtype), 0)
    C, _ = accumulate_cross(None, X.to(dtype), Xt.to(dtype), 0)
    assert Hp.dtype == torch.float32 and C.dtype == torch.float32
    Wl = W.to(dtype)
    result = prune_weight(method, Wl, Pattern(0.5), Hp if method == "rakp" else H, C, block_size=BLOCK)
    assert result.weight.dtype == dtype and result.weight.device == Wl.device
    assert result.mask.dtype == torch.bool and result.mask.shape == Wl.shape
    assert bool(torch.isfinite(result.weight.float()).all())
    assert int((~result.mask).sum()) == num_to_prune(W.numel(), 0.5)
    if method == "sparsegpt":  # float32 math inside: same result as pruning the upcast weight
        ref = sparsegpt_prune(Wl.float(), H, Pattern(0.5), block_size=BLOCK)
        assert torch.equal(result.mask, ref.mask)
        assert torch.equal(result.weight, ref.weight.to(dtype))


# ------------------------------------------------------------- kill the mutants mutmut left (make mutation)


def test_prune_weight_defaults_are_the_kernels_defaults() -> None:
    """``prune_weight``'s defaults (block 128, α 1, ridge 1e-4, dampening 0.01) are the kernels' own: the
    dispatcher gives bitwise the kernel's result, and block 128 is a multiple of M for 2:4 (and, unstructured,
    decides which weights each block prunes)."""
    W, X, H = _layer(8, 256, tokens=300)
    Xt = X + 0.1 * torch.randn(X.shape, generator=_gen(9))
    Hp, _ = accumulate_xtx(None, Xt, 0)
    C, _ = accumulate_cross(None, X, Xt, 0)
    for pat in (Pattern(0.5), Pattern(0.5, 2, 4)):
        got = prune_weight("sparsegpt", W, pat, H)
        ref = sparsegpt_prune(W, H, pat, block_size=128, dampening=0.01)
        assert torch.equal(got.weight, ref.weight) and torch.equal(got.mask, ref.mask)
        got = prune_weight("rakp", W, pat, Hp, C)
        ref = rakp_prune(W, Hp, C, pat, alpha=1.0, ridge=1e-4, block_size=128, dampening=0.01)
        assert torch.equal(got.weight, ref.weight) and got.delta_norm == ref.delta_norm > 0
        assert torch.equal(rakp_prune(W, Hp, C, pat).weight, ref.weight)


def test_prune_weight_forwards_every_option_and_the_cross_term() -> None:
    """Each keyword reaches the kernel: a non-default block, dampening, α and ridge each change the result,
    and RAKP with a cross term is not SparseGPT on H̃ (the cross term is passed on, not dropped)."""
    W, X, H = _layer(8, 32, tokens=100)
    Xt = X + 0.2 * torch.randn(X.shape, generator=_gen(8))
    Hp, _ = accumulate_xtx(None, Xt, 0)
    C, _ = accumulate_cross(None, X, Xt, 0)
    p = Pattern(0.5)
    opts = {"block_size": 8, "dampening": 0.5}
    got = prune_weight("sparsegpt", W, p, H, **opts)
    ref = sparsegpt_prune(W, H, p, **opts)
    assert torch.equal(got.weight, ref.weight) and got.damp == 0.5
    assert not torch.equal(ref.weight, sparsegpt_prune(W, H, p, block_size=8).weight)  # dampening matters
    rakp_opts = {"alpha": 0.5, "ridge": 0.3, "block_size": 8, "dampening": 0.5}
    got = prune_weight("rakp", W, p, Hp, C, **rakp_opts)
    ref = rakp_prune(W, Hp, C, p, **rakp_opts)
    assert torch.equal(got.weight, ref.weight) and got.damp == 0.5 and got.delta_norm == ref.delta_norm
    for key, default in (("alpha", 1.0), ("ridge", 1e-4), ("block_size", 128), ("dampening", 0.01)):
        other = rakp_prune(W, Hp, C, p, **{**rakp_opts, key: default})
        assert not torch.equal(other.weight, ref.weight), f"{key} does not change the result"
    assert not torch.equal(ref.weight, sparsegpt_prune(W, Hp, p, block_size=8, dampening=0.5).weight)


def test_one_token_and_empty_batches_update_the_hessian_exactly() -> None:
    """A batch of one token (also given as a bare ``(d_in,)`` vector) adds 2·xxᵀ; an empty batch changes
    nothing and a fresh accumulator fed only an empty batch is the ``d_in × d_in`` zero matrix."""
    x = torch.tensor([1.0, -2.0, 0.5])
    for batch in (x, x.unsqueeze(0)):
        acc, n = accumulate_xtx(None, batch, 0)
        assert n == 1 and torch.equal(acc, 2.0 * torch.outer(x, x))
    acc, n = accumulate_xtx(None, torch.empty(0, 3), 0)
    assert n == 0 and acc.shape == (3, 3) and acc.dtype == torch.float32 and not acc.any()
    two, n = accumulate_xtx(acc, x, 0)
    two, n = accumulate_xtx(two, torch.empty(0, 3), n)
    two, n = accumulate_xtx(two, 2 * x, n)
    assert n == 2 and torch.allclose(two, (2.0 * torch.outer(x, x) + 2.0 * torch.outer(2 * x, 2 * x)) / 2)


@pytest.mark.parametrize("d", [1, 64, 511, 512, 520, 576, 640, 1000, 1023, 1024, 1536, 3072])
def test_gram_stripes_are_two_below_1024_and_384_wide_above(d: int) -> None:
    """The stripe width of :func:`gram` (its FLOP saving, bench_gram.json): a plain product below d = 512;
    from 512 to 1023 exactly two stripes of a multiple of 32 columns; 384 columns from 1024 on."""
    from robustprune.pruning.hessian import _gram_block

    block = _gram_block(d)
    if d < 512:
        assert block == 0
    elif d < 1024:
        assert block % 32 == 0 and block < d <= 2 * block and block == -(-d // 64) * 32
    else:
        assert block == 384


def test_dampen_refuses_a_non_square_matrix() -> None:
    for bad in (torch.ones(3, 4), torch.ones(4, 3), torch.ones(2, 2, 2)):
        with pytest.raises(ValueError, match="square"):
            dampen(bad, 0.01)


def test_inverse_cholesky_upper_tries_five_times_by_default(caplog: pytest.LogCaptureFixture) -> None:
    """A negative definite H fails at every dampening: 5 attempts by default (0.01 … 100, 4 warnings),
    exactly ``max_tries`` otherwise, and one try (no retry, no warning) is allowed."""
    H = -torch.eye(3)
    with (
        caplog.at_level(logging.WARNING, logger="robustprune.pruning.hessian"),
        pytest.raises(ValueError, match=r"failed 5 times, last with dampening 100 "),
    ):
        inverse_cholesky_upper(H, 0.01)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="robustprune.pruning.hessian"),
        pytest.raises(ValueError, match=r"failed 1 times, last with dampening 0.01 "),
    ):
        inverse_cholesky_upper(H, 0.01, max_tries=1)
    assert not caplog.records
    U, damp = inverse_cholesky_upper(torch.eye(3), 0.01, max_tries=1)
    assert damp == 0.01 and torch.allclose(U.T @ U, torch.eye(3) / 1.01)


def test_inverse_cholesky_upper_from_zero_dampening_starts_at_1e4() -> None:
    """A singular PSD H (two identical inputs) with dampening 0 fails once; the retry uses exactly 1e-4
    (0 · 10 would stay 0 for ever)."""
    H = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    U, damp = inverse_cholesky_upper(H, 0.0)
    assert damp == 1e-4 and bool(torch.isfinite(U).all())
    assert torch.allclose(U.T @ U @ dampen(H, 1e-4), torch.eye(3), atol=1e-2)


def test_inverse_cholesky_upper_retries_when_the_inverse_factorisation_fails(monkeypatch) -> None:
    """If the second Cholesky (of H⁻¹) reports failure, its finite-looking factor is NOT returned: the
    dampening is raised and the solve retried."""
    real = torch.linalg.cholesky_ex
    calls = {"upper": 0}

    def flaky(A, *, upper=False, **kw):
        L, info = real(A, upper=upper, **kw)
        if upper:
            calls["upper"] += 1
            if calls["upper"] == 1:
                return L, torch.ones_like(info)
        return L, info

    monkeypatch.setattr(torch.linalg, "cholesky_ex", flaky)
    _, damp = inverse_cholesky_upper(torch.eye(3), 0.01)
    assert damp == pytest.approx(0.1) and calls["upper"] == 2


def test_sparsegpt_defaults_and_the_mask_at_sparsity_zero() -> None:
    """The default block (128) is a multiple of M, so 2:4 runs with the defaults; sparsity 0 returns a
    bool keep-all mask (True = keep), like every other sparsity."""
    W, _, H = _layer(4, 256, tokens=300)
    res = sparsegpt_prune(W, H, Pattern(0.5, 2, 4))
    _assert_nm(res.weight, res.mask, 2, 4)
    assert torch.equal(res.weight, sparsegpt_prune(W, H, Pattern(0.5, 2, 4), block_size=128).weight)
    zero = sparsegpt_prune(W, H, Pattern(0.0))
    assert zero.mask.dtype == torch.bool and bool(zero.mask.all()) and torch.equal(zero.weight, W)


def test_sparsegpt_works_in_float32_whatever_the_dtype_of_h() -> None:
    """H is cast to float32 first: a float64 H gives the float32 H's result, including an input whose
    H_jj underflows to 0 in float32 (dead, its weight column zeroed)."""
    W, _, H = _layer(4, 16, tokens=60)
    H64 = H.double()
    H64[5, :] = 0.0
    H64[:, 5] = 0.0
    H64[5, 5] = 1e-60  # 0 in float32
    got = sparsegpt_prune(W, H64, Pattern(0.5), block_size=8)
    ref = sparsegpt_prune(W, H64.float(), Pattern(0.5), block_size=8)
    assert torch.equal(got.weight, ref.weight) and torch.equal(got.mask, ref.mask)
    assert not bool(got.weight[:, 5].any())
