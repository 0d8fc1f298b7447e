"""SDS (sparse-dense-sparse) on tiny layers and tiny random BERT / Llama models."""

from __future__ import annotations

import copy

import pytest
import torch

from robustprune.modeling import prunable_linears
from robustprune.pruning import Pattern
from robustprune.pruning.sequential import PruneOptions, prune_model
from robustprune.sds import (
    LayerStats,
    SDSOptions,
    adjust_layer,
    adjust_model,
    fit_layer,
    lipschitz,
    objective,
    quadratic_stats,
    reactivate_layer,
    reactivate_model,
)

TWO_FOUR = Pattern(sparsity=0.5, n=2, m=4)
HALF = Pattern(sparsity=0.5)


def _layer(seed: int = 0, d_out: int = 6, d_in: int = 12, tokens: int = 200):
    """A layer problem with shifted inputs: X̃ = X + noise, target Y = X W_dᵀ, a 2:4-pruned start."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(tokens, d_in, generator=g) * torch.linspace(0.2, 3.0, d_in)
    Xt = X + 0.3 * torch.randn(tokens, d_in, generator=g)
    W_d = torch.randn(d_out, d_in, generator=g)
    mask = (torch.rand(d_out, d_in, generator=g).reshape(d_out, -1, 4).argsort(-1).argsort(-1) >= 2).reshape(
        d_out, d_in
    )
    return Xt, X @ W_d.T, W_d, mask


def _batches(seed: int = 0, n: int = 4, length: int = 24):
    ids = torch.randint(0, 99, (n, length), generator=torch.Generator().manual_seed(seed))
    return [{"input_ids": ids[i : i + 1]} for i in range(n)]


def _prune_opts(method: str = "sparsegpt", pattern: Pattern = TWO_FOUR) -> PruneOptions:
    return PruneOptions(method=method, pattern=pattern, block_size=16)


def test_quadratic_stats_objective_matches_token_loss():
    Xt, Y, W_d, mask = _layer()
    stats = quadratic_stats(Xt, Y)
    W = W_d * mask
    direct = float((Xt @ W.T - Y).square().sum()) / Xt.shape[0]
    assert objective(W, stats) == pytest.approx(direct, rel=1e-5)
    assert objective(torch.zeros_like(W), stats) == pytest.approx(stats.y_sq)


def test_lipschitz_is_an_upper_bound_close_to_lambda_max():
    Xt, Y, _, _ = _layer()
    H = quadratic_stats(Xt, Y).H
    lam = float(torch.linalg.eigvalsh(H.double())[-1])
    assert lam <= lipschitz(H) <= 1.06 * lam


@pytest.mark.parametrize("optimizer", ["fista", "ista"])
def test_unregularised_reactivation_converges_to_least_squares(optimizer):
    """λ = 0 and enough steps: the least-squares fit of the dense outputs from the shifted inputs."""
    Xt, Y, W_d, mask = _layer()
    stats = quadratic_stats(Xt, Y)
    closed = torch.linalg.lstsq(Xt.double(), Y.double()).solution.T.float()
    steps = 3000 if optimizer == "fista" else 20000
    W, fit = reactivate_layer(W_d * mask, mask, stats, SDSOptions(l1=0.0, steps=steps, optimizer=optimizer))
    assert torch.allclose(W, closed, atol=1e-3, rtol=1e-3)
    assert fit.error_after < fit.error_before
    assert fit.error_after == pytest.approx(objective(closed, stats) / stats.y_sq, abs=1e-5)


def test_unregularised_reactivation_reproduces_dense_outputs_on_dense_inputs():
    """Same inputs on both streams (X̃ = X): the fit recovers the dense layer's outputs exactly."""
    Xt, _, W_d, mask = _layer()
    stats = quadratic_stats(Xt, Xt @ W_d.T)
    W, fit = reactivate_layer(W_d * mask, mask, stats, SDSOptions(l1=0.0, steps=3000))
    assert torch.allclose(Xt @ W.T, Xt @ W_d.T, atol=1e-3, rtol=1e-3)
    assert fit.error_after < 1e-8 < fit.error_before


def test_adam_decreases_the_objective():
    Xt, Y, W_d, mask = _layer()
    stats = quadratic_stats(Xt, Y)
    W, fit = reactivate_layer(
        W_d * mask, mask, stats, SDSOptions(l1=0.0, steps=200, lr=0.05, optimizer="adam")
    )
    assert fit.error_after < 0.5 * fit.error_before
    assert fit.reactivated > 0


@pytest.mark.parametrize("regularizer", ["l1", "group"])
def test_large_penalty_keeps_pruned_positions_at_zero(regularizer):
    Xt, Y, W_d, mask = _layer()
    stats = quadratic_stats(Xt, Y)
    start = W_d * mask
    free, _ = reactivate_layer(start, mask, stats, SDSOptions(l1=0.0, steps=300, regularizer=regularizer))
    mid, fit_mid = reactivate_layer(
        start, mask, stats, SDSOptions(l1=0.3, steps=300, regularizer=regularizer)
    )
    big, fit_big = reactivate_layer(
        start, mask, stats, SDSOptions(l1=1e3, steps=300, regularizer=regularizer)
    )
    assert float(free[~mask].abs().sum()) > float(mid[~mask].abs().sum()) > 0
    assert fit_big.zero_share == 1.0 and fit_big.reactivated == 0.0
    assert torch.equal(big[~mask], torch.zeros_like(big[~mask]))
    assert fit_big.error_after < fit_big.error_before  # the kept weights still adapt
    assert 0 < fit_mid.zero_share < 1
    if regularizer == "group":  # a group's pruned entries are zeroed together, or none of them
        zero = ((mid == 0) & ~mask).reshape(mask.shape[0], -1, 4).sum(-1)
        pruned = (~mask).reshape(mask.shape[0], -1, 4).sum(-1)
        assert bool(((zero == 0) | (zero == pruned)).all()) and bool((zero == pruned).any())


def test_penalty_is_only_on_previously_pruned_positions():
    Xt, Y, W_d, mask = _layer()
    stats = quadratic_stats(Xt, Y)
    W, _ = reactivate_layer(W_d * mask, mask, stats, SDSOptions(l1=1e3, steps=500))
    best = fit_layer(W_d * mask, stats, steps=500, lr=1.0, free=mask)  # the mask-fixed least squares
    assert torch.allclose(W, best, atol=1e-5)


def test_dense_init_starts_from_the_dense_weight():
    Xt, _, W_d, mask = _layer()
    stats = quadratic_stats(Xt, Xt @ W_d.T)
    W, fit = reactivate_layer(W_d, mask, stats, SDSOptions(l1=0.0, steps=5, init="dense"))
    assert fit.error_before == pytest.approx(0.0, abs=1e-9)
    assert torch.allclose(W, W_d, atol=1e-5)


def test_adjust_layer_keeps_the_mask_and_improves():
    Xt, Y, W_d, mask = _layer()
    stats = quadratic_stats(Xt, Y)
    W, fit = adjust_layer(W_d * mask, mask, stats, SDSOptions(final_adjust_steps=50))
    assert torch.equal(W[~mask], torch.zeros_like(W[~mask]))
    assert fit.error_after < fit.error_before


def test_options_are_validated():
    with pytest.raises(ValueError, match="optimizer"):
        SDSOptions(optimizer="sgd")
    with pytest.raises(ValueError, match="regularizer"):
        SDSOptions(regularizer="l2")
    with pytest.raises(ValueError, match="init"):
        SDSOptions(init="random")
    with pytest.raises(ValueError, match="l1"):
        SDSOptions(l1=-1.0)


@pytest.mark.parametrize(
    ("optimizer", "good", "bad", "blows"),
    [("ista", 1.9, 2.0, 2.5), ("fista", 1.0, 1.2, 1.5), ("adam", 1.0, 3.0, None)],
)
def test_lr_is_validated_per_optimiser(optimizer, good, bad, blows):
    """ISTA converges below lr 2 and FISTA up to 1 (steps of lr / λ_max(H), λ_max overestimated by 5 %);
    a little beyond, they diverge, so the options refuse those values, in SDSOptions and in params.yaml
    alike; Adam's lr is a step relative to the row's weights."""
    from robustprune.config import ConfigError, parse_params

    Xt, Y, W_d, mask = _layer()
    stats = quadratic_stats(Xt, Y)
    opts = SDSOptions(l1=0.1, steps=60, lr=good, optimizer=optimizer)
    _, fit = reactivate_layer(W_d * mask, mask, stats, opts)
    assert fit.error_after < 0.1 * fit.error_before
    if blows is not None:  # what the check prevents: the iteration blows up
        blown = fit_layer(W_d * mask, stats, steps=60, lr=blows, optimizer=optimizer)
        assert objective(blown, stats) > 100 * stats.y_sq  # 100 times worse than W = 0
    for key in ("lr", "adjust_lr"):
        with pytest.raises(ValueError, match=f"{key}: .*optimizer '{optimizer}'"):
            SDSOptions(optimizer=optimizer, **{key: bad})
        with pytest.raises(ConfigError, match=f"sds = .*{key} = .*need 0 < lr"):
            parse_params({"sds": {"optimizer": optimizer, key: bad}})


def test_only_the_proximal_optimisers_make_exact_zeros():
    Xt, Y, W_d, mask = _layer()
    stats = quadratic_stats(Xt, Y)
    shares = {
        opt: reactivate_layer(W_d * mask, mask, stats, SDSOptions(l1=0.3, steps=200, lr=lr, optimizer=opt))[1]
        for opt, lr in (("ista", 1.0), ("fista", 1.0), ("adam", 0.1))
    }
    assert shares["ista"].zero_share > 0 and shares["fista"].zero_share > 0
    assert shares["adam"].zero_share == 0.0


def _stats_from(W_d: torch.Tensor, Xt: torch.Tensor) -> LayerStats:
    return quadratic_stats(Xt, Xt @ W_d.T)


@pytest.mark.parametrize("fixture", ["llama", "bert"])
@pytest.mark.parametrize(("method", "pattern"), [("sparsegpt", TWO_FOUR), ("wanda", HALF)])
def test_sds_pipeline_keeps_exact_sparsity_and_nm(request, calib_batches, fixture, method, pattern):
    dense = request.getfixturevalue(fixture)
    batches = calib_batches if fixture == "bert" else _batches()
    model = copy.deepcopy(dense)
    first = prune_model(model, batches, _prune_opts(method, pattern))
    opts = SDSOptions(l1=0.1, steps=10, final_adjust_steps=5)
    reports = reactivate_model(model, dense, batches, first.masks, opts)
    assert len(reports) == 2 and all(r.layers for r in reports)
    assert any(f.reactivated > 0 for r in reports for f in r.layers)  # dense again
    second = prune_model(model, batches, _prune_opts(method, pattern))
    adjust_model(model, dense, batches, second.masks, opts)
    for name, lin in prunable_linears(model).items():
        w = lin.weight
        if pattern.is_nm:
            assert int((w != 0).reshape(w.shape[0], -1, 4).sum(-1).max()) <= 2, name
        assert int((w == 0).sum()) == round(0.5 * w.numel()), name
    for key, mask in second.masks.items():  # the adjustment never moves the re-prune's mask
        block, name = key.split(".", 1)
        lin = prunable_linears(model)[
            f"{next(k for k in prunable_linears(model) if k.endswith(f'.{block}.{name}'))}"
        ]
        assert torch.equal(lin.weight != 0, mask), key


def test_reactivation_without_penalty_recovers_the_dense_llama(llama):
    """λ = 0, many steps, full-rank inputs: every layer matches the dense model's outputs again."""
    batches = _batches(n=6, length=32)
    model = copy.deepcopy(llama)
    out = prune_model(model, batches, _prune_opts())
    reports = reactivate_model(model, llama, batches, out.masks, SDSOptions(l1=0.0, steps=3000))
    for r in reports:
        assert r.output_error < 1e-6, r.index
        for f in r.layers:
            assert f.error_after < 1e-6 < f.error_before, (r.index, f.name)
    ids = batches[0]["input_ids"]
    assert torch.allclose(model(ids).logits, llama(ids).logits, atol=1e-3)


def test_masks_by_full_name_or_from_zeros_are_equivalent(llama):
    batches = _batches()
    pruned = copy.deepcopy(llama)
    out = prune_model(pruned, batches, _prune_opts())
    full = {f"model.layers.{k}": v for k, v in out.masks.items()}
    opts = SDSOptions(l1=0.2, steps=8)
    a, b, c = copy.deepcopy(pruned), copy.deepcopy(pruned), copy.deepcopy(pruned)
    reactivate_model(a, llama, batches, out.masks, opts)
    reactivate_model(b, llama, batches, full, opts)
    reactivate_model(c, llama, batches, None, opts)
    for (k, va), vb, vc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb) and torch.equal(va, vc), k


def test_large_penalty_on_the_model_leaves_pruned_positions_zero(llama):
    batches = _batches()
    model = copy.deepcopy(llama)
    out = prune_model(model, batches, _prune_opts())
    reports = reactivate_model(model, llama, batches, out.masks, SDSOptions(l1=1e4, steps=20))
    assert all(f.zero_share == 1.0 for r in reports for f in r.layers)
    for name, lin in prunable_linears(model).items():
        key = name.split("layers.", 1)[1]
        assert torch.equal(lin.weight[~out.masks[key]], torch.zeros_like(lin.weight[~out.masks[key]])), name


def test_sds_is_deterministic(llama):
    batches = _batches()
    runs = []
    for _ in range(2):
        model = copy.deepcopy(llama)
        out = prune_model(model, batches, _prune_opts())
        reactivate_model(model, llama, batches, out.masks, SDSOptions(l1=0.1, steps=10, seed=3))
        second = prune_model(model, batches, _prune_opts())
        adjust_model(model, llama, batches, second.masks, SDSOptions(final_adjust_steps=5, seed=3))
        runs.append(model.state_dict())
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k
