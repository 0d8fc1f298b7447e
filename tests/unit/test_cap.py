"""CAP library: the loss against a naive transcription of the reference, schedule, masks, structured units."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from robustprune.cap import masks as cap_masks
from robustprune.cap import structured as st
from robustprune.cap.banks import sample_extra, stack
from robustprune.cap.loss import LossWeights, cap_loss, contrastive_terms, kd_loss, representation
from robustprune.cap.schedule import cubic_sparsity, stages
from robustprune.modeling import is_structured, load_structured, prunable_linears
from tests.conftest import tiny_bert


def _reference_loop(anchor, ids, labels, bank, bank_labels, extra_ids, tau):
    """The reference's calculate_contrastive_loss written per anchor and per column (float64)."""
    bsz, n_rep = len(ids), bank.shape[1]
    cols, col_ids, col_labels = [], [], []
    for j in range(bsz):  # each anchor's own detached vector, then its R bank vectors
        cols.append(anchor[j].detach())
        col_ids.append(int(ids[j]))
        col_labels.append(int(labels[j]))
        for r in range(n_rep):
            cols.append(bank[ids[j], r])
            col_ids.append(int(ids[j]))
            col_labels.append(int(labels[j]))
    for e in extra_ids.tolist():
        for r in range(n_rep):
            cols.append(bank[e, r])
            col_ids.append(e)
            col_labels.append(int(bank_labels[e]))
    out = []
    for key, col_key in ((ids, col_ids), (labels, col_labels)):
        total, count = 0.0, 0
        for i in range(bsz):
            self_c = i * (n_rep + 1)
            scores = torch.stack([anchor[i] @ c for c in cols]) / tau
            scores[self_c] = -1e6
            logp = torch.log_softmax(scores, 0)
            pos = [c for c in range(len(cols)) if c != self_c and col_key[c] == int(key[i])]
            total = total + sum(logp[c] for c in pos) / len(pos)
            count += len(pos)
        out.append(-total / count)
    return out


def _bank(n=20, n_rep=3, h=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    snaps = [F.normalize(torch.randn(n, h, generator=g, dtype=torch.float64), dim=-1) for _ in range(n_rep)]
    return stack(snaps).double(), torch.randint(0, 2, (n,), generator=g)


def test_contrastive_loss_matches_reference_loop_with_three_snapshots():
    bank, bank_labels = _bank()
    g = torch.Generator().manual_seed(1)
    ids = torch.tensor([3, 7, 0, 12, 19])
    labels = bank_labels[ids]
    anchor = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    extra = sample_extra(20, 18, 3, torch.Generator().manual_seed(2))  # 6 ids
    extra = torch.cat([extra, ids[:1]])  # an extra that is also in the batch: a positive too
    unsup, sup = contrastive_terms(anchor, ids, labels, bank, bank_labels, extra, 0.1)
    ref_unsup, ref_sup = _reference_loop(anchor, ids, labels, bank, bank_labels, extra, 0.1)
    assert abs(unsup.item() - ref_unsup.item()) < 1e-6
    assert abs(sup.item() - ref_sup.item()) < 1e-6
    (g_fast,) = torch.autograd.grad(unsup + 3 * sup, anchor)
    (g_ref,) = torch.autograd.grad(ref_unsup + 3 * ref_sup, anchor)
    assert torch.allclose(g_fast, g_ref, atol=1e-6)


def test_banks_get_no_gradient_and_extra_ids_are_distinct():
    bank, bank_labels = _bank()
    bank = bank.float().requires_grad_()
    anchor = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    ids = torch.tensor([1, 2, 3, 4])
    extra = sample_extra(20, 30, 3, torch.Generator().manual_seed(0))
    assert len(extra) == 10 and len(set(extra.tolist())) == 10
    unsup, sup = contrastive_terms(anchor, ids, bank_labels[ids], bank, bank_labels, extra, 0.1)
    (unsup + sup).backward()
    assert bank.grad is None
    assert anchor.grad is not None and anchor.grad.abs().sum() > 0


def test_zero_contrastive_weights_give_exactly_ce_plus_kd():
    g = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    rep = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    bank, bank_labels = _bank()
    w = LossWeights(ce=0.1, kd=0.9, unsup=0.0, sup=0.0)
    parts = cap_loss(
        logits,
        rep,
        torch.arange(6),
        labels,
        teacher,
        {"prc": (bank.float(), bank_labels)},
        {"prc": torch.arange(3)},
        w,
        temperature=0.1,
        kd_temperature=2.0,
    )
    expected = 0.1 * F.cross_entropy(logits, labels) + 0.9 * kd_loss(logits, teacher, 2.0)
    assert torch.equal(parts.total, expected) and parts.contrastive == {}
    kl = F.kl_div(F.log_softmax(logits / 2, -1), F.softmax(teacher / 2, -1), reduction="batchmean") * 4
    assert torch.equal(kd_loss(logits, teacher, 2.0), kl)


def test_representation_mean_ignores_padding_and_is_unit_norm():
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    rep = representation(hidden, mask, None, "mean")
    assert torch.allclose(rep[0], F.normalize(hidden[0, :3].mean(0), dim=-1))
    assert torch.allclose(rep.norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="pooler"):
        representation(hidden, mask, None, "cls")


def test_cubic_schedule_boundaries_and_mid_ramp():
    assert cubic_sparsity(0, 0.0, 0.8, warmup=10, ramp=20) == 0.0
    assert cubic_sparsity(9, 0.0, 0.8, warmup=10, ramp=20) == 0.0
    assert cubic_sparsity(10, 0.0, 0.8, warmup=10, ramp=20) == 0.0  # ramp starts at the initial value
    assert cubic_sparsity(20, 0.0, 0.8, warmup=10, ramp=20) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert cubic_sparsity(30, 0.0, 0.8, warmup=10, ramp=20) == 0.8
    assert cubic_sparsity(99, 0.5, 0.75, warmup=0, ramp=20) == 0.75
    run = stages([0.5, 0.75, 0.9], warmup=5, ramp=10, hold=3)
    assert [(s.initial, s.final, s.warmup, s.steps) for s in run] == [
        (0.0, 0.5, 5, 18),
        (0.5, 0.75, 0, 13),
        (0.75, 0.9, 0, 13),
    ]
    with pytest.raises(ValueError, match="increase"):
        stages([0.5, 0.5], 0, 1, 1)
    per_stage = stages([0.5, 0.9], warmup=0, ramp=[4, 10], hold=[0, 20])
    assert [(s.ramp, s.hold, s.steps) for s in per_stage] == [(4, 0, 4), (10, 20, 30)]
    assert per_stage[0].sparsity(3) < 0.5 and per_stage[0].sparsity(4) == 0.5
    with pytest.raises(ValueError, match="entries"):
        stages([0.5, 0.9], 0, [1], 1)


@pytest.mark.parametrize("criterion", ["magnitude", "movement"])
def test_masks_keep_exact_counts_per_matrix(criterion):
    model = tiny_bert()
    cap_masks.attach(model, criterion)  # movement scores all start at 0: every entry ties
    for s in (0.0, 0.3, 0.875, 0.9):
        cap_masks.update_masks(model, s)
        for p in cap_masks.parametrizations(model).values():
            assert int(p.mask.sum()) == int((1 - s) * p.mask.numel())
    assert len(cap_masks.parametrizations(model)) == 12  # every encoder Linear, nothing else


def test_topk_mask_breaks_ties_by_position():
    x = torch.tensor([[1.0, 2.0, 2.0], [2.0, 0.0, 2.0]])
    m = cap_masks.topk_mask(x, 3)
    assert m.tolist() == [[False, True, True], [True, False, False]]


def test_movement_scores_get_the_straight_through_gradient():
    model = tiny_bert()
    cap_masks.attach(model, "movement")
    name, lin = next(iter(cap_masks.masked_linears(model).items()))
    p = lin.parametrizations.weight
    with torch.no_grad():
        p[0].scores.normal_()
    cap_masks.update_masks(model, 0.5)
    x = torch.randn(3, lin.in_features)
    w_eff = lin.weight  # W ⊙ M, through the parametrization
    out = F.linear(x, w_eff, lin.bias)
    (g_weff,) = torch.autograd.grad(out.pow(2).sum(), w_eff, retain_graph=True)
    out.pow(2).sum().backward()
    assert torch.allclose(p[0].scores.grad, g_weff * p.original.detach(), atol=1e-6)
    assert torch.allclose(p.original.grad, g_weff * p[0].mask, atol=1e-6)  # pruned weights: no gradient
    assert torch.equal(w_eff.detach(), p.original.detach() * p[0].mask)


def test_soft_masks_are_the_sigmoid_threshold_with_the_reference_floor():
    """CAP-soft: M = σ(S) > τ; when fewer than 0.5% survive, exactly int(0.005·numel) + 1 (top scores) stay."""
    model = tiny_bert()
    cap_masks.attach(model, "soft")
    torch.manual_seed(0)
    for p in cap_masks.parametrizations(model).values():
        with torch.no_grad():
            p.scores.normal_()
    cap_masks.update_masks(model, 0.5, threshold=0.6)  # the sparsity argument is ignored by soft masks
    for p in cap_masks.parametrizations(model).values():
        assert torch.equal(p.mask, torch.sigmoid(p.scores) > 0.6)
    for p in cap_masks.parametrizations(model).values():
        with torch.no_grad():
            p.scores.sub_(20.0)  # σ(S) < 1e-6 everywhere: the floor decides
    cap_masks.update_masks(model, 0.5, threshold=0.5)
    for p in cap_masks.parametrizations(model).values():
        floor = int(0.005 * p.mask.numel()) + 1
        assert int(p.mask.sum()) == floor
        assert torch.equal(p.mask, cap_masks.topk_mask(p.scores, floor))
    with pytest.raises(ValueError, match="threshold"):
        cap_masks.update_masks(model, 0.5)


def test_soft_l1_penalty_value_gradient_and_it_prunes():
    """l1_penalty = mean over matrices of mean σ(S); its gradient is σ'(S)/(numel·matrices) > 0, so descending
    it alone lowers every score and the kept fraction at a fixed threshold never grows (and does shrink)."""
    model = tiny_bert()
    cap_masks.attach(model, "soft")
    params = cap_masks.parametrizations(model)
    torch.manual_seed(1)
    for p in params.values():
        with torch.no_grad():
            p.scores.normal_(0.0, 0.5)
    scores = cap_masks.score_parameters(model)
    pen = cap_masks.l1_penalty(model)
    assert torch.allclose(pen, torch.stack([torch.sigmoid(s).mean() for s in scores]).mean())
    pen.backward()
    for s in scores:
        sg = torch.sigmoid(s.detach())
        assert torch.allclose(s.grad, sg * (1 - sg) / (s.numel() * len(scores)), rtol=1e-5, atol=1e-12)
    opt = torch.optim.SGD(scores, lr=50.0 * len(scores))
    kept = []
    for _ in range(5):
        cap_masks.update_masks(model, 0.0, threshold=0.5)
        kept.append(sum(int(p.mask.sum()) for p in params.values()))
        opt.zero_grad()
        cap_masks.l1_penalty(model).backward()
        opt.step()
    assert all(a >= b for a, b in zip(kept, kept[1:], strict=False)) and kept[-1] < kept[0]
    with pytest.raises(ValueError, match="scores"):
        other = tiny_bert()
        cap_masks.attach(other, "magnitude")
        cap_masks.l1_penalty(other)


def test_soft_scores_get_the_straight_through_gradient():
    model = tiny_bert()
    cap_masks.attach(model, "soft")
    lin = next(iter(cap_masks.masked_linears(model).values()))
    p = lin.parametrizations.weight
    with torch.no_grad():
        p[0].scores.normal_()
    cap_masks.update_masks(model, 0.0, threshold=0.5)
    x = torch.randn(3, lin.in_features)
    w_eff = lin.weight
    out = F.linear(x, w_eff, lin.bias)
    (g_weff,) = torch.autograd.grad(out.pow(2).sum(), w_eff, retain_graph=True)
    out.pow(2).sum().backward()
    assert torch.allclose(p[0].scores.grad, g_weff * p.original.detach(), atol=1e-6)
    assert torch.equal(w_eff.detach(), p.original.detach() * p[0].mask)


def test_bake_leaves_a_plain_classifier(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = tiny_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cap_masks.attach(model, "movement")
    for p in cap_masks.parametrizations(model).values():
        p.scores.data.normal_()
    cap_masks.update_masks(model, 0.75)
    ids = torch.randint(5, 99, (2, 7))
    with torch.no_grad():
        masked_logits = model(input_ids=ids).logits
    masks = cap_masks.bake(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    for name, lin in prunable_linears(model).items():
        assert torch.equal(lin.weight, before[f"{name}.weight"] * masks[name])
        assert int((lin.weight == 0).sum()) >= lin.weight.numel() - int(0.25 * lin.weight.numel())
    for k, v in model.state_dict().items():
        if "embeddings" in k or "classifier" in k or "pooler" in k:
            assert torch.equal(v, before[k]), k
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, masked_logits)


def _logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_gating_units_to_zero_equals_removing_them():
    torch.manual_seed(0)
    model = tiny_bert()
    ids = torch.randint(5, 99, (3, 9))
    heads, neurons = [[1], [0, 3]], [[0, 5, 39], [2]]
    gates = st.attach_gates(model, requires_grad=False)
    for layer, hs in enumerate(heads):
        gates.heads[layer][hs] = 0.0
    for layer, ns in enumerate(neurons):
        gates.neurons[layer][ns] = 0.0
    gated = _logits(model, ids)
    gates.remove()
    assert not torch.allclose(_logits(model, ids), gated)
    st.remove_units(model, heads, neurons)
    assert st.head_counts(model) == [3, 2] and st.ffn_widths(model) == [37, 39]
    assert torch.allclose(_logits(model, ids), gated, atol=1e-5)
    # positions are current positions: removing "head 0" of layer 1 again hits original head 1
    st.remove_units(model, [[], [0]], [[], []])
    assert sorted(model.config.pruned_heads[1]) == [0, 1, 3]


def test_structured_save_load_identical_logits_and_plain_load_fails(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = tiny_bert()
    st.remove_units(model, [[0, 2], [1]], [[*range(10)], [*range(25)]])
    ids = torch.randint(5, 99, (2, 6))
    model.save_pretrained(tmp_path)
    assert is_structured(tmp_path)
    loaded = load_structured(tmp_path)
    assert torch.equal(_logits(loaded, ids), _logits(model, ids))
    assert st.encoder_parameters(loaded) == st.encoder_parameters(model) < st.encoder_parameters(tiny_bert())
    with pytest.raises((RuntimeError, ValueError), match="size mismatch"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_importance_selection_and_counts():
    torch.manual_seed(0)
    model = tiny_bert()
    ids = torch.randint(5, 99, (4, 8))
    labels = torch.tensor([0, 1, 0, 1])
    imp = st.importance(model, [lambda m: F.cross_entropy(m(input_ids=ids).logits, labels)] * 2)
    for s in imp.heads + imp.neurons:
        assert s.shape[0] > 0 and torch.allclose(s.norm(), torch.tensor(1.0), atol=1e-5)
    assert not any(g.requires_grad for g in model.parameters() if g.grad is not None)
    scores = [torch.tensor([0.9, 0.1, 0.2, 0.3]), torch.tensor([0.05, 0.01, 0.02, 0.5])]
    assert st.select_heads(scores, 5, min_heads=1) == [[1, 2], [0, 1, 2]]
    assert st.select_heads(scores, 2, min_heads=1) == [[], [1, 2]]
    with pytest.raises(ValueError, match="removable"):
        st.select_heads(scores, 7, min_heads=1)
    assert st.prune_count(72, 0.5, already=18) == 18 and st.prune_count(72, 0.25, already=18) == 0
