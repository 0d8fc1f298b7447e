"""textattack components shared by the offline recipes (TextFooler, BERT-Attack, TextBugger).

Each one replaces a stock component that downloads something or crashes offline
(resources.md, "textattack 0.3.11 offline pitfalls"):

* :func:`word_embedding` wraps :class:`~robustprune.attacks.types.WordVectors` as a
  ``textattack.shared.WordEmbedding`` (the stock one fetches paragram-cf vectors from S3);
* :class:`OneWordEmbeddingSwap` keeps only neighbours that ``words_from_text`` parses as exactly one
  word (a neighbour such as ``,`` or ``'s`` changes the word count and crashes
  ``SentenceEncoder._score_list`` with ``StopIteration``);
* :class:`LowercaseStopwordModification` compares words case-insensitively (textattack compares the
  raw word, so a sentence-initial "The" would be modifiable);
* :class:`LexicalPartOfSpeech` replaces ``PartOfSpeech`` (its NLTK tagger model is unavailable
  offline) by a lexicon check against WordNet's lexical categories;
* :func:`sentence_encoder` loads the shared mean-pooled encoder, :func:`untargeted_goal` the goal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from robustprune.attacks.similarity import MeanPooledEncoder
from robustprune.attacks.textattack_env import import_textattack
from robustprune.attacks.types import AttackResources, WordVectors

_ta = import_textattack()
WordEmbedding = _ta.shared.WordEmbedding
WordSwapEmbedding = _ta.transformations.WordSwapEmbedding
StopwordModification = _ta.constraints.pre_transformation.StopwordModification
Constraint = _ta.constraints.Constraint
UntargetedClassification = _ta.goal_functions.UntargetedClassification
words_from_text = _ta.shared.utils.words_from_text
transformation_consists_of_word_swaps = _ta.shared.validators.transformation_consists_of_word_swaps


def is_one_word(candidate: str) -> bool:
    """True when textattack's ``words_from_text`` parses ``candidate`` as exactly one word."""
    return len(words_from_text(candidate)) == 1


class FastWordEmbedding(WordEmbedding):
    """``WordEmbedding`` whose cosine similarity is a NumPy dot product of L2-normalised rows.

    The stock class builds two torch tensors per word pair; the rows of ``WordVectors.matrix`` are
    already unit length (types.py), so the dot product is the cosine.
    """

    def get_cos_sim(self, a: str | int, b: str | int) -> float:
        """Cosine similarity of two words (ids or strings), memoised like the stock class."""
        a = self._word2index[a] if isinstance(a, str) else a
        b = self._word2index[b] if isinstance(b, str) else b
        a, b = min(a, b), max(a, b)
        row = self._cos_sim_mat[a]
        if b not in row:
            row[b] = float(np.dot(self.embedding_matrix[a], self.embedding_matrix[b]))
        return row[b]


def word_embedding(vectors: WordVectors) -> FastWordEmbedding:
    """A textattack ``WordEmbedding`` over ``vectors``.

    textattack's ``nearest_neighbours`` reads ``nn_matrix[i][1 : topn + 1]``: column 0 must be the
    word itself, so the word's own index is prepended to ``vectors.neighbours`` (which lists other
    words only).
    """
    n = len(vectors.words)
    if vectors.matrix.shape[0] != n or vectors.neighbours.shape[0] != n:
        raise ValueError(
            f"WordVectors rows disagree: matrix {vectors.matrix.shape}, words {n}, "
            f"neighbours {vectors.neighbours.shape}"
        )
    nn = np.concatenate([np.arange(n, dtype=np.int64)[:, None], vectors.neighbours.astype(np.int64)], axis=1)
    w2i = vectors.index()
    i2w = dict(enumerate(vectors.words))
    return FastWordEmbedding(np.asarray(vectors.matrix, dtype=np.float32), w2i, i2w, nn)


class OneWordEmbeddingSwap(WordSwapEmbedding):
    """``WordSwapEmbedding`` keeping only candidates that parse as exactly one word.

    ``max_candidates`` neighbours are looked up first, then filtered (so fewer may remain), as in
    textattack's own candidate filtering for masked-LM swaps.
    """

    def _get_replacement_words(self, word: str) -> list[str]:
        """Nearest-neighbour replacements of ``word`` that stay one word."""
        return [c for c in super()._get_replacement_words(word) if is_one_word(c)]


class LowercaseStopwordModification(StopwordModification):
    """Forbid modifying stop words, compared in lower case."""

    def __init__(self, stopwords: Iterable[str]):
        super().__init__(stopwords={w.lower() for w in stopwords})

    def _get_modifiable_indices(self, current_text) -> set[int]:
        """Indices of words whose lower-cased form is not a stop word."""
        return {i for i, w in enumerate(current_text.words) if w.lower() not in self.stopwords}


def _coarse(pos: frozenset[str], allow_verb_noun_swap: bool) -> frozenset[str]:
    """Part-of-speech set, with noun and verb merged when they may replace each other."""
    if allow_verb_noun_swap and pos & {"noun", "verb"}:
        return pos | {"noun", "verb"}
    return pos


class LexicalPartOfSpeech(Constraint):
    """A swap keeps a part of speech: the new word shares a WordNet category with the old one.

    TextFooler (Jin et al. 2019, Sec. 3.1 step 2) keeps candidates whose part of speech, tagged in
    context, equals the original word's; textattack tags with NLTK's perceptron tagger, which is not
    available offline.  This constraint uses the words' possible parts of speech in WordNet
    (``AttackResources.pos``: subsets of noun/verb/adj/adv) instead: a swap is allowed when the two
    sets intersect, or when either word has no WordNet entry (function words, names, rare words:
    nothing to compare, so the constraint abstains; a tagger always returns some tag).
    ``allow_verb_noun_swap`` (textattack's TextFooler setting) lets nouns and verbs replace each
    other.  Being context-free, it is more permissive than tagging: "play" (noun and verb) may
    replace "film" used as a noun.
    """

    def __init__(
        self,
        pos: Mapping[str, frozenset[str]],
        *,
        allow_verb_noun_swap: bool = True,
        compare_against_original: bool = True,
    ):
        super().__init__(compare_against_original)
        self.pos = pos
        self.allow_verb_noun_swap = allow_verb_noun_swap

    def compatible(self, old: str, new: str) -> bool:
        """Whether ``new`` may replace ``old`` (case-insensitive lexicon lookup)."""
        a = self.pos.get(old.lower(), frozenset())
        b = self.pos.get(new.lower(), frozenset())
        if not a or not b:
            return True
        return bool(_coarse(a, self.allow_verb_noun_swap) & _coarse(b, self.allow_verb_noun_swap))

    def _check_constraint(self, transformed_text, reference_text) -> bool:
        """Every newly modified word is POS-compatible with the reference word at that index."""
        ref, new = reference_text.words, transformed_text.words
        for i in transformed_text.attack_attrs["newly_modified_indices"]:
            if i >= len(ref) or i >= len(new):
                return False
            if not self.compatible(ref[i], new[i]):
                return False
        return True

    def check_compatibility(self, transformation) -> bool:
        """Meaningful for word swaps only (as textattack's PartOfSpeech)."""
        return transformation_consists_of_word_swaps(transformation)

    def extra_repr_keys(self) -> list[str]:
        """Shown in ``print(attack)``."""
        return ["allow_verb_noun_swap", *super().extra_repr_keys()]


def sentence_encoder(
    resources: AttackResources,
    encoder: MeanPooledEncoder | None = None,
    *,
    cache_size: int = 1 << 16,
    max_length: int = 128,
    batch_size: int = 64,
) -> MeanPooledEncoder:
    """``encoder`` if given (to share one model and cache across recipes), else load from
    ``resources.encoder_dir``."""
    if encoder is not None:
        return encoder
    return MeanPooledEncoder.from_dir(
        resources.encoder_dir, cache_size=cache_size, max_length=max_length, batch_size=batch_size
    )


def untargeted_goal(model_wrapper, *, query_budget: int | None = None, batch_size: int | None = None):
    """textattack's untargeted classification goal: any label but the true one.

    ``batch_size`` (default: the wrapper's ``batch_size``, else 32) is how many texts textattack
    hands the wrapper per call.
    """
    if batch_size is None:
        batch_size = getattr(model_wrapper, "batch_size", 32)
    return UntargetedClassification(
        model_wrapper,
        query_budget=float("inf") if query_budget is None else query_budget,
        model_batch_size=batch_size,
    )
