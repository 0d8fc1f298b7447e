"""Attack-in-the-loop adversarial training: A2T (Yoo & Qi, "Towards Improving Adversarial Training of NLP
Models", Findings of EMNLP 2021) through textattack's own ``Trainer`` / ``TrainingArgs`` (0.3.11), with the attack
built offline from this project's components.

The attack (:func:`build_attack`) is textattack's ``A2TYoo2021`` recipe (paper Sec. 3: a cheap attack for
training) with each downloading component replaced:

* search: greedy swap by gradient word importance (``GreedyWordSwapWIR("gradient")``: one backward pass ranks
  all words, paper Sec. 3.1), through :class:`GradientClassifierWrapper`'s ``get_grad``;
* transformation: the 20 nearest counter-fitted neighbours (``AttackResources.vectors``, the recipe's
  ``WordSwapEmbedding(max_candidates=20)``), embedding cosine >= 0.8;
* constraints: no word modified twice, no stop word, at most 10% of the words (at least 4:
  ``MaxModificationRate(0.1, min_threshold=4)``), the same part of speech with nouns and verbs *not*
  interchangeable, sentence-encoder cosine >= 0.9 to the original.

Deviations (offline): the sentence encoder is the mean-pooled MiniLM (the recipe: SBERT
``stsb-distilbert-base``; same metric and threshold), the part of speech is spaCy's tagger in textattack's window
(the recipe: NLTK's), counter-fitted GloVe instead of counter-fitted PARAGRAM; ``get_grad`` runs the model in
eval mode (textattack's Hugging Face wrapper switches dropout on for it) and pads to the text's length.

Training (:func:`a2t_finetune`): ``textattack.Trainer`` with ``TrainingArgs`` from the variant — ``num_epochs``,
``num_clean_epochs``, ``attack_epoch_interval``, ``num_train_adv_examples``, ``query_budget_train``, ``alpha``,
learning rate, weight decay, warm-up ratio, batch size and seed. After the clean epochs, every
``attack_epoch_interval`` epochs the model in training is attacked on a shuffled pass over the training set until
``num_train_adv_examples`` attacks succeed (a fraction: of the training set), and those adversarial texts join
that epoch's training data. textattack's optimiser is AdamW with its own no-decay rule (biases and LayerNorm);
the trainer's per-epoch checkpoints are not written (the task saves the final model like any ingredient), its
logs go to a scratch directory.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robustprune.attacks.components import (
    LowercaseStopwordModification,
    OneWordEmbeddingSwap,
    greedy_wir_attack,
    part_of_speech,
    sentence_encoder,
    word_embedding,
)
from robustprune.attacks.similarity import EncoderSimilarity, MeanPooledEncoder
from robustprune.attacks.tagger import ContextTagger
from robustprune.attacks.textattack_env import import_textattack
from robustprune.attacks.types import AttackResources
from robustprune.attacks.wrapper import FastClassifierWrapper
from robustprune.finetune import FinetuneResult, FinetuneSettings, seed_everything
from robustprune.interrupt import raise_if_stopped

_ta = import_textattack()


class GradientClassifierWrapper(FastClassifierWrapper):
    """:class:`FastClassifierWrapper` (no logit cache: the model changes while it trains) with the
    ``get_grad`` that gradient word-importance ranking needs."""

    def __init__(self, model: torch.nn.Module, tokenizer, *, max_length: int = 64, batch_size: int = 32):
        super().__init__(model, tokenizer, max_length=max_length, batch_size=batch_size, cache_size=0)

    def get_grad(self, text_input: str) -> dict:
        """Gradient of the loss against the predicted label w.r.t. each token's input embedding:
        ``{"ids": (1, L) ids, "gradient": (L, d) array}`` (textattack's ``HuggingFaceModelWrapper.get_grad``
        contract); no parameter gradient is touched."""
        device = next(self.model.parameters()).device
        enc = self.tokenizer(
            [text_input], truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                embeds = self.model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_()
                rest = {k: v for k, v in enc.items() if k != "input_ids"}
                logits = self.model(inputs_embeds=embeds, **rest).logits
                loss = torch.nn.functional.cross_entropy(logits, logits.argmax(dim=-1))
                (grad,) = torch.autograd.grad(loss, embeds)
        finally:
            self.model.train(was_training)
        return {"ids": enc["input_ids"], "gradient": grad[0].float().cpu().numpy()}


def build_attack(
    model_wrapper,
    resources: AttackResources,
    *,
    max_candidates: int = 20,
    min_cos_sim: float = 0.8,
    sim_threshold: float = 0.9,
    max_rate: float = 0.1,
    min_threshold: int = 4,
    tagger: ContextTagger | None = None,
    encoder: MeanPooledEncoder | None = None,
    query_budget: int | None = None,
):
    """A2T's attack (module docstring) as a ``textattack.Attack``; ``model_wrapper`` needs ``get_grad``."""
    embedding = word_embedding(resources.vectors)
    pos, _ = part_of_speech(resources, tagger, mode="tagger", allow_verb_noun_swap=False)
    constraints = [
        _ta.constraints.pre_transformation.RepeatModification(),
        LowercaseStopwordModification(resources.stopwords),
        pos,
        _ta.constraints.pre_transformation.MaxModificationRate(
            max_rate=max_rate, min_threshold=min_threshold
        ),
        EncoderSimilarity(
            sentence_encoder(resources, encoder),
            threshold=sim_threshold,
            metric="cosine",
            compare_against_original=True,
            window_size=None,
        ),
        _ta.constraints.semantics.WordEmbeddingDistance(embedding=embedding, min_cos_sim=min_cos_sim),
    ]
    max_len = getattr(model_wrapper, "max_length", None)
    swap = OneWordEmbeddingSwap(max_candidates=max_candidates, embedding=embedding)
    return greedy_wir_attack(
        model_wrapper,
        constraints,
        swap,
        wir_method="gradient",
        query_budget=query_budget,
        truncate_words_to=max_len,
    )


@dataclass(frozen=True)
class A2TSettings:
    """textattack ``TrainingArgs``' adversarial keys (config.A2TConfig)."""

    num_train_adv_examples: int | float = 0.2
    attack_epoch_interval: int = 1
    query_budget_train: int | None = None
    num_clean_epochs: int = 1
    alpha: float = 1.0


@dataclass
class A2TResult(FinetuneResult):
    """The loss curve plus, per epoch, textattack's validation accuracy and the adversarial set's size."""

    epochs: list[dict] = field(default_factory=list)
    attack_seconds: float = 0.0


class _Trainer(_ta.Trainer):
    """textattack's Trainer recording each step's loss, stopping on SIGTERM, writing no checkpoints."""

    def __init__(self, *args, result: A2TResult, on_epoch: Callable[[int], None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.result = result
        self.on_epoch = on_epoch

    def training_step(self, model, tokenizer, batch):  # noqa: ANN001, ANN201 - textattack's signature
        raise_if_stopped()
        loss, preds, targets = super().training_step(model, tokenizer, batch)
        self.result.losses.append(float(loss.detach()))
        return loss, preds, targets

    def _generate_adversarial_examples(self, epoch):  # noqa: ANN001, ANN201
        t0 = time.perf_counter()
        adv = super()._generate_adversarial_examples(epoch)
        self.result.attack_seconds += time.perf_counter() - t0
        self.result.epochs.append({"epoch": epoch, "adversarial_examples": len(adv)})
        return adv

    def evaluate(self):  # noqa: ANN201
        score = super().evaluate()
        self.result.epochs.append({"validation_accuracy": float(score)})
        if self.on_epoch is not None:
            was_training = self.model_wrapper.model.training
            self.on_epoch(sum("validation_accuracy" in e for e in self.result.epochs))
            self.model_wrapper.model.train(was_training)
        return score

    def _save_model_checkpoint(self, *args, **kwargs) -> None:
        """The task saves the final model atomically; per-epoch copies would cost disk for nothing."""

    def _write_readme(self, *args, **kwargs) -> None:
        """No README in the scratch directory."""


@contextlib.contextmanager
def _truncating(tokenizer, max_length: int) -> Iterator[None]:
    """textattack's training step truncates at ``tokenizer.model_max_length``: make it ``max_length``."""
    before = tokenizer.model_max_length
    tokenizer.model_max_length = max_length
    try:
        yield
    finally:
        tokenizer.model_max_length = before


def _drop_log_handlers(directory: Path) -> None:
    """Close the file handlers textattack's Trainer adds to its logger for files under ``directory``."""
    import logging

    logger = _ta.shared.utils.logger
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(directory):
            logger.removeHandler(handler)
            handler.close()


def a2t_finetune(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    settings: FinetuneSettings,
    a2t: A2TSettings,
    resources: AttackResources,
    *,
    eval_texts: Sequence[str],
    eval_labels: Sequence[int],
    tagger: ContextTagger | None = None,
    encoder: MeanPooledEncoder | None = None,
    work_dir: Path | None = None,
    attack_options: dict | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> A2TResult:
    """Train ``model`` in place with textattack's Trainer and A2T's attack; returns the loss curve.

    ``settings``: learning rate, whole ``epochs``, seed, batch size, weight decay, warm-up ratio, max length
    (optimizer must be adamw: textattack's Trainer builds AdamW). ``eval_*``: the split the Trainer scores
    after every epoch (textattack requires one). ``on_epoch(epoch)`` (optional) runs after that score.
    """
    if settings.optimizer != "adamw" or settings.epochs != int(settings.epochs) or settings.adversarial:
        raise ValueError("a2t trains with textattack's Trainer: adamw, whole epochs, no FreeLB")
    seed_everything(settings.seed)
    wrapper = GradientClassifierWrapper(model, tokenizer, max_length=settings.max_length)
    attack = build_attack(wrapper, resources, tagger=tagger, encoder=encoder, **(attack_options or {}))
    num_adv = a2t.num_train_adv_examples
    # input_columns as a tuple: the Trainer appends ("_example_type",) to it (a list fails)
    train = _ta.datasets.Dataset(
        list(zip(texts, (int(y) for y in labels), strict=True)), input_columns=("text",), shuffle=False
    )
    evaluation = _ta.datasets.Dataset(list(zip(eval_texts, (int(y) for y in eval_labels), strict=True)))
    epochs = int(settings.epochs)
    n_adv = (
        len(texts)
        if num_adv == -1
        else math.ceil(len(texts) * num_adv)
        if isinstance(num_adv, float)
        else num_adv
    )
    clean_steps = math.ceil(len(texts) / settings.batch_size) * a2t.num_clean_epochs
    adv_steps = math.ceil((len(texts) + n_adv) / settings.batch_size) * (epochs - a2t.num_clean_epochs)
    result = A2TResult(steps=clean_steps + adv_steps)
    with contextlib.ExitStack() as stack:
        scratch = work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="a2t-")))
        args = _ta.TrainingArgs(
            num_epochs=epochs,
            num_clean_epochs=a2t.num_clean_epochs,
            attack_epoch_interval=a2t.attack_epoch_interval,
            learning_rate=settings.learning_rate,
            num_warmup_steps=settings.warmup_ratio,
            weight_decay=settings.weight_decay,
            per_device_train_batch_size=settings.batch_size,
            random_seed=settings.seed,
            alpha=a2t.alpha,
            num_train_adv_examples=num_adv,
            query_budget_train=a2t.query_budget_train,
            output_dir=str(scratch),
            save_last=False,
            logging_interval_step=10**9,
        )
        trainer = _Trainer(
            wrapper, "classification", attack, train, evaluation, args, result=result, on_epoch=on_epoch
        )
        stack.enter_context(_truncating(tokenizer, settings.max_length))
        stack.callback(_drop_log_handlers, scratch)
        trainer.train()
    result.steps = len(result.losses)
    model.eval()
    return result
