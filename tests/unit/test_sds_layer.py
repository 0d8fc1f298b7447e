"""SDS's layer mathematics against transcriptions: Adam (torch's), ISTA/FISTA (Beck & Teboulle 2009), the
penalty weights and block soft-threshold of the module doc, the statistics, the report.

Each test names what it protects; the mutation run (``benchmarks/mutation.py``) plants the bugs.
"""

from __future__ import annotations

import math

import pytest
import torch

from robustprune.sds_layer import (
    LayerStats,
    SDSOptions,
    _adam,
    _fit_report,
    _group_soft_threshold,
    adjust_layer,
    fit_layer,
    lipschitz,
    penalty_weights,
    quadratic_stats,
    reactivate_layer,
    relative_error,
)


def _problem(d_out: int = 3, d_in: int = 5, n: int = 40, seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d_in, generator=g) * torch.linspace(0.3, 2.0, d_in)
    W = torch.randn(d_out, d_in, generator=g) * scale
    return X, W, quadratic_stats(X, X @ W.T)


def _near_degenerate() -> torch.Tensor:
    """PSD with two close top eigenvalues: power iteration's result depends on its start vector."""
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(4)))
    return (q * torch.tensor([1.0, 0.999, 0.998, 0.5, 0.2, 0.1])) @ q.T


# ---------------------------------------------------------------------------------------------- statistics
def test_quadratic_stats_flatten_tokens_and_check_counts():
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 5, generator=g)
    s = quadratic_stats(X, Y)
    Xf, Yf = X.reshape(6, 4), Y.reshape(6, 5)
    assert torch.allclose(s.H, 2 / 6 * Xf.T @ Xf) and torch.allclose(s.B, 2 / 6 * Yf.T @ Xf)
    assert s.y_sq == pytest.approx(float(Yf.square().sum()) / 6)
    one = quadratic_stats(torch.ones(1, 2), torch.ones(1, 1))  # a single token is enough
    assert torch.allclose(one.H, torch.full((2, 2), 2.0))
    with pytest.raises(ValueError, match="token count"):
        quadratic_stats(torch.ones(3, 2), torch.ones(4, 1))
    with pytest.raises(ValueError, match="token count"):
        quadratic_stats(torch.ones(0, 2), torch.ones(0, 1))


def test_relative_error_of_a_zero_target_is_zero():
    stats = LayerStats(H=torch.eye(2), B=torch.zeros(1, 2), y_sq=0.0)
    assert relative_error(torch.ones(1, 2), stats) == 0.0
    _, W, s = _problem()
    assert relative_error(torch.zeros_like(W), s) == pytest.approx(1.0)
    assert relative_error(W, s) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------------ lipschitz
def test_lipschitz_of_a_zero_matrix_is_one_and_the_seed_is_the_start_vector():
    assert lipschitz(torch.zeros(3, 3)) == 1.0
    H = _near_degenerate()
    assert lipschitz(H) == lipschitz(H, iters=64, seed=0)  # documented defaults: 64 iterations from seed 0
    assert lipschitz(H, seed=1) != lipschitz(H, seed=0)
    assert lipschitz(H, iters=65) != lipschitz(H)
    assert 0.998 <= lipschitz(H) / 1.05 <= 1.0 + 1e-6  # from below, within the top eigenvalues' cluster
    assert lipschitz(torch.diag(torch.tensor([1.0, 2.0, 5.0]))) == pytest.approx(5.25, rel=1e-5)


# ------------------------------------------------------------------------------------------------- penalty
def test_penalty_weights_transcribe_lambda_c_sqrt_h():
    """λ · c_i · √H_jj on pruned entries, 0 on kept ones; c_i = mean over row i's kept entries of
    |W_ij| √H_jj; a row with nothing kept uses the layer's mean kept score."""
    W = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[True, True, False], [False, True, False], [False, False, False]])
    H = torch.diag(torch.tensor([0.25, 0.64, 0.09]))  # √H_jj < 1: 0.5, 0.8, 0.3
    s = [0.5, 0.8, 0.3]
    c0 = (1.0 * 0.5 + 2.0 * 0.8) / 2
    c1 = 5.0 * 0.8  # one kept entry
    layer = (1.0 * 0.5 + 2.0 * 0.8 + 5.0 * 0.8) / 3
    want = torch.tensor(
        [[0.0, 0.0, 0.1 * c0 * s[2]], [0.1 * c1 * s[0], 0.0, 0.1 * c1 * s[2]], [0.1 * layer * x for x in s]]
    )
    assert torch.allclose(penalty_weights(W, mask, H, 0.1), want)


def test_group_soft_threshold_transcribes_the_block_prox_with_a_partial_last_group():
    """Groups of ``size`` consecutive columns (the last one shorter), threshold √Σ t² over the group's pruned
    entries, only pruned entries shrunk by (1 − t_g / ‖W_{g∩P}‖)₊."""
    W = torch.tensor([[3.0, 4.0, 1.0, 2.0, 5.0], [0.3, 0.4, 0.5, 1.0, 2.0]])
    pruned = torch.tensor([[True, True, False, True, True], [True, True, True, False, False]])
    thresh = torch.where(pruned, torch.full_like(W, 0.6), torch.zeros_like(W))
    out = _group_soft_threshold(W, thresh, pruned, 4)
    want = W.clone()
    for r in range(2):
        for cols in ([0, 1, 2, 3], [4]):
            p = [c for c in cols if pruned[r, c]]
            if not p:
                continue
            t = math.sqrt(sum(float(thresh[r, c]) ** 2 for c in p))
            norm = math.sqrt(sum(float(W[r, c]) ** 2 for c in p))
            for c in p:
                want[r, c] = W[r, c] * max(0.0, 1 - t / norm)
    assert torch.allclose(out, want, atol=1e-6)
    assert out[1, :3].abs().sum() == 0  # the small group is zeroed exactly


# ------------------------------------------------------------------------------------------------ solvers
def _fista_reference(W0, stats, steps, lr, pen, fista=True, seed=0):
    """Beck & Teboulle (2009) eq. 4.1-4.3 with the weighted-L1 prox, in float64."""
    H, B = stats.H.double(), stats.B.double()
    eta = lr / lipschitz(stats.H, seed=seed)
    W = W0.double().clone()
    Z, t = W.clone(), 1.0
    for _ in range(steps):
        V = Z - eta * (Z @ H - B)
        W_next = V.sign() * (V.abs() - eta * pen.double()).clamp_min(0)
        if fista:
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            Z = W_next + ((t - 1) / t_next) * (W_next - W)
            t = t_next
        else:
            Z = W_next
        W = W_next
    return W.float()


@pytest.mark.parametrize("optimizer", ["fista", "ista"])
@pytest.mark.parametrize("steps", [1, 4])
def test_proximal_solvers_match_beck_and_teboulle(optimizer, steps):
    X, W, stats = _problem()
    mask = torch.rand(W.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    W0 = W * mask
    pen = penalty_weights(W0, mask, stats.H, 0.05)
    got = fit_layer(W0, stats, steps=steps, lr=0.9, optimizer=optimizer, penalty=pen)
    want = _fista_reference(W0, stats, steps, 0.9, pen, fista=optimizer == "fista")
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert fit_layer(W0, stats, steps=0, lr=0.9, optimizer=optimizer, penalty=pen).equal(W0)


def test_fit_layer_seed_reaches_the_step_size():
    """The power iteration's seed is fit_layer's ``seed`` (default 0), so two call sites with the same seed
    take the same step."""
    H = _near_degenerate()
    stats = LayerStats(H=H, B=torch.ones(2, 6), y_sq=1.0)
    W0 = torch.zeros(2, 6)
    default = fit_layer(W0, stats, steps=3, lr=1.0)
    assert torch.equal(default, fit_layer(W0, stats, steps=3, lr=1.0, seed=0))
    assert not torch.equal(default, fit_layer(W0, stats, steps=3, lr=1.0, seed=5))


def test_adam_is_torchs_adam_with_a_per_row_step_the_l1_subgradient_and_the_fixed_mask():
    """Kingma & Ba's Adam (β 0.9 / 0.999, bias-corrected, eps 1e-12) on ∇f + pen ⊙ sign(W), row i's step
    lr · RMS(W0 row i), entries outside ``free`` held at 0 — the same as torch.optim.Adam per row."""
    X, W, stats = _problem(scale=0.2)  # rows with RMS < 1
    W0 = W + 0.05 * torch.randn(W.shape, generator=torch.Generator().manual_seed(2))
    free = torch.rand(W.shape, generator=torch.Generator().manual_seed(3)) > 0.3
    pen = torch.rand(W.shape, generator=torch.Generator().manual_seed(4)) * 0.1
    got = _adam(W0.clone().masked_fill(~free, 0), stats.H, stats.B, 3, 0.5, pen, free)
    start = W0.clone().masked_fill(~free, 0)
    rows = [torch.nn.Parameter(start[i].clone()) for i in range(W.shape[0])]
    lrs = [0.5 * float(start[i].square().mean().sqrt()) for i in range(W.shape[0])]
    opt = torch.optim.Adam(
        [{"params": [p], "lr": lr} for p, lr in zip(rows, lrs, strict=True)], betas=(0.9, 0.999), eps=1e-12
    )
    for _ in range(3):
        Wc = torch.stack([p.detach() for p in rows])
        grad = Wc @ stats.H - stats.B + pen * Wc.sign()
        for i, p in enumerate(rows):
            p.grad = grad[i].clone()
        opt.step()
        with torch.no_grad():
            for i, p in enumerate(rows):
                p.masked_fill_(~free[i], 0)
    want = torch.stack([p.detach() for p in rows])
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()
    via = fit_layer(W0, stats, steps=3, lr=0.5, optimizer="adam", free=free, penalty=pen)
    assert torch.allclose(via, want, atol=1e-6)


def test_fit_layer_holds_non_free_entries_at_zero_from_the_start():
    _, W, stats = _problem()
    free = torch.zeros_like(W, dtype=torch.bool)
    free[:, :2] = True
    for steps in (0, 2):
        out = fit_layer(W, stats, steps=steps, lr=1.0, free=free)
        assert out[:, 2:].abs().sum() == 0 and (steps == 0) == torch.equal(out[:, :2], W[:, :2])


# ------------------------------------------------------------------------------------------- layer steps
def test_reactivate_layer_passes_its_options_and_reports():
    """The step uses the l1 prox unless ``regularizer`` is group, the options' seed and steps; the report
    carries the name, the steps and the elapsed seconds."""
    H = _near_degenerate()
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 6, generator=g)
    stats = LayerStats(H=H, B=W @ H, y_sq=float((W @ H * W).sum()) / 2)
    mask = torch.rand(3, 6, generator=g) > 0.5
    W0 = W * mask
    opts = SDSOptions(l1=0.2, steps=3, seed=7, regularizer="l1", group_size=3)
    got, rep = reactivate_layer(W0, mask, stats, opts, name="q")
    pen = penalty_weights(W0, mask, H, 0.2)
    assert torch.equal(got, fit_layer(W0, stats, steps=3, lr=1.0, penalty=pen, seed=7))
    group = fit_layer(W0, stats, steps=3, lr=1.0, penalty=pen, group_size=3, seed=7)
    assert not torch.allclose(got, group)
    assert (rep.name, rep.steps) == ("q", 3) and 0 <= rep.seconds < 60
    assert reactivate_layer(W0, mask, stats, opts)[1].name == ""
    no_pen, _ = reactivate_layer(W0, mask, stats, SDSOptions(l1=0.0, steps=3, seed=7))
    assert torch.equal(no_pen, fit_layer(W0, stats, steps=3, lr=1.0, seed=7))
    adj, rep2 = adjust_layer(
        W0, mask, stats, SDSOptions(final_adjust_steps=2, adjust_lr=0.5, seed=7), name="k"
    )
    assert torch.equal(adj, fit_layer(W0, stats, steps=2, lr=0.5, free=mask, seed=7))
    assert (rep2.name, rep2.steps) == ("k", 2) and adjust_layer(W0, mask, stats, SDSOptions())[1].name == ""


def test_fit_report_shares():
    stats = LayerStats(H=torch.eye(2), B=torch.tensor([[1.0, 0.0]]), y_sq=1.0)
    mask = torch.tensor([[True, False]])
    rep = _fit_report("x", torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), mask, stats, 5, 0.0)
    assert rep.reactivated == pytest.approx(4 / 5) and rep.zero_share == 0.0 and rep.steps == 5
    zero = _fit_report("x", torch.zeros(1, 2), torch.zeros(1, 2), mask, stats, 1, 0.0)
    assert zero.reactivated == 0.0 and zero.zero_share == 1.0
    none_pruned = _fit_report(
        "x", torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), stats, 1, 0.0
    )
    assert none_pruned.zero_share == 1.0


@pytest.mark.parametrize(
    "kw",
    [{"l1": -0.1}, {"steps": -1}, {"final_adjust_steps": -1}, {"group_size": 0}],
    ids=lambda k: next(iter(k)),
)
def test_options_refuse_each_negative_count(kw):
    with pytest.raises(ValueError, match="need l1 >= 0"):
        SDSOptions(**kw)


def test_options_allow_zero_steps():
    assert SDSOptions(steps=0, final_adjust_steps=0, l1=0.0, group_size=1).steps == 0


# ---------------------------------------------------------------------------- edges the mutation run found
def test_lipschitz_small_spectra_one_and_zero_iterations():
    """No floor at 1 (a spectrum below 1 keeps its scale); one iteration is 1.05 × the Rayleigh quotient of the
    seeded start vector; zero iterations give the 1e-30 floor (no estimate yet)."""
    H = torch.diag(torch.tensor([0.1, 0.2]))
    assert lipschitz(H) == pytest.approx(0.21, rel=1e-5)
    H3 = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
    v = torch.randn(3, generator=torch.Generator().manual_seed(0))
    assert lipschitz(H3, iters=1) == pytest.approx(1.05 * float(v @ H3 @ v) / float(v @ v), rel=1e-6)
    assert lipschitz(H3, iters=0) == 1e-30


def test_penalty_fallback_with_a_single_kept_weight_in_the_layer():
    W = torch.tensor([[2.0, 1.0], [4.0, 3.0]])
    mask = torch.tensor([[True, False], [False, False]])  # one kept weight; row 1 keeps nothing
    H = torch.eye(2)
    pen = penalty_weights(W, mask, H, 1.0)
    assert pen.tolist() == [[0.0, 2.0], [2.0, 2.0]]  # row 1 uses the layer mean kept score: 2 / 1


def test_small_targets_and_norms_are_not_treated_as_zero():
    stats = LayerStats(H=torch.eye(2) * 2, B=torch.tensor([[0.2, 0.0]]), y_sq=0.01)  # Y = 0.1 x_0 over N
    assert relative_error(torch.zeros(1, 2), stats) == pytest.approx(1.0)
    rep = _fit_report(
        "x", torch.zeros(1, 2), torch.tensor([[0.3, 0.4]]), torch.tensor([[True, False]]), stats, 1, 0.0
    )
    assert rep.reactivated == pytest.approx(0.8)  # ‖W_P‖ / ‖W‖ with ‖W‖ = 0.5


def test_adjust_layer_uses_the_options_optimizer():
    _, W, stats = _problem()
    mask = torch.rand(W.shape, generator=torch.Generator().manual_seed(5)) > 0.5
    opts = SDSOptions(optimizer="ista", final_adjust_steps=3, adjust_lr=1.0)
    got, _ = adjust_layer(W * mask, mask, stats, opts)
    assert torch.equal(got, fit_layer(W * mask, stats, steps=3, lr=1.0, optimizer="ista", free=mask))
    assert not torch.allclose(got, fit_layer(W * mask, stats, steps=3, lr=1.0, optimizer="fista", free=mask))
