"""A fast textattack model wrapper for Hugging Face sequence classifiers.

textattack's stock ``HuggingFaceModelWrapper`` pads every batch to ``tokenizer.model_max_length``
(512 for MiniLM), so a 25-token review costs a 512-token forward (resources.md, "textattack
0.3.11 offline pitfalls").  :class:`FastClassifierWrapper` pads to the longest text of the batch
and truncates at ``max_length`` (the length the classifier was fine-tuned with, ``data.max_length``
in params.yaml), exactly as the model sees text at evaluation time; with the attention mask the
logits equal the stock wrapper's up to float rounding.  It counts the texts it is asked to score
(model queries that reach the model, i.e. after textattack's goal-function cache) and accumulates
wall seconds spent tokenizing and in the forward pass, the "forward floor" of an attack.

With ``cache_size > 0`` it keeps the logits of the last ``cache_size`` distinct texts.  textattack's
own cache lives in the goal function and is cleared after every example, so it never helps another
recipe; one wrapper per model shared by the recipes (and shards) of a process lets TextFooler and
TextBugger share their leave-one-out importance queries, every recipe the clean text's query, and
every candidate text two recipes happen to both produce.  textattack still counts each query it
makes (``num_queries`` is unchanged); only the forward is saved.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from robustprune.attacks.textattack_env import import_textattack
from robustprune.batching import encode_batch, run_length_sorted

ModelWrapper = import_textattack().models.wrappers.ModelWrapper


@dataclass
class ForwardStats:
    """Running totals of one forward-counting component (victim, sentence encoder, masked LM)."""

    texts: int = 0
    calls: int = 0
    tokenize_seconds: float = 0.0
    forward_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        """Tokenization plus forward seconds."""
        return self.tokenize_seconds + self.forward_seconds

    def reset(self) -> None:
        """Zero every counter."""
        self.texts, self.calls, self.tokenize_seconds, self.forward_seconds = 0, 0, 0.0, 0.0


class RowCache:
    """The rows (logits, embeddings) of the last ``size`` distinct texts, least recently used dropped first.

    Shared by the attack tasks of a process, which may run in threads: look-ups and updates hold a lock,
    the forward of the missing texts runs unlocked.
    """

    def __init__(self, size: int):
        self.size = size
        self._rows: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        """Forget every row."""
        self._rows.clear()

    def rows(self, texts: list[str], forward: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """``(len(texts), ...)`` rows; ``forward`` runs once on the distinct texts not cached (non-empty)."""
        with self._lock:
            known = {t: self._rows[t] for t in texts if t in self._rows}
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            known.update(zip(missing, forward(missing), strict=True))
        with self._lock:
            for t in dict.fromkeys(texts):
                self._rows[t] = known[t]
                self._rows.move_to_end(t)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)
        return torch.stack([known[t] for t in texts])


class CountedTextModel:
    """A model + tokenizer scored in length-sorted batches, with an optional :class:`RowCache` and counters.

    ``stats`` counts the texts actually run through the model and times tokenization and forwards;
    ``requested`` counts every text asked for, cache hits included. Subclasses say what a batch's rows are
    (:meth:`_rows`) and what no text gives (:meth:`_empty`).
    """

    def __init__(
        self, model: torch.nn.Module, tokenizer, *, max_length: int, batch_size: int, cache_size: int
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache = RowCache(cache_size)
        self.stats = ForwardStats()
        self.requested = 0

    def clear_cache(self) -> None:
        """Forget every cached row."""
        self._cache.clear()

    def _rows(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _empty(self) -> torch.Tensor:
        raise NotImplementedError

    def _scored(self, texts: list[str]) -> torch.Tensor:
        """Rows of ``texts``: through the cache when it is on, each distinct uncached text run once."""
        self.requested += len(texts)
        if self.cache_size <= 0 or not texts:
            return self._forward(texts)
        return self._cache.rows(texts, self._forward)

    def _forward(self, texts: list[str]) -> torch.Tensor:
        """Rows of ``texts`` (no cache), in length-sorted batches of ``batch_size``, counted and timed."""
        self.stats.calls += 1
        self.stats.texts += len(texts)
        device = next(self.model.parameters()).device

        def forward(batch: list[str]) -> torch.Tensor:
            t0 = time.perf_counter()
            encoded = encode_batch(self.tokenizer, batch, max_length=self.max_length, device=device)
            t1 = time.perf_counter()
            with torch.inference_mode():
                rows = self._rows(encoded)
            self.stats.tokenize_seconds += t1 - t0
            self.stats.forward_seconds += time.perf_counter() - t1
            return rows

        out = run_length_sorted(texts, forward, batch_size=self.batch_size)
        return out if out is not None else self._empty()


class FastClassifierWrapper(CountedTextModel, ModelWrapper):
    """textattack ``ModelWrapper`` around ``AutoModelForSequenceClassification`` + its tokenizer.

    ``__call__(texts)`` returns a ``(len(texts), num_labels)`` float tensor of logits on the CPU
    (textattack's classification goal function applies the softmax, as it does for the stock
    wrapper).  Texts are scored in length-sorted batches of ``batch_size``, each padded to its longest member and
    truncated at ``max_length`` tokens, under ``torch.inference_mode``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        max_length: int = 64,
        batch_size: int = 32,
        cache_size: int = 0,
    ):
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        super().__init__(
            model, tokenizer, max_length=max_length, batch_size=batch_size, cache_size=cache_size
        )

    @property
    def num_labels(self) -> int | None:
        """``model.config.num_labels`` when the model has a config."""
        config = getattr(self.model, "config", None)
        return getattr(config, "num_labels", None)

    def __call__(self, text_input_list: Sequence[str]) -> torch.Tensor:
        """Logits for each text (textattack passes ``AttackedText.tokenizer_input``: plain strings)."""
        return self._scored(list(text_input_list))

    def _rows(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**encoded).logits.float().cpu()

    def _empty(self) -> torch.Tensor:
        return torch.empty(0, self.num_labels or 0)

    def _tokenize(self, inputs: Sequence[str]) -> list[list[str]]:
        """Word pieces of each input (textattack's ``tokenize`` helper, used by some search methods)."""
        return [
            self.tokenizer.convert_ids_to_tokens(
                self.tokenizer(x, truncation=True, max_length=self.max_length)["input_ids"]
            )
            for x in inputs
        ]
