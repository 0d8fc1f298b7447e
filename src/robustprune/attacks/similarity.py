"""Sentence-similarity constraint on a mean-pooled Hugging Face encoder (the offline USE substitute).

TextFooler, BERT-Attack and TextBugger filter candidates by the Universal Sentence Encoder (USE)
similarity of the perturbed and reference texts.  USE needs TF-hub; offline we use the
all-MiniLM-L6-v2 sentence encoder, mean-pooled over the attention mask as sentence-transformers
does.  Its cosine scale differs from USE's, so the papers' thresholds carry over only approximately
(docs/attacks.md sweeps the threshold); every recipe states the threshold it uses.

:class:`MeanPooledEncoder` holds the model, an LRU cache of embeddings keyed by text (greedy word
swaps re-encode the same reference window for every candidate, and windows repeat between search
steps) and forward counters.  :class:`EncoderSimilarity` is the textattack ``SentenceEncoder``
constraint that calls it; several constraints (and recipes) may share one encoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from robustprune.attacks.textattack_env import import_textattack
from robustprune.attacks.wrapper import CountedTextModel, ForwardStats
from robustprune.batching import mean_pool

SentenceEncoder = import_textattack().constraints.semantics.sentence_encoders.SentenceEncoder


class MeanPooledEncoder(CountedTextModel):
    """Encode sentences with a HF encoder: mean of the last hidden states over real tokens.

    ``cache_size`` embeddings (0 disables the cache) are kept, keyed by the exact text;
    ``stats.texts`` counts sentences actually run through the model, ``requested`` every sentence
    asked for (the difference is what the cache saved).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        max_length: int = 128,
        batch_size: int = 64,
        cache_size: int = 1 << 16,
    ):
        super().__init__(
            model, tokenizer, max_length=max_length, batch_size=batch_size, cache_size=cache_size
        )

    @classmethod
    def from_dir(cls, directory: Path, **options) -> MeanPooledEncoder:
        """Load ``AutoModel`` + ``AutoTokenizer`` from a local directory (e.g. the ``minilm`` resource)."""
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return cls(model, tokenizer, **options)

    def _rows(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        return mean_pool(self.model(**encoded).last_hidden_state, encoded["attention_mask"]).cpu()

    def _empty(self) -> torch.Tensor:
        return torch.empty(0, 0)

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """``(len(sentences), d)`` embeddings; each distinct uncached text is encoded once."""
        if not sentences and self.cache_size > 0:
            return torch.empty(0, 0)  # nothing to count (a cacheless encoder counts the empty call)
        return self._scored(list(sentences))


# how a windowed check treats texts shorter than the window (see EncoderSimilarity)
SHORT_TEXT_MODES = ("released", "strict", "skip")
# TextFooler's released code sets its similarity threshold to 0.1 on 1 - angle (angle in radians, no
# division by pi) for texts shorter than the window; on textattack's angular scale 1 - angle/pi that is:
RELEASED_SHORT_TEXT_THRESHOLD = 1.0 - 0.9 / math.pi  # 0.71352...


class EncoderSimilarity(SentenceEncoder):
    """textattack ``SentenceEncoder`` constraint backed by a shared :class:`MeanPooledEncoder`.

    Arguments as textattack's ``SentenceEncoder``: ``threshold``, ``metric`` ("cosine" or
    "angular": 1 - arccos(cos)/pi), ``compare_against_original``, ``window_size`` (words around the
    modified index; ``None`` = whole text).  ``short_text`` says what happens to a transformed text
    with fewer words than ``window_size`` (textattack's window then covers the whole text):

    * ``"skip"``: passed without a check (textattack's ``skip_text_shorter_than_window=True``, which
      its TextFooler recipe sets);
    * ``"released"``: the whole text is compared at ``short_text_threshold`` (default
      :data:`RELEASED_SHORT_TEXT_THRESHOLD`, TextFooler's released code: ``if len_text <
      sim_score_window: sim_score_threshold = 0.1``), or at ``threshold`` if that is lower (a
      short text is never held to a higher bar than a long one);
    * ``"strict"``: the whole text is compared at ``threshold`` (textattack with
      ``skip_text_shorter_than_window=False``).

    Without a window every text is compared whole at ``threshold`` and ``short_text`` plays no part.
    ``skip_text_shorter_than_window`` is accepted for textattack compatibility and means
    ``short_text="skip"`` (True) or ``"strict"`` (False).
    """

    def __init__(
        self,
        encoder: MeanPooledEncoder,
        *,
        short_text: str | None = None,
        short_text_threshold: float = RELEASED_SHORT_TEXT_THRESHOLD,
        skip_text_shorter_than_window: bool | None = None,
        **kwargs,
    ):
        if short_text is None:
            short_text = "skip" if skip_text_shorter_than_window else "strict"
        elif skip_text_shorter_than_window is not None:
            raise ValueError("give short_text or skip_text_shorter_than_window, not both")
        if short_text not in SHORT_TEXT_MODES:
            raise ValueError(f"unknown short_text mode {short_text!r}; known: {sorted(SHORT_TEXT_MODES)}")
        super().__init__(skip_text_shorter_than_window=short_text == "skip", **kwargs)
        self.model = encoder
        self.short_text = short_text
        self.short_text_threshold = float(short_text_threshold)

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``sentences`` (textattack calls this with reference + candidate windows)."""
        return self.model.encode(sentences)

    def _is_short(self, text) -> bool:
        """Fewer words than the window (never true without a window)."""
        return len(text.words) < self.window_size

    def _check_constraint_many(self, transformed_texts, reference_text) -> list:
        """textattack's filter, with the short-text rule of ``short_text``.

        ``"skip"``: short texts pass with score 1 and are not encoded at all (textattack encodes and
        then overwrites their score; the result is the same).  ``"released"``: short texts are
        scored as textattack scores them (whole text) and kept at ``short_text_threshold``.
        ``"strict"``: textattack's own filter.
        """
        if self.short_text == "strict" or not transformed_texts:
            return list(super()._check_constraint_many(transformed_texts, reference_text))
        if self.short_text == "skip":
            checked = [t for t in transformed_texts if not self._is_short(t)]
            kept = (
                {id(t) for t in super()._check_constraint_many(checked, reference_text)} if checked else set()
            )
            out = []
            for t in transformed_texts:
                if self._is_short(t):
                    t.attack_attrs["similarity_score"] = 1.0
                    out.append(t)
                elif id(t) in kept:
                    out.append(t)
            return out
        scores = self._score_list(reference_text, transformed_texts)
        # compared in the scores' dtype, as textattack compares its tensor with the threshold
        short = min(self.short_text_threshold, self.threshold)
        limits = torch.tensor(
            [short if self._is_short(t) else self.threshold for t in transformed_texts], dtype=scores.dtype
        )
        keep = (scores >= limits).tolist()
        out = []
        for t, score, ok in zip(transformed_texts, scores.tolist(), keep, strict=True):
            t.attack_attrs["similarity_score"] = score
            if ok:
                out.append(t)
        return out

    def _check_constraint(self, transformed_text, reference_text) -> bool:
        """One transformed text (textattack's single-text entry point), with the short-text rule."""
        return bool(self._check_constraint_many([transformed_text], reference_text))

    def extra_repr_keys(self) -> list[str]:
        """Shown in ``print(attack)``."""
        return [*super().extra_repr_keys(), "short_text", "short_text_threshold"]

    @property
    def stats(self) -> ForwardStats:
        """The shared encoder's forward counters."""
        return self.model.stats
