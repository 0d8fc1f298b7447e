"""Memory banks: L2-normalised representations of every training example, indexed by example id.

The reference (``masked_run_glue.py``) encodes the whole training set without gradient with the fine-tuned
teacher once (FiC), with the model before pruning (PrC), and with the student at the start of every later
epoch (SnC, one more vector per example each time: the bank grows to (N, R, H)). Here PrC comes from the
pre-trained encoder, FiC from the dense teacher (whose logits for the distillation term are kept from the
same pass), and SnC gains one snapshot at the end of every sparsity stage (``cap.snapshots: stage``, eval
mode) or, as the reference, one at the start of every epoch after the first, in train mode, dense warm-up
epochs included (``cap.snapshots: epoch``; :func:`robustprune.cap.train.train_stage` takes them).

The reference's bank passes (RunxinXu/ContrastivePruning @ eae11d6, ``UnstructuredPruning/masked_run_glue.py``):
FiC lines 236–246 (the teacher, loaded by ``from_pretrained``: eval mode); PrC and SnC lines 252–286 — the
student itself at the start of every epoch, PrC at epoch 0 (before any ``model.train()``: eval mode), SnC at
every later epoch (the model is still in train mode from the previous epoch's steps, line 302).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from robustprune.cap.examples import Examples
from robustprune.cap.loss import representation

MODULES = ("prc", "fic", "snc")


@dataclass(frozen=True)
class Encoded:
    """One pass over the examples: normalised vectors (N, H) and, for a classifier, its logits (N, C)."""

    vectors: torch.Tensor
    logits: torch.Tensor | None


@torch.inference_mode()
def encode(
    model: nn.Module,
    examples: Examples,
    how: str,
    *,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "bank",
    train_mode: bool = False,
) -> Encoded:
    """Encode every example without gradient. ``model``: a BERT classifier or a bare BertModel.

    Eval mode unless ``train_mode`` (dropout active: the reference's SnC snapshots). The model's mode is
    restored afterwards. The vectors are the pooler output or the masked mean *before* any classifier
    dropout (the reference's ``encode_example``).
    """
    was_training = model.training
    model.train(train_mode).to(device)
    base = getattr(model, "bert", model)
    classifier = getattr(model, "classifier", None)
    vectors: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    for idx in tqdm(examples.inference_batches(batch_size), desc=desc, disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in examples.batch(idx).items()}
        out = base(**batch)
        rep = representation(out.last_hidden_state, batch["attention_mask"], out.pooler_output, how).float()
        if vectors is None:
            vectors = torch.zeros(len(examples), rep.shape[1])
        vectors[torch.as_tensor(idx)] = rep.cpu()
        if classifier is not None:
            lg = classifier(out.pooler_output).float().cpu()
            if logits is None:
                logits = torch.zeros(len(examples), lg.shape[1])
            logits[torch.as_tensor(idx)] = lg
    model.train(was_training)
    assert vectors is not None
    return Encoded(vectors=vectors, logits=logits)


def build_banks(
    pretrained: nn.Module, finetuned: nn.Module, examples: Examples, how: str, **kw: object
) -> dict[str, torch.Tensor]:
    """The fixed banks (eval mode, no gradient): ``prc`` from the pre-trained encoder, ``fic`` and the KD
    teacher's ``teacher_logits`` from the fine-tuned dense classifier (one pass), and the ``labels``.
    ``kw``: :func:`encode`'s batch_size / device / progress."""
    prc = encode(pretrained, examples, how, desc="PrC", **kw)  # type: ignore[arg-type]
    fic = encode(finetuned, examples, how, desc="FiC", **kw)  # type: ignore[arg-type]
    if fic.logits is None:
        raise ValueError(
            "the FiC bank's model must be the fine-tuned classifier (it also gives the KD logits)"
        )
    return {"prc": prc.vectors, "fic": fic.vectors, "teacher_logits": fic.logits, "labels": examples.labels}


def stack(snapshots: list[torch.Tensor]) -> torch.Tensor:
    """(N, H) vectors of R snapshots -> one bank (N, R, H)."""
    if not snapshots:
        raise ValueError("a bank needs at least one set of vectors")
    return torch.stack([s.float() for s in snapshots], dim=1)


def sample_extra(
    n_examples: int, extra_negatives: int, n_rep: int, generator: torch.Generator
) -> torch.Tensor:
    """Ids of the extra examples drawn for one bank and one step: ``extra_negatives // R`` distinct ids
    (at most all N), as the reference's ``random.sample(range(N), k=extra_examples // rep_num)``."""
    k = min(extra_negatives // max(n_rep, 1), n_examples)
    return torch.randperm(n_examples, generator=generator)[:k]
