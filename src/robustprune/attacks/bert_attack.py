"""BERT-Attack (Li et al. 2020, "BERT-ATTACK: Adversarial Attack Against BERT Using BERT",
arXiv:2004.09984), built offline.

Components follow textattack's ``BERTAttackLi2020`` recipe:

* search: greedy swap in order of importance, importance = drop in the true-class probability
  when the word is replaced by ``[UNK]`` (paper Sec. 3.1; ``GreedyWordSwapWIR("unk")``);
* transformation: the masked LM reads the *unmasked* sentence once and proposes, at each word's
  position, its top-K tokens (paper Sec. 3.2); K = ``max_candidates`` = 48, the paper's value
  (textattack lowers it to 8 because of the sub-word explosion fixed below);
* constraints: no word modified twice; no stop word modified; at most 40% of the words
  perturbed (paper's epsilon = 0.4); sentence-encoder cosine >= 0.2 against the original text
  (textattack's fixed threshold; the authors filtered by USE after the attack with 0.2-0.7
  depending on the data set).

Words made of several word pieces (paper Sec. 3.2, "BPE"): the candidates are combinations of each
piece's top predictions ranked by perplexity.  The authors' released code takes the top 4 per piece
(``substitutes[0:12, 0:4]``); textattack takes the top K per piece, enumerates all K^n combinations
in a Python loop (hours for n = 3) and then discards its own sort.  We take the top
``subword_candidates`` (4) per piece, score combinations by the mean negative log-likelihood under
the sentence-level logits (textattack's approximation of the authors' perplexity) and keep the K
best, found exactly by a beam over pieces (the score is additive).

Deviations from the paper (offline setting):

* Masked LM: ``AttackResources.mlm_dir`` (MiniLM with a masked-LM head trained offline) instead of
  BERT-base.
* Sentence encoder: mean-pooled all-MiniLM-L6-v2 instead of USE; threshold ``sim_threshold``.
* Candidates that ``words_from_text`` does not parse as exactly one word are dropped; stop words
  are compared in lower case (``resources.stopwords``).
* The masked LM runs on the text padded to its own length (textattack pads to 512) and its logits
  are reused while the text is unchanged (consecutive words tried on the same text).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import torch

from robustprune.attacks.components import (
    common_constraints,
    greedy_wir_attack,
    is_one_word,
    whole_text_similarity,
)
from robustprune.attacks.similarity import MeanPooledEncoder
from robustprune.attacks.textattack_env import import_textattack
from robustprune.attacks.types import AttackResources
from robustprune.attacks.wrapper import ForwardStats
from robustprune.registry import BERT_ATTACK

NAME = BERT_ATTACK.name
_ta = import_textattack()
_check_if_subword = _ta.shared.utils.check_if_subword


def best_combinations(log_probs: np.ndarray, beam: int) -> list[tuple[tuple[int, ...], float]]:
    """The ``beam`` best choices of one option per row, by total log-probability, best first.

    ``log_probs`` is ``(pieces, options)``; returns ``[(option index per piece, total), ...]``.
    Exact: a top-``beam`` combination's prefix is a top-``beam`` prefix because the score is a sum.
    """
    paths: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    for row in log_probs:
        grown = [(p + (j,), s + float(row[j])) for p, s in paths for j in range(len(row))]
        grown.sort(key=lambda x: -x[1])
        paths = grown[:beam]
    return paths


class BertAttackMaskedLMSwap(_ta.transformations.WordSwapMaskedLM):
    """``WordSwapMaskedLM(method="bert-attack")`` with length padding, logit reuse and a bounded,
    sorted sub-word search (see the module docstring); counts masked-LM forward seconds in ``stats``."""

    def __init__(self, masked_language_model, tokenizer, *, subword_candidates: int = 4, **kwargs):
        super().__init__(
            method="bert-attack", masked_language_model=masked_language_model, tokenizer=tokenizer, **kwargs
        )
        self.subword_candidates = subword_candidates
        self.stats = ForwardStats()
        self._logits: OrderedDict[str, torch.Tensor] = OrderedDict()

    def _encode_text(self, text):
        """Tokenize without padding (one text at a time), truncating at ``max_length``."""
        return self._lm_tokenizer(text, max_length=self.max_length, truncation=True, return_tensors="pt").to(
            _ta.shared.utils.device
        )

    def _sentence_logits(self, text: str) -> torch.Tensor:
        """``(tokens, vocab)`` masked-LM logits of the unmasked ``text`` (the last 4 texts are cached)."""
        if text in self._logits:
            self._logits.move_to_end(text)
            return self._logits[text]
        t0 = time.perf_counter()
        inputs = self._encode_text(text)
        t1 = time.perf_counter()
        with torch.inference_mode():
            logits = self._language_model(**inputs)[0][0].float().cpu()
        self.stats.calls += 1
        self.stats.texts += 1
        self.stats.tokenize_seconds += t1 - t0
        self.stats.forward_seconds += time.perf_counter() - t1
        self._logits[text] = logits
        while len(self._logits) > 4:
            self._logits.popitem(last=False)
        return logits

    def _replacement_words(self, current_text, index: int, logits: torch.Tensor) -> list[str]:
        """Candidate words for word ``index``, best first."""
        tok = self._lm_tokenizer
        masked = current_text.replace_word_at_index(index, tok.mask_token)
        ids = self._encode_text(masked.text)["input_ids"][0].tolist()
        if tok.mask_token_id not in ids:
            return []  # the word lies beyond max_length
        start = ids.index(tok.mask_token_id)
        n_pieces = len(tok.encode(current_text.words[index], add_special_tokens=False))
        positions = list(range(start, min(start + n_pieces, logits.shape[0] - 1)))
        model_type = self._language_model.config.model_type
        special = set(tok.all_special_ids)
        vocab = logits.shape[-1]
        if len(positions) == 1:
            top = torch.topk(logits[positions[0]], min(self.max_candidates, vocab)).indices.tolist()
            words = [tok.convert_ids_to_tokens(i) for i in top if i not in special]
            return [w for w in words if is_one_word(w) and not _check_if_subword(w, model_type, index == 0)]
        if not positions:
            return []
        log_probs = torch.log_softmax(logits[positions], dim=-1)
        top = torch.topk(log_probs, min(self.subword_candidates, vocab), dim=-1)
        words = []
        for choice, _ in best_combinations(top.values.numpy(), self.max_candidates):
            pieces = [int(top.indices[p, j]) for p, j in enumerate(choice)]
            if special.intersection(pieces):
                continue
            word = "".join(tok.convert_ids_to_tokens(pieces)).replace("##", "")
            if is_one_word(word):
                words.append(word)
        return words

    def _get_transformations(self, current_text, indices_to_modify):
        """One candidate text per (index, replacement word)."""
        logits = self._sentence_logits(current_text.text)
        out = []
        for i in indices_to_modify:
            original = current_text.words[i]
            for word in self._replacement_words(current_text, i, logits):
                word = word.strip("Ġ")
                if word != original and is_one_word(word):
                    out.append(current_text.replace_word_at_index(i, word))
        return out

    def extra_repr_keys(self) -> list[str]:
        """Shown in ``print(attack)``."""
        return [*super().extra_repr_keys(), "subword_candidates"]


def load_mlm(mlm_dir) -> tuple:
    """``AutoModelForMaskedLM`` and its tokenizer from a local directory (or, online, a hub name)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    name = str(mlm_dir)
    return AutoModelForMaskedLM.from_pretrained(name).eval(), AutoTokenizer.from_pretrained(name)


def build(
    model_wrapper,
    resources: AttackResources,
    *,
    max_candidates: int = 48,
    subword_candidates: int = 4,
    max_percent: float = 0.4,
    sim_threshold: float = 0.2,
    sim_metric: str = "cosine",
    mlm_max_length: int = 512,
    masked_lm=None,
    encoder: MeanPooledEncoder | None = None,
    query_budget: int | None = None,
    polarity_constraint: dict | None = None,
):
    """A ``textattack.Attack`` implementing BERT-Attack.

    ``masked_lm``: an ``(AutoModelForMaskedLM, tokenizer)`` pair to use instead of loading
    ``resources.mlm_dir`` (required when the resources have none). ``polarity_constraint``: reject
    label-changing swaps (:func:`~robustprune.attacks.components.polarity_constraints`; issue #28, off by
    default).
    """
    if masked_lm is None:
        if resources.mlm_dir is None:
            raise ValueError(
                "BERT-Attack needs a masked language model: AttackResources.mlm_dir is None and no "
                "masked_lm=(model, tokenizer) was given"
            )
        masked_lm = load_mlm(resources.mlm_dir)
    mlm, mlm_tokenizer = masked_lm
    constraints = [
        *common_constraints(resources, polarity_constraint),
        _ta.constraints.overlap.MaxWordsPerturbed(max_percent=max_percent),
        whole_text_similarity(resources, encoder, sim_threshold, sim_metric),
    ]
    transformation = BertAttackMaskedLMSwap(
        mlm,
        mlm_tokenizer,
        subword_candidates=subword_candidates,
        max_candidates=max_candidates,
        max_length=mlm_max_length,
    )
    return greedy_wir_attack(
        model_wrapper, constraints, transformation, wir_method="unk", query_budget=query_budget
    )
