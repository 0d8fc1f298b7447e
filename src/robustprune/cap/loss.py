"""CAP's objective: cross-entropy, distillation and the supervised / unsupervised contrastive terms.

Total loss (Xu et al. 2022, Sec. 3; reference code ``MaskedBertForSequenceClassification.forward``)::

    L = ce · CE(student) + kd · KL(teacher_T || student_T) · T²
        + Σ_banks ( w_unsup · L_unsup(bank) + w_sup · L_sup(bank) )

over the banks PrC (pre-trained encoder), FiC (fine-tuned teacher) and SnC (the student's snapshots).
The contrastive terms transcribe the reference's ``calculate_contrastive_loss`` exactly, including its
normalisation (which its loss weights — sup 3–10, unsup 0.1–0.5 — are tuned for):

* columns: for every anchor ``i`` of the batch its own detached representation followed by its ``R`` bank
  vectors, then ``E`` extra sampled examples × ``R`` bank vectors; scores ``z_i · c / τ`` of the
  L2-normalised vectors, the anchor's own detached column set to −1e6, ``log_softmax`` over all columns;
* positives of anchor ``i``: every other column with the same example id (unsupervised) or the same label
  (supervised); ``P_i`` of them;
* ``L = − Σ_i Σ_{c ∈ pos(i)} log p_ic / P_i  /  Σ_i P_i`` — each anchor's positives averaged, then the
  sum over anchors divided by the total count of positives (the reference divides by the number of
  non-zero masked log-probabilities, the same count unless a log-probability is exactly 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

REPRESENTATIONS = ("mean", "cls")


@dataclass(frozen=True)
class LossWeights:
    """Weights of CAP's loss terms (reference unstructured: ce 0.1, kd 0.9, unsup 0.1, sup 10)."""

    ce: float = 0.1
    kd: float = 0.9
    unsup: float = 0.1
    sup: float = 10.0


def representation(
    hidden: torch.Tensor, attention_mask: torch.Tensor, pooled: torch.Tensor | None, how: str
) -> torch.Tensor:
    """L2-normalised sentence vectors (B, H): masked mean of the last hidden states, or the pooler output.

    ``hidden`` (B, T, H), ``attention_mask`` (B, T), ``pooled`` (B, H) = BERT's pooler output
    (tanh(W·h_CLS)), which is what the reference's ``cls`` (``alignrep``) uses.
    """
    if how == "mean":
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        rep = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    elif how == "cls":
        if pooled is None:
            raise ValueError("representation 'cls' needs the model's pooler output (a BERT with a pooler)")
        rep = pooled
    else:
        raise ValueError(f"representation {how!r} is not one of {list(REPRESENTATIONS)}")
    return F.normalize(rep, p=2, dim=-1)


def forward_student(
    model: nn.Module, batch: dict[str, torch.Tensor], how: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward of a BERT sequence classifier: (logits (B, C), normalised representation (B, H)).

    ``cls`` is the pooler output *after* the classifier's dropout — the very tensor (same dropout mask) the
    classifier reads — as in the reference, whose ``MaskedBertForSequenceClassification.forward`` reassigns
    ``pooled_output = self.dropout(pooled_output)`` before both ``self.classifier(pooled_output)`` and
    ``calculate_contrastive_loss(..., pooled_output, ...)`` (RunxinXu/ContrastivePruning @ eae11d6,
    ``UnstructuredPruning/emmental/modeling_bert_masked.py`` lines 751–752 and 768–770; the contrastive loss
    only L2-normalises it, lines 793–797). ``mean`` is the masked mean of the last hidden states (no
    classifier dropout there, as in the reference). The memory banks (:func:`robustprune.cap.banks.encode`)
    take the pooler output without that dropout, as the reference's ``encode_example`` path (lines 743–749).
    """
    base = getattr(model, "bert", None)
    if base is None or not hasattr(model, "classifier"):
        raise ValueError(
            f"CAP trains BERT sequence classifiers (model.bert + model.classifier); got {type(model).__name__}"
        )
    out = base(**batch)
    dropped = model.dropout(out.pooler_output)
    logits = model.classifier(dropped)
    return logits, representation(out.last_hidden_state, batch["attention_mask"], dropped, how)


def contrastive_terms(
    anchor: torch.Tensor,
    ids: torch.Tensor,
    labels: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    extra_ids: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(unsupervised, supervised) contrastive losses of one bank, unweighted.

    ``anchor`` (B, H): the student's normalised representations (gradient flows through these rows only);
    ``ids`` (B,) example ids (distinct), ``labels`` (B,); ``bank`` (N, R, H): R normalised vectors per
    training example (never receives a gradient), ``bank_labels`` (N,); ``extra_ids`` (E,): extra sampled
    examples (the reference samples ``extra_negatives // R`` without replacement each step).
    """
    bsz, hid = anchor.shape
    n_rep = bank.shape[1]
    bank = bank.detach().to(anchor)
    own = bank[ids]  # (B, R, H)
    cols = torch.cat([anchor.detach().unsqueeze(1), own], dim=1).reshape(bsz * (n_rep + 1), hid)
    cols = torch.cat([cols, bank[extra_ids].reshape(-1, hid)], dim=0)  # (B(R+1) + E·R, H)
    self_col = torch.zeros(bsz, cols.shape[0], dtype=torch.bool, device=anchor.device)
    self_col[torch.arange(bsz), torch.arange(bsz) * (n_rep + 1)] = True
    scores = (anchor @ cols.T) / temperature
    logp = torch.log_softmax(scores.masked_fill(self_col, -1e6), dim=-1)

    col_ids = torch.cat([ids.repeat_interleave(n_rep + 1), extra_ids.repeat_interleave(n_rep)])
    extra_labels = bank_labels.to(labels.device)[extra_ids]
    col_labels = torch.cat([labels.repeat_interleave(n_rep + 1), extra_labels.repeat_interleave(n_rep)])

    def term(positive: torch.Tensor) -> torch.Tensor:
        positive = positive & ~self_col
        per_anchor = positive.sum(1, keepdim=True)  # P_i >= R >= 1: an anchor's own bank vectors
        return -(logp.masked_fill(~positive, 0.0) / per_anchor).sum() / positive.sum()

    unsup = term(ids.unsqueeze(1) == col_ids.unsqueeze(0))
    sup = term(labels.unsqueeze(1) == col_labels.unsqueeze(0))
    return unsup, sup


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) · T², batch mean (Hinton et al. 2015; the reference's distillation)."""
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student_logits / t, dim=-1),
            F.softmax(teacher_logits.to(student_logits) / t, dim=-1),
            reduction="batchmean",
        )
        * t
        * t
    )


@dataclass
class LossParts:
    """The total loss and its parts (floats, for logging)."""

    total: torch.Tensor
    ce: float
    kd: float
    contrastive: dict[str, tuple[float, float]]


def cap_loss(
    logits: torch.Tensor,
    rep: torch.Tensor,
    ids: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    banks: dict[str, tuple[torch.Tensor, torch.Tensor]],
    extra_ids: dict[str, torch.Tensor],
    weights: LossWeights,
    *,
    temperature: float,
    kd_temperature: float,
) -> LossParts:
    """CAP's total loss for one batch. ``banks`` maps a name to (vectors (N, R, H), labels (N,)).

    With ``weights.unsup = weights.sup = 0`` (or no banks) no contrastive term is computed at all, so the
    loss is exactly ``ce·CE + kd·KL·T²``.
    """
    ce = F.cross_entropy(logits, labels)
    total = weights.ce * ce
    kd_value = 0.0
    if teacher_logits is not None and weights.kd:
        kd = kd_loss(logits, teacher_logits, kd_temperature)
        total = total + weights.kd * kd
        kd_value = float(kd.detach())
    parts: dict[str, tuple[float, float]] = {}
    if weights.unsup or weights.sup:
        for name, (vectors, bank_labels) in banks.items():
            unsup, sup = contrastive_terms(
                rep, ids, labels, vectors, bank_labels, extra_ids[name], temperature
            )
            total = total + weights.unsup * unsup + weights.sup * sup
            parts[name] = (float(unsup.detach()), float(sup.detach()))
    return LossParts(total=total, ce=float(ce.detach()), kd=kd_value, contrastive=parts)
