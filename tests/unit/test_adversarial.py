"""FreeLB (robustprune.adversarial) and the ingredient optimisers (robustprune.finetune) on a tiny BERT."""

from __future__ import annotations

import pytest
import torch

from robustprune.adversarial import FreeLBSettings, freelb_backward, init_delta, project
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
        FreeLBSettings(max_norm=0)
