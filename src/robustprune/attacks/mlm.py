"""A masked-LM head for a pre-trained BERT encoder that ships without one (BERT-Attack's offline MLM).

BERT-Attack (Li et al., EMNLP 2020) ranks substitutes with a masked language model.  The only
offline encoder, all-MiniLM-L6-v2, is a ``BertModel`` without its MLM head.  :func:`train_mlm_head`
builds ``BertForMaskedLM`` from the encoder's config, loads the encoder weights, ties the decoder
to the (frozen) word embeddings and trains only the head (transform dense + LayerNorm + decoder
bias) with BERT's masking (Devlin et al., NAACL 2019, §3.1: 15 % of the tokens, of which 80 %
become ``[MASK]``, 10 % a random token, 10 % stay).  The encoder is frozen, so its hidden states
are computed once under ``torch.no_grad`` and the head only sees the masked positions.  The decoder
bias starts at the log unigram frequencies of the training tokens (the loss of a head that
predicts the unigram distribution), which shortens training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from robustprune.checkpoints import save_pretrained_atomic

MLM_PROBABILITY = 0.15
METRICS_FILE = "mlm_metrics.json"


def mask_tokens(
    input_ids: torch.Tensor,
    special: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    probability: float = MLM_PROBABILITY,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking (Devlin et al. 2019, §3.1 and Appendix A.1): ``(masked ids, labels)``.

    Each non-special position is selected with ``probability``; a selected token becomes
    ``mask_id`` with probability 0.8, a uniformly random token with 0.1 and stays with 0.1.
    ``labels`` hold the original id at selected positions and -100 elsewhere.
    """
    draw = torch.rand(input_ids.shape, generator=generator)
    selected = (draw < probability) & ~special
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(selected & (action < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(selected & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Pad/truncate ``texts`` to one batch with the special-token mask."""
    return tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=max_length,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )


def _masked_hidden(
    model: Any, batch: dict[str, torch.Tensor], masked_ids: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen encoder's last hidden states at the masked positions (no grad) and their labels."""
    with torch.no_grad():
        hidden = model.bert(input_ids=masked_ids, attention_mask=batch["attention_mask"]).last_hidden_state
    where = labels != -100
    return hidden[where], labels[where]


def _unigram_log_probs(
    tokenizer: Any, texts: Sequence[str], vocab_size: int, max_length: int
) -> torch.Tensor:
    """Add-one smoothed log unigram probabilities of the (non-special) tokens of ``texts``."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=False)[
        "input_ids"
    ]
    counts = torch.ones(vocab_size, dtype=torch.float64)
    flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
    counts += torch.bincount(flat, minlength=vocab_size).double()
    return (counts / counts.sum()).log().float()


def evaluate_head(
    model: Any, hidden: torch.Tensor, labels: torch.Tensor, chunk: int = 512
) -> dict[str, float]:
    """Masked-token loss and top-1 / top-10 accuracy of ``model.cls`` on cached hidden states."""
    total = max(len(labels), 1)
    loss, top1, top10 = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(labels), chunk):
            logits, target = model.cls(hidden[i : i + chunk]), labels[i : i + chunk]
            loss += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
            top = logits.topk(10, dim=-1).indices
            top1 += int((top[:, 0] == target).sum())
            top10 += int((top == target[:, None]).any(dim=-1).sum())
    return {"loss": loss / total, "top1": top1 / total, "top10": top10 / total}


def encode_masked(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    generator: torch.Generator,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each text once (:func:`mask_tokens`) and return the frozen encoder's last hidden states
    at the masked positions ``(N, hidden)`` with their original token ids ``(N,)``."""
    hidden, labels = [], []
    for i in range(0, len(texts), batch_size):
        batch = _encode(tokenizer, texts[i : i + batch_size], max_length)
        special = batch["special_tokens_mask"].bool() | (batch["attention_mask"] == 0)
        masked, target = mask_tokens(
            batch["input_ids"],
            special,
            mask_id=tokenizer.mask_token_id,
            vocab_size=model.config.vocab_size,
            generator=generator,
        )
        h, y = _masked_hidden(model, batch, masked, target)
        hidden.append(h)
        labels.append(y)
    return torch.cat(hidden), torch.cat(labels)


def _unigram_accuracy(log_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 / top-10 accuracy of always predicting the most frequent training tokens."""
    ranked = log_probs.topk(10).indices
    total = max(len(labels), 1)
    return {
        "top1": int((labels == ranked[0]).sum()) / total,
        "top10": int((labels[:, None] == ranked[None, :]).any(dim=-1).sum()) / total,
    }


def train_mlm_head(
    encoder_dir: Path,
    texts: Sequence[str],
    out_dir: Path,
    *,
    steps: int = 250,
    batch_size: int = 256,
    max_length: int = 48,
    lr: float = 2e-3,
    seed: int = 0,
    max_texts: int = 3072,
    eval_size: int = 256,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a masked-LM head on a frozen BERT encoder; save model + tokenizer to ``out_dir``.

    ``encoder_dir``: a ``BertModel`` directory with its tokenizer (e.g. the extracted ``minilm``).
    ``texts``: training texts; ``min(eval_size, len(texts) // 10)`` of them (at least one) are
    held out.  Up to ``max_texts`` of the others are masked once each (BERT's 15 % / 80-10-10) and
    encoded once under ``no_grad`` (truncated to ``max_length`` tokens): the encoder is frozen, so
    its hidden states at the masked positions are all the head needs.  The head (transform dense
    + LayerNorm + decoder bias; the decoder weight is tied to the frozen word embeddings) then
    takes ``steps`` AdamW steps on random batches of ``batch_size`` masked tokens.  The held-out
    texts, masked once with a fixed seed, give the masked-token loss and top-1/top-10 accuracy
    before and after training (and of a unigram predictor, for reference).  ``out_dir`` is written
    atomically (``AutoModelForMaskedLM.from_pretrained`` loads it) with the metrics in
    ``mlm_metrics.json``; the metrics are returned.
    """
    from transformers import AutoConfig, AutoTokenizer, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    start = time.perf_counter()
    model_type = AutoConfig.from_pretrained(encoder_dir).model_type
    if model_type != "bert":
        raise ValueError(f"{encoder_dir}: train_mlm_head needs a BERT encoder, got model_type {model_type!r}")
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if len(texts) < 2:
        raise ValueError(f"train_mlm_head needs at least 2 non-empty texts, got {len(texts)}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: cls.predictions..." is expected here
    try:
        model = BertForMaskedLM.from_pretrained(encoder_dir)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.tie_weights()
    model.eval()  # no dropout: the encoder is frozen and the head has none
    for parameter in model.bert.parameters():
        parameter.requires_grad_(False)
    head = [p for p in model.cls.parameters() if p.requires_grad]

    order = torch.randperm(len(texts), generator=generator).tolist()
    n_eval = max(1, min(eval_size, len(texts) // 10))
    eval_texts = [texts[i] for i in order[:n_eval]]
    train_texts = [texts[i] for i in order[n_eval : n_eval + max_texts]]
    unigram = _unigram_log_probs(tokenizer, train_texts, model.config.vocab_size, max_length)
    with torch.no_grad():
        model.cls.predictions.bias.copy_(unigram)
    eval_hidden, eval_labels = encode_masked(
        model, tokenizer, eval_texts, max_length=max_length, generator=torch.Generator().manual_seed(seed + 1)
    )
    train_hidden, train_labels = encode_masked(
        model, tokenizer, train_texts, max_length=max_length, generator=generator
    )
    encoded = time.perf_counter()
    if progress:
        print(
            f"mlm head: encoded {len(train_texts)} + {n_eval} texts "
            f"({len(train_labels)} + {len(eval_labels)} masked tokens) in {encoded - start:.0f} s",
            flush=True,
        )
    before = evaluate_head(model, eval_hidden, eval_labels)

    optimizer = torch.optim.AdamW(head, lr=lr, weight_decay=0.0)
    losses: list[float] = []
    permutation, position = torch.randperm(len(train_labels), generator=generator), 0
    for step in range(steps):
        if position + batch_size > len(permutation):
            permutation, position = torch.randperm(len(train_labels), generator=generator), 0
        rows = permutation[position : position + batch_size]
        position += batch_size
        loss = torch.nn.functional.cross_entropy(model.cls(train_hidden[rows]), train_labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress and (step + 1) % max(1, steps // 10) == 0:
            recent = losses[-max(1, steps // 10) :]
            print(f"mlm head step {step + 1}/{steps}: loss {sum(recent) / len(recent):.3f}", flush=True)
    after = evaluate_head(model, eval_hidden, eval_labels)

    window = max(1, len(losses) // 10)
    metrics: dict[str, Any] = {
        "steps": steps,
        "batch_size": batch_size,
        "max_length": max_length,
        "lr": lr,
        "seed": seed,
        "train_texts": len(train_texts),
        "train_masked_tokens": len(train_labels),
        "eval_texts": n_eval,
        "eval_masked_tokens": len(eval_labels),
        "before": before,
        "after": after,
        "unigram": _unigram_accuracy(unigram, eval_labels),
        "train_loss_first": sum(losses[:window]) / window if losses else math.nan,
        "train_loss_last": sum(losses[-window:]) / window if losses else math.nan,
        "encode_seconds": encoded - start,
        "seconds": time.perf_counter() - start,
    }
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    # The file holds what the head *is*; its wall times go only to the caller (MLflow), so a rebuild writes
    # the same bytes and DVC sees no change where nothing changed.
    stored = {k: v for k, v in metrics.items() if not k.endswith("seconds")}
    save_pretrained_atomic(model, tokenizer, out_dir, extra={METRICS_FILE: stored})
    return metrics
