"""TextBugger (Li et al. 2018, "TextBugger: Generating Adversarial Text Against Real-world
Applications", NDSS 2019, arXiv:1812.05271), black-box word level, built offline.

Components follow textattack's ``TextBuggerLi2018`` recipe (whose homoglyph file is missing from
the 0.3.11 wheel, so the stock recipe fails):

* search: greedy swap in order of word importance, importance = drop in the true-class
  probability when the word is deleted (paper Sec. III-C step 2; ``GreedyWordSwapWIR("delete")``);
  each step tries every bug for the word and keeps the best (paper Alg. 3, "select the optimal bug");
* bugs (paper Sec. III-B): (1) insert a space inside the word, (2) delete a character, (3) swap
  two adjacent characters, none touching the first or last character; (4) Sub-C: replace a
  character by a look-alike; (5) Sub-W: one of the word's 5 nearest neighbours in the word
  embedding (paper: top 5);
* constraints: no word modified twice; no stop word modified; sentence-encoder cosine >= 0.8
  between the original and the perturbed text (paper Sec. IV-A: USE cosine, epsilon = 0.8;
  textattack uses its default angular metric at 0.8, i.e. cosine ~0.81).

Deviations from the paper:

* The paper first ranks sentences and attacks the important ones; like textattack, we rank the
  words of the whole text at once (the review snippets are one or two sentences).
* Bugs (1)-(3) pick "a random" position; here the position is drawn from a generator seeded by
  ``(seed, bug, word)``, so results are reproducible and identical between runs and set-ups.
* Sub-C uses ``AttackResources.lookalikes`` (the first look-alike of each character, at every
  position that has one, as textattack's homoglyph swap does); the paper also uses adjacent
  keyboard keys.  Sub-W uses ``AttackResources.vectors`` (counter-fitted GloVe, as textattack)
  instead of plain GloVe.
* Sentence encoder: mean-pooled all-MiniLM-L6-v2 instead of USE; threshold ``sim_threshold``.
* Bugs (2)-(5) are kept only when ``words_from_text`` parses the result as exactly one word; bug (1)
  by design yields two words and is kept when it yields exactly two.  Stop words are compared in
  lower case (``resources.stopwords``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping

from robustprune.attacks.components import (
    OneWordEmbeddingSwap,
    common_constraints,
    greedy_wir_attack,
    is_one_word,
    whole_text_similarity,
    word_embedding,
    words_from_text,
)
from robustprune.attacks.similarity import MeanPooledEncoder
from robustprune.attacks.textattack_env import import_textattack
from robustprune.attacks.types import AttackResources
from robustprune.registry import TEXTBUGGER

NAME = TEXTBUGGER.name
logger = logging.getLogger(__name__)
_ta = import_textattack()
CHAR_BUGS = ("insert", "delete", "swap")


def char_bug(word: str, kind: str, rng: random.Random) -> str | None:
    """Apply one TextBugger character bug at a random inner position; None if the word is too short.

    Positions as textattack's ``skip_first_char=True, skip_last_char=True`` swaps: insert a space
    before character i, delete character i (1 <= i <= len-2), or swap characters i and i+1
    (1 <= i <= len-3).
    """
    last = len(word) - (3 if kind == "swap" else 2)
    if last < 1:
        return None
    i = rng.randint(1, last)
    if kind == "insert":
        return word[:i] + " " + word[i:]
    if kind == "delete":
        return word[:i] + word[i + 1 :]
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    raise ValueError(f"unknown character bug {kind!r}; known: {CHAR_BUGS}")


def lookalike_bugs(word: str, lookalikes: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Sub-C: for every position whose character has a look-alike, the word with its first look-alike."""
    return [word[:i] + lookalikes[c][0] + word[i + 1 :] for i, c in enumerate(word) if lookalikes.get(c)]


class CharBugSwap(_ta.transformations.word_swaps.WordSwap):
    """TextBugger bugs (1)-(3) (``kind`` in insert/delete/swap) or Sub-C (``kind="sub_c"``)."""

    def __init__(self, kind: str, *, lookalikes: Mapping[str, tuple[str, ...]] | None = None, seed: int = 0):
        if kind not in (*CHAR_BUGS, "sub_c"):
            raise ValueError(f"unknown character bug {kind!r}; known: {(*CHAR_BUGS, 'sub_c')}")
        if kind == "sub_c" and not lookalikes:
            raise ValueError("the sub_c bug needs a non-empty look-alike table")
        super().__init__()
        self.kind = kind
        self.lookalikes = lookalikes or {}
        self.seed = seed

    def _get_replacement_words(self, word: str) -> list[str]:
        """Candidates for ``word`` (at most one for the random bugs)."""
        if self.kind == "sub_c":
            return [c for c in lookalike_bugs(word, self.lookalikes) if is_one_word(c)]
        bugged = char_bug(word, self.kind, random.Random(f"{self.seed}|{self.kind}|{word}"))
        if bugged is None:
            return []
        n_words = 2 if self.kind == "insert" else 1
        return [bugged] if len(words_from_text(bugged)) == n_words else []

    @property
    def deterministic(self) -> bool:
        """Same word, same bug: textattack may cache the transformation."""
        return True

    def extra_repr_keys(self) -> list[str]:
        """Shown in ``print(attack)``."""
        return ["kind", "seed"]


def build(
    model_wrapper,
    resources: AttackResources,
    *,
    embedding_candidates: int = 5,
    sim_threshold: float = 0.8,
    sim_metric: str = "cosine",
    seed: int = 0,
    encoder: MeanPooledEncoder | None = None,
    query_budget: int | None = None,
    polarity_constraint: dict | None = None,
):
    """A ``textattack.Attack`` implementing TextBugger (black-box, word level).

    ``polarity_constraint``: reject label-changing swaps
    (:func:`~robustprune.attacks.components.polarity_constraints`; issue #28, off by default).
    """
    bugs = [CharBugSwap(kind, seed=seed) for kind in CHAR_BUGS]
    if resources.lookalikes:
        bugs.append(CharBugSwap("sub_c", lookalikes=resources.lookalikes))
    else:
        logger.warning("TextBugger without Sub-C: AttackResources.lookalikes is empty")
    transformation = _ta.transformations.CompositeTransformation(
        [
            *bugs,
            OneWordEmbeddingSwap(
                max_candidates=embedding_candidates, embedding=word_embedding(resources.vectors)
            ),
        ]
    )
    constraints = [
        *common_constraints(resources, polarity_constraint),
        whole_text_similarity(resources, encoder, sim_threshold, sim_metric),
    ]
    return greedy_wir_attack(
        model_wrapper, constraints, transformation, wir_method="delete", query_budget=query_budget
    )
