"""CAP's pieces that the reference pins down: which vector ``cls`` is, what the banks are built from, one
training stage, SnC snapshots as the reference takes them, the loss's composition, masks, CAP-f importance.

Every test states the property it protects; each was checked by planting the bug it names (the mutation run,
``benchmarks/mutation.py``, plants the rest).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustprune.cap import masks as cap_masks
from robustprune.cap import structured as st
from robustprune.cap.banks import build_banks, encode, sample_extra, stack
from robustprune.cap.examples import Examples
from robustprune.cap.loss import (
    LossWeights,
    cap_loss,
    contrastive_terms,
    forward_student,
    kd_loss,
    representation,
)
from robustprune.cap.schedule import Stage, cubic_sparsity, schedule, separate, stages
from robustprune.cap.train import EpochSnapshots, TrainOptions, _lr_factor, epoch_steps, train_stage
from robustprune.modeling import is_structured, load_structured
from tests.conftest import tiny_bert


def _examples(n: int = 24, seed: int = 0) -> Examples:
    """n tokenised rows of different lengths (ids 5..98), labels 0/1 alternating."""
    g = np.random.default_rng(seed)
    rows = tuple(tuple(int(x) for x in g.integers(5, 99, size=int(g.integers(3, 9)))) for _ in range(n))
    return Examples(input_ids=rows, labels=torch.arange(n) % 2)


def _batch(ex: Examples, idx) -> dict[str, torch.Tensor]:
    return ex.batch(list(idx))


# --------------------------------------------------------------------------------------- representation
def test_cls_representation_is_the_pooler_output_after_the_classifiers_dropout():
    """The reference feeds the contrastive loss the pooled output *after* ``self.dropout`` — the very tensor the
    classifier reads (modeling_bert_masked.py lines 751-770). Planted: the pre-dropout pooler output."""
    model = tiny_bert().train()
    model.dropout.p = 0.5
    batch = _batch(_examples(), range(6))
    torch.manual_seed(3)
    logits, rep = forward_student(model, batch, "cls")
    torch.manual_seed(3)
    out = model.bert(**batch)
    dropped = model.dropout(out.pooler_output)
    assert torch.equal(rep, F.normalize(dropped, dim=-1))
    assert torch.equal(logits, model.classifier(dropped))
    assert (rep == 0).any()  # dropout zeroed entries: a tanh pooler output is never exactly 0
    assert not torch.allclose(rep, F.normalize(out.pooler_output, dim=-1))
    torch.manual_seed(3)
    assert torch.equal(logits, model(**batch).logits)  # the classifier's own forward, dropout mask and all


def test_forward_student_mean_and_eval_mode_match_the_model():
    model = tiny_bert().eval()
    ex = _examples()
    batch = _batch(ex, range(5))
    logits, rep = forward_student(model, batch, "mean")
    with torch.no_grad():
        out = model.bert(**batch)
        assert torch.allclose(logits, model(**batch).logits)
    m = batch["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(rep, F.normalize((out.last_hidden_state * m).sum(1) / m.sum(1), dim=-1), atol=1e-6)
    _, rep_cls = forward_student(model, batch, "cls")  # eval: no dropout, the pooler output itself
    assert torch.allclose(rep_cls, F.normalize(out.pooler_output, dim=-1), atol=1e-6)


def test_forward_student_refuses_a_model_without_bert_or_classifier():
    batch = _batch(_examples(), range(2))
    with pytest.raises(ValueError, match="BERT sequence classifiers"):
        forward_student(tiny_bert().bert, batch, "cls")  # a bare encoder: no classifier
    nohead = tiny_bert()
    del nohead.classifier
    with pytest.raises(ValueError, match="BERT sequence classifiers"):
        forward_student(nohead, batch, "cls")


def test_representation_cls_is_the_normalised_pooled_vector_and_rejects_unknown():
    pooled = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    hidden = torch.randn(2, 3, 2)
    mask = torch.ones(2, 3, dtype=torch.long)
    assert torch.allclose(representation(hidden, mask, pooled, "cls"), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="not one of"):
        representation(hidden, mask, pooled, "max")


# ------------------------------------------------------------------------------------------------ banks
def test_encode_gives_each_example_its_own_normalised_row_in_eval_mode():
    """Row i is example i whatever the batching (inference batches are sorted by length); eval mode by
    default (two passes agree), the model's mode restored; a classifier's logits are its own."""
    model = tiny_bert().train()
    ex = _examples(13)
    enc = encode(model, ex, "cls", batch_size=4)
    assert model.training  # restored
    assert enc.vectors.shape == (13, 32) and torch.allclose(enc.vectors.norm(dim=-1), torch.ones(13))
    model.eval()
    with torch.no_grad():
        for i in (0, 7, 12):
            b = _batch(ex, [i])
            out = model.bert(**b)
            assert torch.allclose(enc.vectors[i], F.normalize(out.pooler_output, dim=-1)[0], atol=1e-6)
            assert torch.allclose(enc.logits[i], model(**b).logits[0], atol=1e-6)
    again = encode(model, ex, "cls", batch_size=5)
    assert torch.allclose(again.vectors, enc.vectors, atol=1e-6)
    bare = encode(model.bert, ex, "mean")
    assert bare.logits is None and bare.vectors.shape == (13, 32)


def test_encode_in_train_mode_has_dropout_on_and_restores_eval():
    """SnC snapshots are taken in train mode, as the reference's (the student is still in train mode).
    Planted: ``train_mode`` ignored."""
    model = tiny_bert().eval()
    ex = _examples(8)
    ev = encode(model, ex, "mean").vectors
    torch.manual_seed(0)
    tr = encode(model, ex, "mean", train_mode=True).vectors
    assert not model.training
    assert not torch.allclose(tr, ev, atol=1e-4)
    torch.manual_seed(0)
    assert torch.equal(encode(model, ex, "mean", train_mode=True).vectors, tr)  # seeded: reproducible


def test_build_banks_prc_from_the_pretrained_fic_and_teacher_logits_from_the_finetuned():
    """PrC contrasts with the pre-trained encoder, FiC with the fine-tuned teacher. Planted: swapped, or FiC
    from the pre-trained model, or the teacher logits from another model."""
    pretrained, finetuned = tiny_bert(seed=1), tiny_bert(seed=2)
    ex = _examples(10)
    banks = build_banks(pretrained.bert, finetuned, ex, "cls", batch_size=4)
    assert torch.allclose(banks["prc"], encode(pretrained.bert, ex, "cls", batch_size=4).vectors)
    fic = encode(finetuned, ex, "cls", batch_size=4)
    assert torch.allclose(banks["fic"], fic.vectors) and torch.allclose(banks["teacher_logits"], fic.logits)
    assert not torch.allclose(banks["prc"], banks["fic"], atol=1e-3)
    assert torch.equal(banks["labels"], ex.labels)
    with pytest.raises(ValueError, match="fine-tuned classifier"):
        build_banks(pretrained.bert, finetuned.bert, ex, "cls")


def test_stack_orders_snapshots_and_sample_extra_draws_distinct_ids():
    a, b = torch.zeros(4, 3), torch.ones(4, 3)
    bank = stack([a, b])
    assert bank.shape == (4, 2, 3) and torch.equal(bank[:, 0], a) and torch.equal(bank[:, 1], b)
    with pytest.raises(ValueError, match="at least one"):
        stack([])
    g = torch.Generator().manual_seed(0)
    assert len(sample_extra(10, 9, 2, g)) == 4  # 9 // 2 per step
    assert sorted(sample_extra(10, 100, 1, g).tolist()) == list(range(10))  # at most all N
    assert len(sample_extra(10, 5, 0, g)) == 5  # R = 0 counts as one


# -------------------------------------------------------------------------------------------------- loss
def _contrastive_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    bank = stack([F.normalize(torch.randn(12, 8, generator=g), dim=-1) for _ in range(2)]).to(dtype)
    bank_labels = torch.arange(12) % 2
    ids = torch.tensor([1, 4, 6, 9])
    anchor = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    return anchor, ids, bank_labels[ids], bank, bank_labels, torch.tensor([0, 3, 5])


def test_cap_loss_is_the_weighted_sum_of_its_terms():
    """total = ce·CE + kd·KD + Σ_banks (unsup·L_unsup + sup·L_sup), each part reported. Planted: a term
    subtracted, divided, dropped, an argument swapped, KD without a teacher."""
    anchor, ids, labels, bank, bank_labels, extra = _contrastive_inputs()
    g = torch.Generator().manual_seed(1)
    logits, teacher = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    bank2 = stack([F.normalize(torch.randn(12, 8, generator=g), dim=-1)])
    banks = {"prc": (bank, bank_labels), "snc": (bank2, bank_labels)}
    extras = {"prc": extra, "snc": torch.tensor([2, 7])}
    w = LossWeights(ce=0.3, kd=0.7, unsup=0.2, sup=5.0)
    parts = cap_loss(
        logits, anchor, ids, labels, teacher, banks, extras, w, temperature=0.1, kd_temperature=2.0
    )
    ce, kd = F.cross_entropy(logits, labels), kd_loss(logits, teacher, 2.0)
    expected = 0.3 * ce + 0.7 * kd
    for name in ("prc", "snc"):
        u, s = contrastive_terms(anchor, ids, labels, banks[name][0], bank_labels, extras[name], 0.1)
        expected = expected + 0.2 * u + 5.0 * s
        assert parts.contrastive[name] == pytest.approx((float(u), float(s)))
        assert u > 0 and s > 0
    assert torch.allclose(parts.total, expected)
    assert parts.ce == pytest.approx(float(ce)) and parts.kd == pytest.approx(float(kd))
    # no teacher: no KD term, whatever its weight
    no_t = cap_loss(logits, anchor, ids, labels, None, {}, {}, w, temperature=0.1, kd_temperature=2.0)
    assert torch.allclose(no_t.total, 0.3 * ce) and no_t.kd == 0.0
    # only the supervised weight set: the terms are still computed
    sup_only = LossWeights(ce=0.0, kd=0.0, unsup=0.0, sup=1.0)
    p2 = cap_loss(
        logits, anchor, ids, labels, teacher, banks, extras, sup_only, temperature=0.1, kd_temperature=2.0
    )
    assert set(p2.contrastive) == {"prc", "snc"} and p2.kd == 0.0
    assert torch.allclose(p2.total, sum(torch.tensor(s) for _, s in p2.contrastive.values()))


def test_contrastive_terms_follow_the_anchor_dtype_and_device():
    """A float64 bank against float32 anchors, and tensors on the ``meta`` device: the columns follow the
    anchor (``bank.to(anchor)``, the self mask on the anchor's device). Planted: a bank or mask left behind."""
    anchor, ids, labels, bank, bank_labels, extra = _contrastive_inputs(torch.float64)
    u, s = contrastive_terms(anchor, ids, labels, bank, bank_labels, extra, 0.1)
    assert u.dtype == torch.float32 and s.dtype == torch.float32
    meta = [t.to("meta") for t in (anchor, ids, labels, bank, bank_labels, extra)]
    u, s = contrastive_terms(*meta, 0.1)
    assert u.device.type == "meta" and s.device.type == "meta"


def test_kd_loss_is_zero_for_identical_logits_and_grows_with_disagreement():
    a = torch.tensor([[2.0, -1.0], [0.5, 0.2]])
    assert kd_loss(a, a, 2.0).abs() < 1e-7
    assert kd_loss(a, -a, 2.0) > kd_loss(a, a * 0.5, 2.0) > 0


# --------------------------------------------------------------------------------------------- schedule
def test_schedule_units_paths_and_stage_indices():
    """Lengths in epochs multiply every count by the epoch's steps; ``separate`` gives every sparsity its own
    dense warm-up from 0 (the reference's one run per target); stage i has index i."""
    run = schedule([0.5, 0.9], 2, [3, 4], 1, path="staged", unit=10)
    assert [(s.index, s.initial, s.final, s.warmup, s.ramp, s.hold) for s in run] == [
        (0, 0.0, 0.5, 20, 30, 10),
        (1, 0.5, 0.9, 0, 40, 10),
    ]
    sep = schedule([0.5, 0.9], 2, 5, 3, path="separate", unit=7)
    assert [(s.index, s.initial, s.final, s.warmup, s.ramp, s.hold) for s in sep] == [
        (0, 0.0, 0.5, 14, 35, 21),
        (1, 0.0, 0.9, 14, 35, 21),
    ]
    assert separate([0.5], 1, 2, 3) == [Stage(0, 0.0, 0.5, 1, 2, 3)]
    assert schedule([0.5, 0.9], 1, 2, 3) == stages([0.5, 0.9], 1, 2, 3)  # defaults: staged, in steps
    with pytest.raises(ValueError, match="ramp has 1 entries"):
        separate([0.5, 0.9], 0, [1], 1)
    with pytest.raises(ValueError, match="hold has 3 entries"):
        separate([0.5, 0.9], 0, 1, [1, 2, 3])
    with pytest.raises(ValueError, match="path"):
        schedule([0.5], 0, 1, 1, path="zigzag")
    with pytest.raises(ValueError, match="at least one step"):
        schedule([0.5], 0, 1, 1, unit=0)
    with pytest.raises(ValueError, match="ramp has 1 entries"):
        stages([0.5, 0.9], 0, [1], 1)
    with pytest.raises(ValueError, match="hold has 3 entries"):
        stages([0.5, 0.9], 0, 1, [1, 2, 3])


def test_cubic_sparsity_with_a_one_step_ramp():
    """A ramp of one step starts at the initial sparsity and reaches the final one the step after."""
    assert cubic_sparsity(4, 0.2, 0.8, warmup=4, ramp=1) == pytest.approx(0.2)
    assert cubic_sparsity(5, 0.2, 0.8, warmup=4, ramp=1) == 0.8
    assert cubic_sparsity(0, 0.2, 0.8, warmup=0, ramp=0) == 0.8


def test_epoch_steps_counts_the_length_bucketed_batches():
    from robustprune.finetune import length_bucketed_batches

    for n, b in ((1, 4), (64, 32), (65, 32), (2000, 32), (3300, 32), (130, 1)):
        lengths = np.random.default_rng(n).integers(3, 40, size=n)
        assert epoch_steps(n, b) == len(length_bucketed_batches(lengths, b, np.random.default_rng(0))), (n, b)
    # 3300 = 1600 + 1600 + 100: a window of 50 batches holds whole batches, so only the last batch is partial
    assert epoch_steps(3300, 32, bucket=50) == 50 + 50 + 4 == -(-3300 // 32)
    with pytest.raises(ValueError, match="epoch"):
        epoch_steps(0, 32)


def test_epoch_snapshots_are_due_at_every_epoch_start_after_the_first():
    """The reference encodes the student at the start of every epoch; epoch 0's pass is PrC, so SnC starts
    at the second epoch. Steps count over the whole run (``offset``: the earlier stages' steps)."""
    e = EpochSnapshots(every=5)
    assert [s for s in range(16) if e.due(s)] == [5, 10, 15]
    later = EpochSnapshots(every=5, offset=12)
    assert [s for s in range(10) if later.due(s)] == [3, 8]
    assert not any(EpochSnapshots(every=0).due(s) for s in range(10))


def test_lr_factor_warms_up_then_decays_to_zero():
    assert [_lr_factor(s, 10, 2) for s in range(10)] == pytest.approx(
        [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]
    )
    assert _lr_factor(0, 4, 0) == 1.0


# ------------------------------------------------------------------------------------------- train stage
def _opts(**kw) -> TrainOptions:
    base = {"batch_size": 4, "lr": 1e-3, "extra_negatives": 6, "representation": "cls"}
    return TrainOptions(**{**base, **kw})


def test_train_stage_prunes_exactly_and_is_reproducible():
    """After a stage every encoder matrix keeps exactly int((1 − s)·numel) weights; the same seed gives
    identical weights and losses; the optimiser moved the weights."""
    ex = _examples(16)
    teacher = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    stage = Stage(0, 0.0, 0.75, warmup=1, ramp=3, hold=2)
    runs = []
    for _ in range(2):
        model = tiny_bert()
        cap_masks.attach(model, "magnitude")
        res = train_stage(model, ex, teacher, {}, _opts(), steps=stage.steps, seed=5, stage=stage)
        runs.append((model, res))
    (m1, r1), (m2, r2) = runs
    assert r1.steps == 6 and len(r1.losses) == 6 and r1.losses == r2.losses
    for p in cap_masks.parametrizations(m1).values():
        assert int(p.mask.sum()) == int(0.25 * p.mask.numel())
    for (k, v), (_, w) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    dense = tiny_bert().state_dict()
    assert not torch.equal(m1.state_dict()["classifier.weight"], dense["classifier.weight"])
    assert not m1.training  # left in eval mode
    assert set(r1.parts) == {"ce", "kd"} and r1.parts["kd"] > 0


def test_train_stage_takes_epoch_snapshots_into_the_snc_bank():
    """With epoch snapshots the student is encoded (train mode) at every epoch start after the first and the
    vector joins SnC at once: the loss has an SnC term from then on; the bank passed in is not modified."""
    ex = _examples(12)
    every = epoch_steps(len(ex), 4)  # 3 steps an epoch
    model = tiny_bert()
    prc = encode(tiny_bert(seed=9).bert, ex, "cls").vectors
    banks = {"prc": (stack([prc]), ex.labels)}
    res = train_stage(
        model, ex, None, banks, _opts(), steps=7, seed=1, snapshots=EpochSnapshots(every=every, offset=1)
    )
    assert len(res.snapshots) == 2  # global steps 3 and 6 (offset 1: stage steps 2 and 5)
    assert all(s.shape == (12, 32) for s in res.snapshots)
    assert torch.allclose(res.snapshots[0].norm(dim=-1), torch.ones(12))
    assert not torch.allclose(res.snapshots[0], res.snapshots[1])
    assert "snc_sup" in res.parts and set(banks) == {"prc"}
    assert res.snapshot_seconds > 0
    none = train_stage(tiny_bert(), ex, None, banks, _opts(), steps=3, seed=1)
    assert none.snapshots == [] and "snc_sup" not in none.parts


def test_train_stage_movement_scores_move_and_decide_the_mask():
    """CAP-m: the scores are trained (their own learning rate) and the final mask is the top-k of them."""
    ex = _examples(8)
    model = tiny_bert()
    cap_masks.attach(model, "movement")
    stage = Stage(0, 0.0, 0.5, warmup=0, ramp=2, hold=1)
    train_stage(model, ex, None, {}, _opts(score_lr=0.1), steps=stage.steps, seed=0, stage=stage)
    for p in cap_masks.parametrizations(model).values():
        assert p.scores.abs().sum() > 0
        assert torch.equal(p.mask, cap_masks.topk_mask(p.scores, int(0.5 * p.mask.numel())))


# ------------------------------------------------------------------------------------------------ masks
def test_topk_mask_edge_counts_and_ties():
    x = torch.tensor([3.0, 1.0, 1.0, 1.0, 0.0])
    for keep, expected in ((0, [0, 0, 0, 0, 0]), (1, [1, 0, 0, 0, 0]), (2, [1, 1, 0, 0, 0]), (5, [1] * 5)):
        m = cap_masks.topk_mask(x, keep)
        assert m.dtype == torch.bool and m.tolist() == [bool(v) for v in expected], keep
    assert cap_masks.topk_mask(x, 9).all()
    assert cap_masks.kept_count(10, 0.75) == 2 and cap_masks.kept_count(8, 0.875) == 1


def test_attach_returns_the_parametrizations_and_refuses_twice():
    model = tiny_bert()
    got = cap_masks.attach(model, "magnitude")
    assert got == cap_masks.parametrizations(model) and len(got) == 12
    assert all(isinstance(p, cap_masks.WeightMask) and p.mask.dtype == torch.bool for p in got.values())
    with pytest.raises(ValueError, match="already has a weight parametrization"):
        cap_masks.attach(model, "magnitude")
    with pytest.raises(ValueError, match="criterion"):
        cap_masks.WeightMask(torch.zeros(2, 2), "random")


def test_current_masks_and_masked_linears_cover_only_masked_layers():
    from torch.nn.utils import parametrize

    model = tiny_bert()
    cap_masks.attach(model, "magnitude")
    cap_masks.update_masks(model, 0.5)
    masks = cap_masks.current_masks(model)
    assert set(masks) == set(cap_masks.masked_linears(model)) and len(masks) == 12
    name = next(iter(masks))
    masks[name][:] = False  # a copy: the model's mask is untouched
    assert cap_masks.parametrizations(model)[name].mask.any()
    lin = cap_masks.masked_linears(model)[name]
    parametrize.remove_parametrizations(lin, "weight")
    assert name not in cap_masks.masked_linears(model) and len(cap_masks.current_masks(model)) == 11


# ------------------------------------------------------------------------------------------------- CAP-f
def test_importance_is_the_sum_of_absolute_gate_gradients():
    """CAP-f scores a unit by Σ_batches |∂L/∂gate| (then per-layer L2 normalisation). The two batches'
    gradients have opposite signs on some gates, so the signed sum |Σ g| differs. Planted: the signed
    gradient (the issue's bug), |Σ g| instead of Σ |g|, subtraction."""
    torch.manual_seed(0)
    model = tiny_bert()
    ids = torch.randint(5, 99, (4, 8))
    losses = [
        lambda m: F.cross_entropy(m(input_ids=ids).logits, torch.tensor([0, 1, 0, 1])),
        lambda m: F.cross_entropy(m(input_ids=ids).logits, torch.tensor([1, 0, 1, 0])),
    ]
    gates = st.attach_gates(model)
    grads = [torch.autograd.grad(fn(model.eval()), gates.heads + gates.neurons) for fn in losses]
    gates.remove()
    by_hand = [g1.abs() + g2.abs() for g1, g2 in zip(*grads, strict=True)]
    signed = [(g1 + g2).abs() for g1, g2 in zip(*grads, strict=True)]
    assert any(not torch.allclose(a, b) for a, b in zip(by_hand, signed, strict=True))
    raw = st.importance(model, losses, normalize=False)
    for got, want in zip(raw.heads + raw.neurons, by_hand, strict=True):
        assert torch.allclose(got, want, atol=1e-7) and (got >= 0).all()
    normed = st.importance(model, losses)
    for got, want in zip(normed.heads + normed.neurons, by_hand, strict=True):
        assert torch.allclose(got, want / want.norm(), atol=1e-6)


def test_importance_of_units_the_loss_never_reaches_is_zero():
    """A loss read off the first layer's output does not depend on the second layer's gates: their
    importance is exactly 0 (their gradients are unused, not an error)."""
    model = tiny_bert()
    ids = torch.randint(5, 99, (2, 6))

    def first_layer(m):
        return m.bert(input_ids=ids, output_hidden_states=True).hidden_states[1].pow(2).sum()

    imp = st.importance(model, [first_layer], normalize=False)
    assert imp.heads[0].sum() > 0 and imp.neurons[0].sum() > 0
    assert torch.equal(imp.heads[1], torch.zeros(4)) and torch.equal(imp.neurons[1], torch.zeros(40))


def test_gates_keep_attention_outputs_and_follow_the_model_device():
    """Gated forward returns the same attention maps as the plain model (the hook passes them on), and the
    gates live on the model's device (``meta`` here)."""
    model = tiny_bert()
    ids = torch.randint(5, 99, (2, 6))
    with torch.no_grad():
        plain = model(input_ids=ids, output_attentions=True).attentions
        gates = st.attach_gates(model, requires_grad=False)
        gated = model(input_ids=ids, output_attentions=True).attentions
        gates.remove()
    assert len(gated) == 2 and all(torch.allclose(a, b) for a, b in zip(plain, gated, strict=True))
    meta = tiny_bert().to("meta")
    g = st.attach_gates(meta)
    assert all(t.device.type == "meta" for t in g.heads + g.neurons)
    g.remove()


def test_layers_need_a_bert_encoder():
    class NoLayers(torch.nn.Module):
        encoder = torch.nn.Module()

    assert len(st._layers(tiny_bert().bert)) == 2  # a bare encoder works too
    with pytest.raises(ValueError):
        st._layers(NoLayers())
    with pytest.raises(ValueError):
        st._layers(torch.nn.Linear(2, 2))


def test_select_heads_defaults_ties_and_edges():
    """One head per layer is protected by default; score ties are broken by layer, then position; exactly
    all removable heads may go; nothing goes for n = 0."""
    scores = [torch.tensor([0.5, 0.9, 0.5]), torch.tensor([0.9, 0.5, 0.7])]
    assert st.select_heads(scores, 1) == [[0], []]  # ties at 0.5: layer 0 first, then position 0
    assert st.select_heads(scores, 2) == [[0, 2], []]
    assert st.select_heads(scores, 4) == [[0, 2], [1, 2]]  # all removable ones: the top head of each stays
    assert st.select_heads(scores, 0) == [[], []]
    tie = [torch.tensor([0.1, 0.5, 0.5, 0.5]), torch.tensor([0.5, 0.9, 0.9, 0.1])]
    assert st.select_heads(tie, 2, min_heads=1) == [[0], [3]]
    assert st.select_heads([torch.tensor([0.3, 0.2]), torch.tensor([0.2, 0.3])], 1, min_heads=1) == [[1], []]


def test_select_neurons_protects_the_first_of_tied_neurons():
    """Ranking is stable: among equal scores the earliest position ranks first (and is the one protected),
    also for FFN-sized layers (thousands of units)."""
    scores = [torch.ones(3000), torch.ones(3000)]
    out = st.select_neurons(scores, 2 * 3000 - 2)
    assert out == [list(range(1, 3000)), list(range(1, 3000))]
    assert st.select_neurons([torch.tensor([0.2, 0.1, 0.3])], 2) == [[0, 1]]
    assert st.select_neurons([torch.tensor([0.2, 0.1, 0.3])], 1, min_neurons=2) == [[1]]
    with pytest.raises(ValueError, match="removable"):
        st.select_neurons([torch.tensor([0.2, 0.1, 0.3])], 2, min_neurons=2)


def test_is_structured_and_load_structured_edges(tmp_path):
    """A directory without config.json is not structured; a plain classifier loads through load_structured;
    weights that do not fit the recorded structure are refused with the file named."""
    from safetensors.torch import load_file, save_file

    assert not is_structured(tmp_path / "nothing")
    plain = tiny_bert()
    plain.save_pretrained(tmp_path / "plain")
    assert not is_structured(tmp_path / "plain")
    ids = torch.randint(5, 99, (2, 5))
    with torch.no_grad():
        assert torch.equal(
            load_structured(tmp_path / "plain")(input_ids=ids).logits, plain.eval()(input_ids=ids).logits
        )
    small = tiny_bert()
    st.remove_units(small, [[0], []], [[1, 2], []])
    small.save_pretrained(tmp_path / "small")
    f = tmp_path / "small" / "model.safetensors"
    state = load_file(str(f))
    del state["bert.encoder.layer.0.output.dense.bias"]
    save_file(state, str(f))
    with pytest.raises(ValueError, match="do not fit"):
        load_structured(tmp_path / "small")


def test_kd_loss_takes_the_teachers_logits_to_the_students_dtype():
    s = torch.tensor([[2.0, -1.0], [0.5, 0.2]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    got = kd_loss(s, t, 2.0)
    assert got.dtype == torch.float32 and torch.equal(got, kd_loss(s, t.float(), 2.0))
