"""FreeLB (robustprune.adversarial) and the ingredient optimisers (robustprune.finetune) on a tiny BERT."""

from __future__ import annotations

import types
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from robustprune.adversarial import FreeLBSettings, SharedDropout, freelb_backward, init_delta, project
from robustprune.finetune import FinetuneSettings, finetune
from tests.conftest import synthetic_reviews, tiny_bert, tiny_tokenizer


@pytest.fixture
def batch(tmp_path):
    tok = tiny_tokenizer(tmp_path / "tok")
    rows = synthetic_reviews(6)
    texts = [t for t, _ in rows]
    texts[0] = texts[0] + " and the film is a very fun story"  # different lengths: padding in the batch
    enc = tok(texts, padding=True, return_tensors="pt")
    return dict(enc), torch.tensor([y for _, y in rows])


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_perturbation_stays_inside_its_bound_and_off_padding(batch):
    enc, y = batch
    model = tiny_bert()
    s = FreeLBSettings(steps=4, step_size=5.0, max_norm=0.3, init_mag=1.0)  # big steps: projection must act
    out = freelb_backward(model, enc, y, s, generator=torch.Generator().manual_seed(0), record=True)
    assert len(out.deltas) == 4
    pad = enc["attention_mask"] == 0
    assert pad.any()
    for d in out.deltas:
        norms = d.flatten(1).norm(dim=1)
        assert (norms <= 0.3 + 1e-6).all()
        assert d[pad].abs().max() == 0
    assert out.deltas[-1].flatten(1).norm(dim=1).max() == pytest.approx(0.3, rel=1e-5)  # pushed to the rim


def test_init_delta_magnitude_and_projection():
    emb = torch.zeros(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    d = init_delta(emb, mask, FreeLBSettings(init_mag=0.5, max_norm=1.0), torch.Generator().manual_seed(1))
    assert (d.flatten(1).norm(dim=1) <= 0.5 + 1e-6).all()
    assert d[mask == 0].abs().max() == 0
    x = torch.ones(2, 3, 4)
    p = project(x, 2.0)
    assert p.flatten(1).norm(dim=1).tolist() == pytest.approx([2.0, 2.0])
    assert torch.equal(project(x * 0.1, 2.0), x * 0.1)


def test_accumulated_gradient_is_the_mean_of_the_k_per_step_gradients(batch):
    enc, y = batch
    model = tiny_bert().eval()  # no dropout (attention dropout is not an nn.Dropout): steps comparable
    s = FreeLBSettings(steps=3, step_size=0.5, max_norm=1.0, init_mag=0.3)
    out = freelb_backward(model, enc, y, s, generator=torch.Generator().manual_seed(0), record=True)
    accumulated = _grads(model)
    per_step = []
    inputs = {k: v for k, v in enc.items() if k != "input_ids"}
    for d in out.deltas:  # replay each step's perturbed forward on its own
        model.zero_grad(set_to_none=True)
        emb = model.get_input_embeddings()(enc["input_ids"])
        model(inputs_embeds=emb + d, labels=y, **inputs).loss.backward()
        per_step.append(_grads(model))
    assert not torch.equal(out.deltas[0], out.deltas[1])  # the steps really differ
    for name, g in accumulated.items():
        mean = sum(step[name] for step in per_step) / len(per_step)
        torch.testing.assert_close(g, mean, rtol=1e-5, atol=1e-7)


def _train(settings: FinetuneSettings, tmp_path):
    tok = tiny_tokenizer(tmp_path / "tok")
    rows = synthetic_reviews(48)
    model = tiny_bert(seed=0)
    res = finetune(model, tok, [t for t, _ in rows], [y for _, y in rows], settings, progress=False)
    return model.state_dict(), res


def test_zero_ascent_steps_is_bit_identical_to_plain_training(tmp_path):
    base = dict(learning_rate=1e-3, epochs=1, seed=3, batch_size=16)
    plain, r0 = _train(FinetuneSettings(**base), tmp_path)
    k0, r1 = _train(FinetuneSettings(**base, adversarial=FreeLBSettings(steps=0)), tmp_path)
    # K = 1 with a zero initial perturbation runs the FreeLB code path on exactly the clean input
    k1, r2 = _train(FinetuneSettings(**base, adversarial=FreeLBSettings(steps=1, init_mag=0.0)), tmp_path)
    for name in plain:
        assert torch.equal(plain[name], k0[name]), name
        assert torch.equal(plain[name], k1[name]), name
    assert r0.losses == r1.losses == r2.losses


def test_freelb_changes_training_and_is_seeded(tmp_path):
    base = dict(learning_rate=1e-3, epochs=1, seed=3, batch_size=16)
    adv = FreeLBSettings(steps=2, step_size=0.1, max_norm=0.5, init_mag=0.2)
    a, _ = _train(FinetuneSettings(**base, adversarial=adv), tmp_path)
    b, _ = _train(FinetuneSettings(**base, adversarial=adv), tmp_path)
    plain, _ = _train(FinetuneSettings(**base), tmp_path)
    w = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(a[w], b[w])
    assert not torch.equal(a[w], plain[w])


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_each_optimiser_trains_and_decays_only_matrices(optimizer, tmp_path):
    from robustprune.finetune import make_optimizer

    s = FinetuneSettings(learning_rate=1e-2, optimizer=optimizer, weight_decay=0.1)
    model = tiny_bert()
    opt = make_optimizer(model, s)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim >= 2 and "LayerNorm" not in name), name
    expected = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[optimizer]
    assert type(opt) is expected
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    after, res = _train(FinetuneSettings(learning_rate=1e-2, optimizer=optimizer, batch_size=16), tmp_path)
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_settings_reject_nonsense():
    with pytest.raises(ValueError, match="steps"):
        FreeLBSettings(steps=-1)
    with pytest.raises(ValueError, match="max_norm"):
        FreeLBSettings(max_norm=-0.1)


class _MeanPoolLinear(nn.Module):
    """logits = W · mean of the real tokens' (embedding + δ) + b: ∂loss/∂δ is known in closed form,
    (1/B)(1/L_i)(softmax_i − onehot_i) W on each real token of example i."""

    def __init__(self, vocab: int = 12, dim: int = 6, labels: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, labels)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.emb

    def forward(self, inputs_embeds, attention_mask, labels):  # noqa: ANN001, ANN201
        m = attention_mask.unsqueeze(-1).to(inputs_embeds.dtype)
        logits = self.head((inputs_embeds * m).sum(1) / m.sum(1))
        return SimpleNamespace(loss=nn.functional.cross_entropy(logits, labels), logits=logits)

    def delta_gradient(self, ids, mask, labels) -> torch.Tensor:  # noqa: ANN001
        """The closed-form ∂loss/∂δ at δ = 0."""
        with torch.no_grad():
            m = mask.unsqueeze(-1).float()
            logits = self.head((self.emb(ids) * m).sum(1) / m.sum(1))
            r = torch.softmax(logits, -1) - nn.functional.one_hot(labels, logits.shape[-1]).float()
            per_token = (r @ self.head.weight) / (m.sum(1) * len(ids))  # (B, dim)
            return per_token.unsqueeze(1) * m


def _linear_batch():
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7], [8, 9, 0, 0]])
    mask = (ids != 0).long()
    return ids, mask, torch.tensor([0, 2, 1])


UNBOUNDED = FreeLBSettings(steps=2, step_size=0.3, max_norm=0.0, init_mag=0.0)


def test_each_ascent_step_follows_each_examples_own_normalised_gradient():
    """δ₁ − δ₀ = a · g_i / ‖g_i‖ per example (Algorithm 1, line 9): a descent step flips the sign, a step
    normalised by the whole batch's gradient norm shrinks every example's step below a."""
    model = _MeanPoolLinear()
    ids, mask, y = _linear_batch()
    out = freelb_backward(model, {"input_ids": ids, "attention_mask": mask}, y, UNBOUNDED, record=True)
    g = model.delta_gradient(ids, mask, y)
    expected = 0.3 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)
    step = out.deltas[1] - out.deltas[0]
    torch.testing.assert_close(step, expected, rtol=1e-5, atol=1e-7)
    assert step.flatten(1).norm(dim=1).tolist() == pytest.approx([0.3] * 3, rel=1e-5)


def test_one_examples_scale_does_not_change_another_examples_step():
    """Per-example normalisation: making example 0's gradient 10x larger (its embeddings scaled) leaves the
    steps of examples 1 and 2 exactly as they were."""
    ids, mask, y = _linear_batch()
    batch = {"input_ids": ids, "attention_mask": mask}
    base = freelb_backward(_MeanPoolLinear(), batch, y, UNBOUNDED, record=True)
    scaled_model = _MeanPoolLinear()
    with torch.no_grad():
        scaled_model.emb.weight[1:4] *= 10.0  # example 0's tokens only
    scaled = freelb_backward(scaled_model, batch, y, UNBOUNDED, record=True)
    base_step, scaled_step = base.deltas[1] - base.deltas[0], scaled.deltas[1] - scaled.deltas[0]
    assert not torch.allclose(base_step[0], scaled_step[0])  # example 0's own step did change
    torch.testing.assert_close(scaled_step[1:], base_step[1:], rtol=1e-6, atol=1e-8)


def test_ascent_steps_raise_every_examples_perturbed_loss(batch):
    """On a tiny BERT (eval: no dropout), each small ascent step raises each example's loss at δ_t."""
    enc, y = batch
    model = tiny_bert().eval()
    s = FreeLBSettings(steps=4, step_size=0.05, max_norm=0.0, init_mag=0.05)
    out = freelb_backward(model, enc, y, s, generator=torch.Generator().manual_seed(0), record=True)
    inputs = {k: v for k, v in enc.items() if k != "input_ids"}
    losses = []
    with torch.no_grad():
        emb = model.get_input_embeddings()(enc["input_ids"])
        for d in out.deltas:
            logits = model(inputs_embeds=emb + d, **inputs).logits
            losses.append(nn.functional.cross_entropy(logits, y, reduction="none"))
    for before, after in zip(losses, losses[1:], strict=False):
        assert (after > before).all(), (before, after)


def test_max_norm_zero_is_unbounded(batch):
    enc, y = batch
    s = FreeLBSettings(steps=4, step_size=5.0, max_norm=0.0, init_mag=1.0)
    out = freelb_backward(
        tiny_bert().eval(), enc, y, s, generator=torch.Generator().manual_seed(0), record=True
    )
    norms = [d.flatten(1).norm(dim=1) for d in out.deltas]
    assert (norms[-1] > 5.0).all()  # three steps of 5 from a start of norm <= 1: never pulled back
    x = torch.randn(2, 3, 4)
    assert torch.equal(project(x, 0.0), x)


def _dropout_patterns(model, enc, y, settings):  # noqa: ANN001
    """Two batches through FreeLB; per nn.Dropout module name, the zero pattern of its output at each call."""
    calls: list[dict[str, list[torch.Tensor]]] = [{}, {}]
    batch_no = [0]
    handles = [
        m.register_forward_hook(
            lambda _m, _i, o, n=name: calls[batch_no[0]].setdefault(n, []).append(o.detach() == 0)
        )
        for name, m in model.named_modules()
        if isinstance(m, nn.Dropout)
    ]
    torch.manual_seed(0)
    for b in range(2):
        batch_no[0] = b
        freelb_backward(model, enc, y, settings, generator=torch.Generator().manual_seed(0))
    for h in handles:
        h.remove()
    return calls


@pytest.mark.parametrize("share", [True, False])
def test_dropout_masks_shared_across_the_k_steps_and_fresh_for_each_batch(batch, share):
    """share_dropout (the reference's dp_masks): in train mode every dropout, attention dropout included,
    uses one mask for all K steps of a batch and a new one for the next batch; without it each step draws."""
    enc, y = batch
    model = tiny_bert().train()
    s = FreeLBSettings(steps=3, step_size=0.1, max_norm=0.0, init_mag=0.2, share_dropout=share)
    first, second = _dropout_patterns(model, enc, y, s)
    attention = "bert.encoder.layer.0.attention.self.dropout"
    assert (attention in first) == share  # SDPA drops attention inside its kernel unless shared
    hidden = [n for n in first if "attention.self" not in n]
    assert len(hidden) == 6  # embeddings, 2 x (attention output, layer output), classifier
    for name, steps in first.items():
        assert len(steps) == 3
        same = [torch.equal(steps[0], later) for later in steps[1:]]
        assert same == ([True, True] if share else [False, False]), name
    assert all(not torch.equal(first[n][0], second[n][0]) for n in hidden)  # the next batch draws anew
    assert not any("forward" in m.__dict__ for m in model.modules())  # the model is left as it was


def test_shared_dropout_is_a_no_op_in_eval_mode_and_restores_the_model(batch):
    enc, _ = batch
    model = tiny_bert().eval()
    before = model(**enc).logits
    with SharedDropout(model) as shared:
        shared.next_forward()
        inside = model(**enc).logits  # eager attention instead of SDPA: the same function
    torch.testing.assert_close(inside, before, rtol=1e-5, atol=1e-6)
    assert not shared.masks
    assert torch.equal(model(**enc).logits, before)


# ------------------------------------------------------------- kill the mutants mutmut left (make mutation)


def _expected_init(embeds, mask, init_mag, seed):  # noqa: ANN001, ANN202
    """δ₀ of Algorithm 1 line 4, written out: U(−1, 1) on real tokens scaled by init_mag/√(L_i·d), in the
    embeddings' dtype (before any projection)."""
    u = torch.rand(embeds.shape, generator=torch.Generator().manual_seed(seed)).to(embeds.dtype)
    m = mask.to(embeds.dtype).unsqueeze(-1)
    dims = mask.sum(1).to(embeds.dtype) * embeds.shape[-1]
    return (2 * u - 1) * m * (init_mag / dims.clamp_min(1).sqrt()).view(-1, 1, 1)


@pytest.mark.parametrize(
    ("shape", "lengths", "init_mag"),
    [((3, 5, 8), [5, 3, 1], 0.2), ((2, 4, 1), [1, 4], 1.0), ((2, 3, 4), [3, 2], 1.0)],
    ids=["L-differs-from-d", "one-dim-one-token", "init-mag-one"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_init_delta_is_uniform_noise_scaled_per_example_by_its_real_tokens(shape, lengths, init_mag, dtype):
    """δ₀ = U(−1,1)·init_mag/√(L_i·d) on each example's L_i real tokens (L_i counted per example, d the
    embedding width), drawn from the given generator, in the embeddings' dtype; no projection inside the
    ball."""
    mask = (torch.arange(shape[1]).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()
    embeds = torch.zeros(shape, dtype=dtype)
    s = FreeLBSettings(init_mag=init_mag, max_norm=0.0)
    got = init_delta(embeds, mask, s, torch.Generator().manual_seed(3))
    assert got.dtype == dtype and got.abs().max() > 0
    torch.testing.assert_close(got, _expected_init(embeds, mask, init_mag, 3), rtol=1e-12, atol=0)
    again = init_delta(embeds, mask, s, torch.Generator().manual_seed(3))
    assert torch.equal(got, again)  # the generator, not the global RNG
    assert not init_delta(embeds, mask, FreeLBSettings(init_mag=0.0), None).any()


def test_project_small_norms_and_the_rim():
    """Projection onto radius 0.3 of a δ of norm 0.5 (< 1) gives norm 0.3; a δ exactly on the rim is kept."""
    x = torch.full((1, 1, 4), 0.25)  # norm 0.5
    assert project(x, 0.3).flatten(1).norm(dim=1).item() == pytest.approx(0.3, rel=1e-6)
    assert torch.equal(project(x, 0.5), x)


def test_step_size_zero_is_rejected():
    with pytest.raises(ValueError, match="step_size"):
        FreeLBSettings(step_size=0.0)
    with pytest.raises(ValueError, match="init_mag"):
        FreeLBSettings(init_mag=-0.1)


def test_freelb_loss_is_the_mean_of_the_k_step_losses_and_nothing_is_recorded_by_default():
    """out.loss = (1/K) Σ_k loss(δ_k) (each step's loss, not the last one's); δ's are kept only with
    record=True; K = 0 computes nothing and reports NaN; the same generator gives the same δ's."""
    ids, mask, y = _linear_batch()
    batch = {"input_ids": ids, "attention_mask": mask}
    s = FreeLBSettings(steps=3, step_size=0.3, max_norm=0.0, init_mag=0.5)
    model = _MeanPoolLinear()
    out = freelb_backward(model, batch, y, s, generator=torch.Generator().manual_seed(0), record=True)
    with torch.no_grad():
        emb = model.emb(ids)
        losses = [float(model(inputs_embeds=emb + d, attention_mask=mask, labels=y).loss) for d in out.deltas]
    assert len(set(losses)) == 3 and out.loss == pytest.approx(sum(losses) / 3, rel=1e-6)
    again = freelb_backward(_MeanPoolLinear(), batch, y, s, generator=torch.Generator().manual_seed(0))
    assert again.deltas == [] and again.loss == pytest.approx(out.loss, rel=1e-6)
    other = freelb_backward(
        _MeanPoolLinear(), batch, y, s, generator=torch.Generator().manual_seed(1), record=True
    )
    assert not torch.equal(other.deltas[0], out.deltas[0])
    fresh = _MeanPoolLinear()
    none = freelb_backward(fresh, batch, y, FreeLBSettings(steps=0))
    assert isinstance(none.loss, float) and none.loss != none.loss and none.deltas == []
    assert all(p.grad is None for p in fresh.parameters())


class _TwiceDropout(nn.Module):
    """One nn.Dropout called twice per forward (as a shared module would be)."""

    def __init__(self, p: float):
        super().__init__()
        self.drop = nn.Dropout(p)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.drop(x), self.drop(x)


def test_shared_dropout_keeps_one_mask_per_call_scaled_like_nn_dropout():
    """A dropout called twice per forward draws two masks, replayed in the same order in every later
    forward; kept entries are scaled by 1/(1-p) as nn.Dropout does; p = 1 drops everything."""
    torch.manual_seed(0)
    model = _TwiceDropout(0.5).train()
    x = torch.ones(4, 64)
    with SharedDropout(model) as shared:
        shared.next_forward()
        a1, a2 = model(x)
        shared.next_forward()
        b1, b2 = model(x)
    assert len(shared.masks[model.drop]) == 2 and not torch.equal(a1, a2)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert set(a1.unique().tolist()) == {0.0, 2.0}
    full = _TwiceDropout(1.0).train()
    with SharedDropout(full) as shared:
        shared.next_forward()
        z1, z2 = full(x)
    assert not z1.any() and not z2.any() and not z1.isnan().any()


def test_shared_dropout_restores_a_forward_set_on_the_instance():
    """A module that already had its own instance-level forward gets exactly that one back on exit."""
    model = _TwiceDropout(0.5).train()
    own = types.MethodType(lambda m, x: x * 3, model.drop)
    model.drop.forward = own
    with SharedDropout(model) as shared:
        shared.next_forward()
        assert model.drop.forward is not own
    assert model.drop.__dict__["forward"] is own and torch.equal(
        model.drop(torch.ones(2)), torch.full((2,), 3.0)
    )


class _EagerSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):  # noqa: ANN001, ANN201
        return "eager"


class _EagerSdpaSelfAttention(_EagerSelfAttention):
    def forward(self, x):  # noqa: ANN001, ANN201
        return "fused"


class _EagerSdpaSelfAttentionSubclass(_EagerSdpaSelfAttention):
    pass


def test_eager_attention_forward_skips_every_sdpa_ancestor():
    """The eager forward comes from the nearest ancestor that defines forward and is not itself an Sdpa
    class, however many Sdpa classes sit in between."""
    from robustprune.adversarial import _eager_attention_forward

    for cls in (_EagerSdpaSelfAttention, _EagerSdpaSelfAttentionSubclass):
        fwd = _eager_attention_forward(cls())
        assert fwd is not None and fwd(None) == "eager"
    assert _eager_attention_forward(_EagerSelfAttention()) is None
