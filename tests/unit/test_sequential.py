"""The layer-by-layer driver on tiny random BERT and Llama models."""

from __future__ import annotations

import copy

import pytest
import torch

from robustprune.modeling import (
    UnsupportedModelError,
    find_blocks,
    linear_groups,
    measured_sparsity,
    prunable_linears,
)
from robustprune.pruning import Pattern
from robustprune.pruning.sequential import PruneOptions, RakpOptions, prune_model
from tests.conftest import tiny_bert, tiny_llama

UNSTRUCTURED = Pattern(sparsity=0.5)
TWO_FOUR = Pattern(sparsity=0.5, n=2, m=4)
RAKP_FIELDS = set(RakpOptions.__dataclass_fields__)


def _opts(method: str, pattern: Pattern = UNSTRUCTURED, **kw) -> PruneOptions:
    """Options with block size 16; RAKP's own fields (alpha, ridge, ...) may be passed flat."""
    rakp = RakpOptions(**{k: kw.pop(k) for k in list(kw) if k in RAKP_FIELDS})
    return PruneOptions(method=method, pattern=pattern, block_size=16, rakp=rakp, **kw)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "rakp"])
@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.875])
def test_exact_sparsity_every_layer(bert, calib_batches, method, sparsity):
    prune_model(bert, calib_batches, _opts(method, Pattern(sparsity=sparsity)))
    for name, lin in prunable_linears(bert).items():
        zeros = int((lin.weight == 0).sum())
        assert zeros == round(sparsity * lin.weight.numel()), name
    assert measured_sparsity(bert) == pytest.approx(sparsity, abs=1e-3)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "rakp"])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
def test_nm_structure_every_group(bert, calib_batches, method, n, m):
    out = prune_model(bert, calib_batches, _opts(method, Pattern(sparsity=1 - n / m, n=n, m=m)))
    linears = prunable_linears(bert)
    assert len(out.masks) == len(linears) == 12
    for name, lin in linears.items():
        _assert_exact_nm(lin.weight, n, m, name)
        mask = out.masks[name.split("layer.", 1)[1]]
        assert torch.equal(mask, lin.weight != 0), name


def _assert_exact_nm(weight: torch.Tensor, n: int, m: int, name: str = "") -> None:
    """Every group of m consecutive inputs of every row keeps exactly n weights (an all-zero layer fails)."""
    groups = (weight != 0).reshape(weight.shape[0], -1, m).sum(-1)
    assert bool((groups == n).all()), f"{name}: kept per group {groups.unique().tolist()}, want exactly {n}"


def test_the_nm_check_rejects_what_is_not_n_of_m():
    w = torch.randn(4, 8)
    _assert_exact_nm(w * torch.tensor([1, 1, 0, 0] * 2), 2, 4)
    for bad in (torch.zeros(4, 8), w, w * torch.tensor([1, 0, 0, 0] * 2)):
        with pytest.raises(AssertionError):
            _assert_exact_nm(bad, 2, 4)


def test_embeddings_and_head_are_never_pruned(bert, calib_batches):
    before = {k: v.clone() for k, v in bert.state_dict().items() if "encoder.layer" not in k}
    prune_model(bert, calib_batches, _opts("sparsegpt"))
    after = bert.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def test_sparsegpt_block_errors_below_magnitude(bert, calib_batches):
    a, b = copy.deepcopy(bert), copy.deepcopy(bert)
    sg = prune_model(a, calib_batches, _opts("sparsegpt"))
    mg = prune_model(b, calib_batches, _opts("magnitude"))
    for rs, rm in zip(sg.blocks, mg.blocks, strict=True):
        assert rs.output_error <= rm.output_error
        for ls, lm in zip(rs.layers, rm.layers, strict=True):
            assert ls.error <= lm.error + 1e-9, ls.name


def test_rakp_with_dense_inputs_equals_sparsegpt(bert, calib_batches):
    """Feeding the dense stream to every layer makes X̃ = X, so the correction vanishes (Δ = 0)."""
    a, b = copy.deepcopy(bert), copy.deepcopy(bert)
    ra = prune_model(a, calib_batches, _opts("rakp", next_input="dense", alpha=1.0))
    sg = prune_model(b, calib_batches, _opts("sparsegpt", next_input="dense"))
    for k in ra.masks:
        assert torch.equal(ra.masks[k], sg.masks[k]), k
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def _output_error(dense, pruned, batches) -> float:
    """‖Z − Z̃‖² / ‖Z‖² of the models' final hidden states on ``batches`` (real tokens only)."""
    num = den = 0.0
    with torch.no_grad():
        for b in batches:
            z = dense(**b, output_hidden_states=True).hidden_states[-1]
            zt = pruned(**b, output_hidden_states=True).hidden_states[-1]
            real = b.get("attention_mask", torch.ones_like(b["input_ids"])).bool()
            num += float((z - zt)[real].square().sum())
            den += float(z[real].square().sum())
    return num / den


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_rakp_is_closer_to_the_dense_output_than_sparsegpt(llama, alpha):
    """RAKP rectifies each layer for the pruned stream's shifted inputs (its target is the dense output), so on
    the calibration inputs the pruned model's output is closer to the dense model's than SparseGPT's; block 0
    sees identical streams, so its masks are SparseGPT's."""
    ids = torch.randint(5, 99, (8, 12), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": ids[:4]}, {"input_ids": ids[4:]}]
    a, b = copy.deepcopy(llama), copy.deepcopy(llama)
    ra = prune_model(a, batches, _opts("rakp", alpha=alpha, ridge=0.1))  # 96 tokens: a firm ridge
    sg = prune_model(b, batches, _opts("sparsegpt"))
    assert all(torch.equal(ra.masks[k], sg.masks[k]) for k in ra.masks if k.startswith("0."))
    assert ra.blocks[1].layers[0].delta_norm > 0
    rakp_err, sg_err = _output_error(llama, a, batches), _output_error(llama, b, batches)
    assert 0 < rakp_err < 0.95 * sg_err
    assert ra.blocks[-1].output_error < sg.blocks[-1].output_error  # the driver's own drift figure agrees


def test_pruning_is_deterministic(bert, calib_batches):
    a, b = copy.deepcopy(bert), copy.deepcopy(bert)
    ma = prune_model(a, calib_batches, _opts("sparsegpt", TWO_FOUR)).masks
    mb = prune_model(b, calib_batches, _opts("sparsegpt", TWO_FOUR)).masks
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_modules_regex_selects_layers(bert, calib_batches):
    prune_model(bert, calib_batches, _opts("magnitude", modules="intermediate"))
    for name, lin in prunable_linears(bert).items():
        assert ((lin.weight == 0).float().mean() > 0.4) == ("intermediate" in name), name


def test_llama_blocks_are_pruned_through_the_same_driver(llama):
    ids = torch.randint(0, 99, (4, 16), generator=torch.Generator().manual_seed(0))
    before = llama.model.embed_tokens.weight.clone()
    out = prune_model(llama, [{"input_ids": ids[:2]}, {"input_ids": ids[2:]}], _opts("rakp", TWO_FOUR))
    names = {n.split(".", 1)[1] for n in out.masks}
    assert names == {
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    }
    assert measured_sparsity(llama) == pytest.approx(0.5)
    assert torch.equal(llama.model.embed_tokens.weight, before)
    assert torch.isfinite(llama(ids).logits).all()


def test_groups_follow_forward_order(bert):
    groups = linear_groups(bert, find_blocks(bert)[0])
    assert [list(g) for g in groups] == [
        ["attention.self.query", "attention.self.key", "attention.self.value"],
        ["attention.output.dense"],
        ["intermediate.dense"],
        ["output.dense"],
    ]


def test_unsupported_architecture_lists_supported():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="gpt2.*supported.*bert.*llama"):
        find_blocks(model)


def test_nm_on_indivisible_width_names_the_layer(calib_batches):
    from tests.conftest import tiny_bert

    model = tiny_bert(intermediate=37)
    with pytest.raises(ValueError, match="output.dense"):
        prune_model(model, calib_batches, _opts("magnitude", TWO_FOUR))


def test_adaptive_alpha_picks_from_grid_by_held_out_block_error(bert, calib_batches):
    batches = calib_batches + calib_batches  # 4 batches: 3 to fit, 1 held out
    out = prune_model(
        bert, batches, _opts("rakp", alpha=None, alpha_grid=(0.0, 0.5, 1.0), holdout_fraction=0.25)
    )
    for rep in out.blocks:
        assert set(rep.alpha_errors) == {0.0, 0.5, 1.0}
        assert rep.alpha == min(rep.alpha_errors, key=lambda a: (rep.alpha_errors[a], a))
    assert out.blocks[0].alpha_errors[0.0] == pytest.approx(
        out.blocks[0].alpha_errors[1.0]
    )  # X̃ = X in block 0
    assert measured_sparsity(bert) == pytest.approx(0.5)


def test_adaptive_alpha_equals_fixed_alpha_it_chose(bert, calib_batches):
    batches = calib_batches + calib_batches
    a, b = copy.deepcopy(bert), copy.deepcopy(bert)
    ad = prune_model(a, batches, _opts("rakp", alpha=None, alpha_grid=(0.25,)))
    fx = prune_model(b, batches, _opts("rakp", alpha=0.25))
    assert all(torch.equal(ad.masks[k], fx.masks[k]) for k in ad.masks)


def test_without_dense_tracking_sparsegpt_gives_the_same_masks(bert, calib_batches):
    a, b = copy.deepcopy(bert), copy.deepcopy(bert)
    full = prune_model(a, calib_batches, _opts("sparsegpt", TWO_FOUR))
    lean = prune_model(b, calib_batches, _opts("sparsegpt", TWO_FOUR, track_dense=False))
    assert all(torch.equal(full.masks[k], lean.masks[k]) for k in full.masks)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert (
        full.blocks[1].output_error > 0 and lean.blocks[1].output_error != lean.blocks[1].output_error
    )  # NaN


@pytest.mark.parametrize("model", ["bert", "llama"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "rakp"])
def test_lean_statistics_give_the_same_masks_and_weights(request, calib_batches, model, method):
    """Without layer reports: no pass for magnitude, diag(H) for Wanda, no H_dense for RAKP; same result."""
    net = request.getfixturevalue(model)
    batches = (
        calib_batches
        if model == "bert"
        else [
            {"input_ids": torch.randint(0, 99, (2, 16), generator=torch.Generator().manual_seed(s))}
            for s in (0, 1)
        ]
    )
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    full = prune_model(a, batches, _opts(method, TWO_FOUR))
    lean = prune_model(b, batches, _opts(method, TWO_FOUR, track_dense=False))
    assert all(torch.equal(full.masks[k], lean.masks[k]) for k in full.masks)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=k)
    rep = lean.blocks[1].layers[0]
    if method == "rakp":  # the dense stream still runs (the correction needs it), H_dense does not
        assert lean.blocks[1].output_error == pytest.approx(full.blocks[1].output_error, rel=1e-5)
        assert rep.target_error != rep.target_error and rep.delta_norm > 0
    else:
        assert rep.error != rep.error  # NaN: no full Hessian was built


def test_stats_pass_stops_after_the_last_hooked_group(llama):
    """The pruned stream's statistics pass never runs the Linears after the last hooked group."""
    from robustprune.pruning.sequential import StatsPlan, capture_block_inputs, collect_stats

    ids = torch.randint(0, 99, (2, 16), generator=torch.Generator().manual_seed(0))
    inputs = capture_block_inputs(llama, [{"input_ids": ids}])
    block = find_blocks(llama)[0]
    groups = linear_groups(llama, block, r"self_attn\.(q|k|v)_proj")
    calls: list[str] = []
    handles = [m.register_forward_hook(lambda *_a, n=n: calls.append(n)) for n, m in block.named_modules()]
    try:
        stats, dense_out = collect_stats(
            block, groups, inputs, plan=StatsPlan(dense=False, dense_hessian=False)
        )
    finally:
        for h in handles:
            h.remove()
    assert dense_out == [] and stats["self_attn.q_proj"].H is not None
    assert "mlp.down_proj" not in calls and "self_attn.o_proj" not in calls
    # every group hooked: the last one (down_proj) gets its statistics but is never computed
    calls.clear()
    groups = linear_groups(llama, block)
    handles = [m.register_forward_hook(lambda *_a, n=n: calls.append(n)) for n, m in block.named_modules()]
    try:
        stats, _ = collect_stats(block, groups, inputs, plan=StatsPlan(dense=False, dense_hessian=False))
    finally:
        for h in handles:
            h.remove()
    assert stats["mlp.down_proj"].H is not None and stats["mlp.down_proj"].n == ids.numel()
    assert "mlp.up_proj" in calls and "mlp.down_proj" not in calls


def test_model_criterion_judges_alpha_at_the_last_block(bert, calib_batches):
    """'model' scores each candidate after the rest (still dense) network; with nothing after, it is 'block'."""
    from robustprune.pruning.sequential import capture_block_inputs, select_alpha

    batches = calib_batches + calib_batches
    from robustprune.pruning.sequential import BlockInputs

    dense = capture_block_inputs(bert, batches)
    g = torch.Generator().manual_seed(0)
    shifted = [x + 0.3 * torch.randn(x.shape, generator=g) for x in dense.dense]  # as if upstream was pruned
    inputs = BlockInputs(shifted, dense.dense, dense.extras, dense.token_mask)
    blocks = find_blocks(bert)
    groups = linear_groups(bert, blocks[0])
    grid = (0.0, 0.5, 1.0)
    block_opts = _opts("rakp", alpha=None, alpha_grid=grid)
    model_opts = _opts("rakp", alpha=None, alpha_grid=grid, alpha_criterion="model")
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    _, alone = select_alpha(blocks[0], groups, inputs, block_opts, 0)
    _, no_rest = select_alpha(blocks[0], groups, inputs, model_opts, 0, later=())
    calls = []
    handle = blocks[1].register_forward_hook(lambda *_a: calls.append(1))
    try:
        best, through = select_alpha(blocks[0], groups, inputs, model_opts, 0, later=blocks[1:])
    finally:
        handle.remove()
    assert no_rest == pytest.approx(alone, rel=1e-6)
    n_hold = max(1, round(len(batches) * 0.25))
    assert len(calls) == n_hold * (1 + len(grid))  # the dense reference, then every candidate
    assert all(through[a] != alone[a] for a in grid)
    assert best == min(through, key=lambda x: (through[x], x))
    assert all(torch.equal(v, bert.state_dict()[k]) for k, v in before.items())  # candidates are undone
    out = prune_model(copy.deepcopy(bert), batches, model_opts)
    assert all(rep.alpha in grid for rep in out.blocks)
    with pytest.raises(ValueError, match="alpha_criterion"):
        _opts("rakp", alpha=None, alpha_criterion="loss")


def _last_block_hidden(model, batch) -> torch.Tensor:
    """The last block's output for ``batch``, caught by a hook (before any final norm)."""
    caught = []
    handle = find_blocks(model)[-1].register_forward_hook(
        lambda _m, _i, out: caught.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        with torch.no_grad():
            logits = model(**batch).logits
    finally:
        handle.remove()
    return caught[0], logits


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("stride", [1, 3])
def test_output_head_reproduces_the_models_logits(bert, llama, calib_batches, arch, stride):
    """output_head(last block's hidden) is exactly the model's own logits (LM: every stride-th real token)."""
    from robustprune.modeling import output_head

    model = bert if arch == "bert" else llama
    batch = {k: v.clone() for k, v in calib_batches[0].items()}
    batch["attention_mask"][2:, 8:] = 0  # padded rows
    batch["input_ids"][2:, 8:] = 0
    hidden, logits = _last_block_hidden(model, batch)
    with torch.no_grad():
        got = output_head(model, stride)(hidden, batch["attention_mask"])
    if arch == "llama":
        keep = batch["attention_mask"][:, ::stride].bool()
        logits = logits[:, ::stride][keep]
        assert got.shape[0] == int(keep.sum()) < keep.numel()
    torch.testing.assert_close(got, logits, rtol=1e-5, atol=1e-5)


def test_output_head_needs_a_head_and_fails_before_any_forward(bert, calib_batches):
    """A bare encoder has no output distribution: the 'output' criterion says so before running anything."""
    from transformers import BertModel

    from robustprune.modeling import output_head

    bare = BertModel(bert.config).eval()
    with pytest.raises(UnsupportedModelError, match="BertModel has no classification head"):
        output_head(bare)
    with pytest.raises(ValueError, match="stride"):
        output_head(bert, 0)
    calls = []
    bare.embeddings.register_forward_hook(lambda *_a: calls.append(1))
    with pytest.raises(UnsupportedModelError, match="classification head"):
        prune_model(bare, calib_batches, _opts("rakp", alpha=None, alpha_criterion="output"))
    assert calls == []


def test_kl_sum_matches_torch_and_does_not_depend_on_chunking():
    from robustprune.pruning.rakp_alpha import kl_sum as _kl_sum

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(7, 11, generator=g) * 3
    got = ref + torch.randn(ref.shape, generator=g)
    lp, lq = torch.log_softmax(ref.double(), -1), torch.log_softmax(got.double(), -1)
    want = float(torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="sum"))
    assert _kl_sum(ref, got) == pytest.approx(want, rel=1e-12)
    assert _kl_sum(ref, got, chunk=3) == pytest.approx(want, rel=1e-12)
    assert _kl_sum(ref, ref.clone()) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_output_criterion_is_the_kl_of_the_models_outputs(bert, llama, calib_batches, arch):
    """'output' scores a candidate by mean KL(dense ‖ pruned) of the model's output distribution on held-out
    batches, with the rest of the network dense. At block 0 both streams are the same, so every α is
    SparseGPT (Δ = 0), all candidates tie, the smallest wins, and the KL equals one computed from the logits
    of a copy whose block 0 was pruned on the fit batches alone."""
    from robustprune.modeling import output_head
    from robustprune.pruning.sequential import capture_block_inputs, prune_block, select_alpha

    model = bert if arch == "bert" else llama
    if arch == "bert":  # a random classifier's outputs are near-uniform: sharpen them so the KL is not ~1e-8
        model.classifier.weight.data *= 200
    batches = calib_batches + calib_batches[::-1]
    n_hold = max(1, round(len(batches) * 0.25))
    fit, hold = batches[: len(batches) - n_hold], batches[len(batches) - n_hold :]
    grid = (0.0, 0.5, 1.0)
    opts = _opts("rakp", alpha=None, alpha_grid=grid, alpha_criterion="output", output_stride=2)
    blocks = find_blocks(model)
    inputs = capture_block_inputs(model, batches)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = output_head(model, 2)
    best, errors = select_alpha(blocks[0], linear_groups(model, blocks[0]), inputs, opts, 0, blocks[1:], head)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # candidates are undone

    ref = copy.deepcopy(model)
    prune_block(ref, 0, capture_block_inputs(ref, fit), _opts("sparsegpt", alpha_criterion="output"))
    num = rows = 0.0
    for b in hold:
        h_dense, _ = _last_block_hidden(model, b)
        h_pruned, _ = _last_block_hidden(ref, b)
        with torch.no_grad():
            p = torch.log_softmax(head(h_dense, b["attention_mask"]).double(), -1)
            q = torch.log_softmax(head(h_pruned, b["attention_mask"]).double(), -1)
        num += float((p.exp() * (p - q)).sum())
        rows += p.shape[0]
    expected = num / rows
    assert expected > 0
    for a in grid:
        assert errors[a] == pytest.approx(expected, rel=1e-4), a
    assert best == 0.0
    out = prune_model(copy.deepcopy(model), batches, opts)
    assert all(rep.alpha in grid and set(rep.alpha_errors) == set(grid) for rep in out.blocks)
    assert all(v >= 0 for rep in out.blocks for v in rep.alpha_errors.values())


def test_depth_schedule_sets_alpha_per_block_linearly(bert, calib_batches):
    """alpha_depth=(a, b): block i uses a + (b - a) i / (L - 1), exactly what a fixed alpha of that value does."""
    from robustprune.pruning.sequential import depth_alpha

    assert depth_alpha(0.0, 0.5, 0, 30) == 0.0
    assert depth_alpha(0.0, 0.5, 29, 30) == 0.5
    assert depth_alpha(0.1, 0.7, 1, 3) == pytest.approx(0.4)
    assert depth_alpha(0.3, 0.9, 0, 1) == 0.3
    out = prune_model(copy.deepcopy(bert), calib_batches, _opts("rakp", alpha_depth=(0.0, 1.0)))
    assert [rep.alpha for rep in out.blocks] == [0.0, 1.0]  # 2 blocks: the two ends
    assert all(rep.alpha_errors == {} for rep in out.blocks)  # no held-out search
    # a flat schedule is a fixed alpha, whatever ``alpha`` says
    flat = prune_model(copy.deepcopy(bert), calib_batches, _opts("rakp", alpha=0.9, alpha_depth=(0.5, 0.5)))
    fixed = prune_model(copy.deepcopy(bert), calib_batches, _opts("rakp", alpha=0.5))
    assert all(torch.equal(flat.masks[k], fixed.masks[k]) for k in fixed.masks)


def test_alpha_spec_parses_the_benchmarks_alpha_forms():
    from robustprune.options import alpha_spec

    assert alpha_spec("0.25") == {"alpha": 0.25, "alpha_depth": None, "alpha_criterion": "block"}
    assert alpha_spec("adaptive-model")["alpha_criterion"] == "model"
    assert alpha_spec("adaptive-output")["alpha_criterion"] == "output"
    assert alpha_spec("depth:0-0.5") == {"alpha": None, "alpha_depth": (0.0, 0.5), "alpha_criterion": "block"}
    for bad in ("1.5", "depth:0-2", "depth:0.5", "sometimes"):
        with pytest.raises(ValueError, match="depth:A-B"):
            alpha_spec(bad)


def _shifted_last_hidden(model, batches, scale: float = 0.3):
    """The dense last block's outputs and a perturbed copy (as if the blocks before had been pruned)."""
    from robustprune.pruning.sequential import capture_block_inputs
    from robustprune.pruning.streams import run_blocks

    inputs = capture_block_inputs(model, batches)
    with torch.no_grad():
        dense = run_blocks(find_blocks(model), inputs.dense, inputs.extras)
    g = torch.Generator().manual_seed(1)
    shifted = [h + scale * h.std() * torch.randn(h.shape, generator=g) for h in dense]
    return dense, shifted, inputs.token_mask


def test_head_refit_with_dense_inputs_is_a_no_op(bert, calib_batches):
    """Identical streams: every head Linear's cross term is 0, so Δ = 0 and the weights stay bit-identical."""
    from robustprune.pruning.rakp_head import refit_head

    dense, _, masks = _shifted_last_hidden(bert, calib_batches)
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    rep = refit_head(bert, dense, dense, masks, alpha=1.0, ridge=1e-4)
    assert all(torch.equal(v, bert.state_dict()[k]) for k, v in before.items())
    assert rep.error_before == rep.error_after == 0.0 and rep.rows == 8
    assert set(rep.delta_norm) == {"bert.pooler.dense", "classifier"} and not any(rep.delta_norm.values())


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_head_refit_reduces_the_head_output_error(bert, calib_batches, alpha):
    """From shifted inputs, the refit head's logits are closer to the dense model's on the calibration rows;
    only the pooler and classifier weights change (biases and the encoder do not)."""
    from robustprune.pruning.rakp_head import refit_head

    bert.classifier.weight.data *= 20  # a random classifier's logits are near zero: give them a scale
    both = {k: torch.cat([b[k][:, :9] for b in calib_batches]) for k in calib_batches[0]}  # 8 texts
    batches = [{k: v.roll(s, 0) for k, v in both.items()} for s in range(6)]  # 48 rows > hidden size 32
    dense, shifted, masks = _shifted_last_hidden(bert, batches)
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    original = copy.deepcopy(bert)
    rep = refit_head(bert, shifted, dense, masks, alpha=alpha, ridge=1e-4)
    changed = {k for k, v in before.items() if not torch.equal(v, bert.state_dict()[k])}
    assert changed == {"bert.pooler.dense.weight", "classifier.weight"}
    assert rep.error_before > 0 and rep.error_after < 0.8 * rep.error_before
    assert rep.kl_after < rep.kl_before
    # measured independently of the report: the original head on the dense hidden states against the
    # refit head on the shifted ones
    from robustprune.modeling import output_head

    with torch.no_grad():
        ref = torch.cat([output_head(original)(h, m) for h, m in zip(dense, masks, strict=True)])
        got = torch.cat([output_head(bert)(h, m) for h, m in zip(shifted, masks, strict=True)])
    assert float((ref - got).square().sum() / ref.square().sum()) == pytest.approx(rep.error_after, rel=1e-4)


def test_refit_head_option_runs_after_the_last_block_with_its_alpha(bert, calib_batches):
    """prune_model with rakp.refit_head: masks and encoder weights as without it, the head rectified with the
    last block's α; a model without a classifier head fails before any forward pass."""
    a, b = copy.deepcopy(bert), copy.deepcopy(bert)
    plain = prune_model(a, calib_batches, _opts("rakp", alpha=1.0, ridge=1e-4))
    head = prune_model(b, calib_batches, _opts("rakp", alpha=1.0, ridge=1e-4, refit_head=True))
    assert plain.head is None and head.head is not None and head.head.alpha == 1.0
    assert all(torch.equal(plain.masks[k], head.masks[k]) for k in plain.masks)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y) == (k not in ("bert.pooler.dense.weight", "classifier.weight")), k
    assert head.head.error_after < head.head.error_before
    with pytest.raises(UnsupportedModelError, match="sequence-classification head"):
        prune_model(
            tiny_llama(), [{"input_ids": torch.ones(1, 4, dtype=torch.long)}], _opts("rakp", refit_head=True)
        )


@pytest.mark.parametrize(
    ("config", "files", "kind"),
    [
        ({"architectures": ["LlamaForCausalLM"]}, (), "causal-lm"),
        ({"architectures": ["BertForSequenceClassification"]}, (), "classifier"),
        ({"model_type": "bert"}, (), "classifier"),
    ],
)
def test_prune_source_kind_from_the_saved_directory(tmp_path, config, files, kind):
    """A causal LM read as a classifier would be pruned with a random classification head (and saved so):
    the kind comes from ``architectures``, which :func:`robustprune.lm.convert_gguf` now writes."""
    import json

    from tasks.prune import Source

    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in files:
        (tmp_path / name).write_text("{}")
    assert Source.of(tmp_path).kind == kind


# ------------------------------------------------------------- kill the mutants mutmut left (make mutation)


def test_stats_plan_is_the_least_work_each_option_needs():
    """Magnitude without reports reads nothing (NO_STATS: no forward pass at all); Wanda without reports
    needs only the diagonal; next_input = dense needs the dense stream for any method; the dense Hessian is
    computed exactly when layer reports are asked for."""
    from robustprune.pruning.layerwise import NO_STATS, stats_plan

    assert stats_plan(_opts("magnitude", track_dense=False)) == NO_STATS
    wanda = stats_plan(_opts("wanda", track_dense=False))
    assert (wanda.hessian, wanda.dense, wanda.dense_hessian) == ("diag", False, False)
    dense_next = stats_plan(_opts("sparsegpt", track_dense=False, next_input="dense"))
    assert dense_next.dense is True and dense_next.dense_hessian is False and dense_next.hessian == "full"
    reported = stats_plan(_opts("magnitude"))
    assert (reported.hessian, reported.dense, reported.dense_hessian) == ("full", True, True)


def test_lean_magnitude_reports_every_block_and_honours_the_module_filter(bert, calib_batches):
    """The no-forward magnitude path: one report per block with its index, NaN output error (nothing
    measured), a real duration, per-layer sparsity 1 − kept share, and only the selected modules pruned."""
    out = prune_model(bert, calib_batches, _opts("magnitude", track_dense=False, modules="intermediate"))
    assert [b.index for b in out.blocks] == list(range(len(find_blocks(bert))))
    for b in out.blocks:
        assert b.output_error != b.output_error and 0 <= b.seconds < 60
        assert [lay.name for lay in b.layers] and all("intermediate" in lay.name for lay in b.layers)
        assert all(lay.sparsity == pytest.approx(0.5) and lay.damp is None for lay in b.layers)
    for name, lin in prunable_linears(bert).items():
        assert ((lin.weight == 0).float().mean() > 0.4) == ("intermediate" in name), name


def test_layer_reports_carry_the_options_and_real_measurements(bert, calib_batches):
    """Each layer report: its name, the dampening SparseGPT used (the option's), sparsity 1 − kept share,
    a finite target error when the dense stream is tracked, a duration in seconds; RAKP's α reaches the
    kernel (‖α·Δ‖ differs between α 1 and 0.5 on block 1, the first whose two streams differ)."""
    out = prune_model(bert, calib_batches, _opts("sparsegpt", dampening=0.3))
    lay = out.blocks[0].layers
    assert {x.name for x in lay} == set(linear_groups(bert, find_blocks(bert)[0])[0]) | {
        n for g in linear_groups(bert, find_blocks(bert)[0])[1:] for n in g
    }
    for x in lay:
        assert x.damp == 0.3 and x.sparsity == pytest.approx(0.5) and 0 <= x.seconds < 60
        assert x.target_error == x.target_error and x.error == x.error
    full = prune_model(tiny_bert(), calib_batches, _opts("rakp", alpha=1.0)).blocks[1].layers
    half = prune_model(tiny_bert(), calib_batches, _opts("rakp", alpha=0.5)).blocks[1].layers
    assert all(x.delta_norm > 0 for x in full)  # block 1: the streams differ, Δ ≠ 0
    assert [x.delta_norm for x in half] != pytest.approx([x.delta_norm for x in full], rel=0.05)


def test_alpha_head_only_for_the_adaptive_output_criterion(bert):
    from robustprune.pruning.rakp_alpha import alpha_head

    fixed = _opts("rakp", alpha=1.0, alpha_criterion="output")
    assert not fixed.adaptive_alpha and alpha_head(bert, fixed) is None
    assert alpha_head(bert, _opts("rakp", alpha=None, alpha_criterion="block")) is None
    assert alpha_head(bert, _opts("rakp", alpha=None, alpha_criterion="output")) is not None


def test_head_refit_on_a_model_without_a_head_fails_before_any_forward(bert, calib_batches):
    """RAKP with refit_head on a bare encoder stops at the option check, before the embeddings run; other
    methods never look for a head."""
    from transformers import BertModel

    bare = BertModel(bert.config).eval()
    calls = []
    bare.embeddings.register_forward_hook(lambda *_a: calls.append(1))
    with pytest.raises(UnsupportedModelError):
        prune_model(bare, calib_batches, _opts("rakp", alpha=1.0, refit_head=True))
    assert calls == []
    from robustprune.pruning.sequential import check_options

    check_options(bare, _opts("sparsegpt", refit_head=True))  # no head needed: no error


def test_head_refit_without_a_block_alpha_uses_alpha_zero(bert, calib_batches):
    """finish_head takes the last block's α; with no block report, or a last block without α, it refits
    with α = 0 (no rectification), never with a made-up one."""
    from robustprune.pruning.sequential import BlockReport, finish_head
    from robustprune.pruning.streams import capture_block_inputs

    opts = _opts("rakp", alpha=1.0, refit_head=True)
    last = capture_block_inputs(bert, calib_batches)
    for blocks in ([], [BlockReport(index=0, alpha=None)]):
        assert finish_head(copy.deepcopy(bert), last, opts, blocks).alpha == 0.0
    assert finish_head(copy.deepcopy(bert), last, opts, [BlockReport(index=0, alpha=0.5)]).alpha == 0.5
    assert finish_head(bert, last, _opts("rakp", alpha=1.0), []) is None


def test_alpha_head_reads_every_stride_th_position(llama):
    """The adaptive α's output head judges every output_stride-th token of a causal LM: 12 real tokens at
    stride 3 give 4 rows per sequence (the default stride 1 would give 12)."""
    from robustprune.pruning.rakp_alpha import alpha_head

    head = alpha_head(llama, _opts("rakp", alpha=None, alpha_criterion="output", output_stride=3))
    hidden = torch.randn(2, 12, llama.config.hidden_size, generator=torch.Generator().manual_seed(0))
    assert head(hidden, torch.ones(2, 12, dtype=torch.long)).shape[0] == 2 * 4


def test_prune_model_passes_its_device_to_the_branch(bert, calib_batches, monkeypatch):
    """prune_model(device=...) is the device block 0's inputs are captured on (the torch.device passed on
    as is, not the driver's default)."""
    from robustprune.pruning import branch as branch_mod

    seen = []
    real = branch_mod.capture_block_inputs
    monkeypatch.setattr(
        branch_mod, "capture_block_inputs", lambda m, b, *a, **k: seen.append((a, k)) or real(m, b, *a, **k)
    )
    dev = torch.device("cpu")
    prune_model(bert, calib_batches, _opts("sparsegpt", track_dense=False), device=dev)
    assert len(seen) == 1 and seen[0][0][0] is dev


def test_prune_model_shows_progress_only_when_asked(bert, calib_batches, capsys):
    """No progress bar on stderr by default (benchmarks and tasks log their own); progress=True shows one."""
    opts = _opts("magnitude", track_dense=False)
    prune_model(copy.deepcopy(bert), calib_batches, opts)
    assert capsys.readouterr().err == ""
    prune_model(bert, calib_batches, opts, progress=True)
    assert "prune magnitude" in capsys.readouterr().err
