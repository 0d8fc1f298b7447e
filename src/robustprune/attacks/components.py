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
* :class:`ContextualPartOfSpeech` is textattack's ``PartOfSpeech`` rule with spaCy's tagger
  (:mod:`robustprune.attacks.tagger`) in place of NLTK's perceptron tagger, whose model is
  unavailable offline; :class:`LexicalPartOfSpeech` (WordNet's lexical categories) is the fallback
  when the tagger is absent, and :func:`part_of_speech` picks between them;
* :class:`PolarityConstraint` (issue #28, off by default) rejects a swap whose two words have opposite
  polarity in VADER's or AFINN's lexicon or are WordNet antonyms (:mod:`robustprune.attacks.validity`);
  :func:`polarity_constraints` builds it from a recipe's ``polarity_constraint`` option;
* :func:`sentence_encoder` loads the shared mean-pooled encoder, :func:`untargeted_goal` the goal,
  :func:`greedy_wir_attack` the attack the recipes assemble from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from robustprune.attacks.similarity import EncoderSimilarity, MeanPooledEncoder
from robustprune.attacks.tagger import ContextTagger
from robustprune.attacks.textattack_env import import_textattack
from robustprune.attacks.types import AttackResources, WordVectors
from robustprune.attacks.validity import WORD_CHECKS, Polarity, ValidityRule, word_checks

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


class WordSwapConstraint(Constraint):
    """A constraint on the words a swap puts in place: meaningful for word swaps only (as textattack's
    ``PartOfSpeech``), so textattack skips it for other transformations."""

    def check_compatibility(self, transformation) -> bool:
        return transformation_consists_of_word_swaps(transformation)


class LexicalPartOfSpeech(WordSwapConstraint):
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

    def extra_repr_keys(self) -> list[str]:
        """Shown in ``print(attack)``."""
        return ["allow_verb_noun_swap", *super().extra_repr_keys()]


# the label reports carry for the lexicon fallback (ContextTagger.name for the tagger)
LEXICAL_POS = "wordnet-lexical"
POS_CONTEXT_BEFORE = 4  # textattack's PartOfSpeech window: 4 words before the swapped one ...
POS_CONTEXT_AFTER = 3  # ... and 3 after it


def pos_context(words: Sequence[str], index: int, word: str) -> tuple[tuple[str, ...], int]:
    """The words textattack's ``PartOfSpeech`` tags around ``index``, with ``word`` at ``index``.

    Returns ``(context, position of word in context)``: up to 4 words before and 3 after
    (``words[max(i - 4, 0) : i] + [word] + words[i + 1 : i + 4]``).
    """
    before = tuple(words[max(index - POS_CONTEXT_BEFORE, 0) : index])
    after = tuple(words[index + 1 : index + 1 + POS_CONTEXT_AFTER])
    return (*before, word, *after), len(before)


def can_replace_pos(a: str, b: str, allow_verb_noun_swap: bool) -> bool:
    """TextFooler's POS filter: the same universal tag, or nouns and verbs for each other."""
    return a == b or (allow_verb_noun_swap and {a, b} <= {"NOUN", "VERB"})


class ContextualPartOfSpeech(WordSwapConstraint):
    """A swap keeps the part of speech of the word it replaces, both tagged in context.

    TextFooler (Jin et al. 2019, Sec. 3.1 step 2) and textattack's ``PartOfSpeech`` (which
    TextFooler's recipe uses): for every newly modified index i, the reference word and the new
    word are each tagged inside the reference text's window ``words[i-4:i] + [w] + words[i+1:i+4]``
    (:func:`pos_context`); the swap passes when both get the same universal tag, or (with
    ``allow_verb_noun_swap``) one is a noun and the other a verb (:func:`can_replace_pos`).

    Differences from textattack's class: the tagger is spaCy's (``tagger``, a
    :class:`~robustprune.attacks.tagger.ContextTagger`) instead of NLTK's; the word's tag is read
    at its position in the window (textattack looks the word up with ``list.index``, which picks an
    earlier occurrence of the same word in the window); all candidates of a step are tagged in one
    batch (``_check_constraint_many``) and every window is cached by the tagger.
    ``compare_against_original`` defaults to True as textattack's.
    """

    def __init__(
        self,
        tagger: ContextTagger,
        *,
        allow_verb_noun_swap: bool = True,
        compare_against_original: bool = True,
    ):
        super().__init__(compare_against_original)
        self.tagger = tagger
        self.allow_verb_noun_swap = allow_verb_noun_swap

    def _contexts(self, transformed_text, reference_text) -> list[tuple[tuple, int, tuple, int]] | None:
        """(reference window, position, transformed window, position) per newly modified index.

        None when an index lies outside either text (the swap cannot be checked: rejected).
        """
        ref, new = reference_text.words, transformed_text.words
        out = []
        for i in sorted(transformed_text.attack_attrs["newly_modified_indices"]):
            if i >= len(ref) or i >= len(new):
                return None
            a, pa = pos_context(ref, i, ref[i])
            b, pb = pos_context(ref, i, new[i])
            out.append((a, pa, b, pb))
        return out

    def _check_constraint_many(self, transformed_texts, reference_text) -> list:
        """The transformed texts whose every swap keeps its part of speech (one tagger batch)."""
        plans = [self._contexts(t, reference_text) for t in transformed_texts]
        windows = [w for plan in plans if plan for a, _, b, _ in plan for w in (a, b)]
        tags = dict(zip(windows, self.tagger.tag_batch(windows), strict=True))
        kept = []
        for text, plan in zip(transformed_texts, plans, strict=True):
            if plan is not None and all(
                can_replace_pos(tags[a][pa], tags[b][pb], self.allow_verb_noun_swap) for a, pa, b, pb in plan
            ):
                kept.append(text)
        return kept

    def _check_constraint(self, transformed_text, reference_text) -> bool:
        """One transformed text (textattack's single-text entry point)."""
        return bool(self._check_constraint_many([transformed_text], reference_text))

    def extra_repr_keys(self) -> list[str]:
        """Shown in ``print(attack)``."""
        return ["allow_verb_noun_swap", *super().extra_repr_keys()]


def part_of_speech(
    resources: AttackResources,
    tagger: ContextTagger | None,
    *,
    mode: str = "tagger",
    allow_verb_noun_swap: bool = True,
) -> tuple[Constraint, str]:
    """The part-of-speech constraint a recipe uses, and a label saying which one ran.

    ``mode="tagger"``: :class:`ContextualPartOfSpeech` with ``tagger`` when one is given, else the
    WordNet fallback :class:`LexicalPartOfSpeech`; ``mode="lexical"``: always the fallback.  The
    label is the tagger's name or :data:`LEXICAL_POS`.
    """
    if mode not in ("tagger", "lexical"):
        raise ValueError(f"unknown part-of-speech mode {mode!r}; known: ['lexical', 'tagger']")
    if mode == "tagger" and tagger is not None:
        return ContextualPartOfSpeech(tagger, allow_verb_noun_swap=allow_verb_noun_swap), tagger.name
    return LexicalPartOfSpeech(resources.pos, allow_verb_noun_swap=allow_verb_noun_swap), LEXICAL_POS


def pos_label(attack) -> str | None:
    """Which part-of-speech check ``attack`` runs: the tagger's name, :data:`LEXICAL_POS`, or None."""
    for c in attack.constraints:
        if isinstance(c, ContextualPartOfSpeech):
            return c.tagger.name
        if isinstance(c, LexicalPartOfSpeech):
            return LEXICAL_POS
    return None


class PolarityConstraint(WordSwapConstraint):
    """Reject a word swap that changes the label: the replaced and the replacement word have opposite
    polarity in VADER's or AFINN's lexicon, or are WordNet antonyms (each of ``checks``, with the
    thresholds of ``rule``; :func:`robustprune.attacks.validity.word_checks`, the audit's word checks).

    Morris et al. 2020 (Findings of EMNLP, Sec. 3-4) show that synonym-swap attacks, TextFooler among
    them, often change the meaning; this constraint removes the lexically detectable part of it during the
    search. The word replaced at a newly modified index is read from the text being transformed
    (``compare_against_original=False``; with ``RepeatModification`` it is the original word); a word split
    in two (TextBugger's space) is compared as the space-joined pieces. Verdicts are memoised per pair.
    """

    def __init__(
        self, polarity: Polarity, rule: ValidityRule | None = None, checks: Sequence[str] = WORD_CHECKS
    ):
        super().__init__(compare_against_original=False)
        unknown = sorted(set(checks) - set(WORD_CHECKS))
        if unknown or not checks:
            raise ValueError(
                f"polarity constraint checks {list(checks)!r}: a non-empty subset of {WORD_CHECKS}"
            )
        self.polarity = polarity
        self.rule = rule or ValidityRule()
        self.checks = tuple(checks)
        self._memo: dict[tuple[str, str], bool] = {}

    def label_changing(self, old: str, new: str) -> bool:
        """Whether swapping ``old`` for ``new`` is flagged by any of the checks (case-insensitive)."""
        key = (old.lower(), new.lower())
        if key not in self._memo:
            self._memo[key] = any(word_checks(*key, self.polarity, self.rule, self.checks).values())
        return self._memo[key]

    def _check_constraint(self, transformed_text, reference_text) -> bool:
        """No newly modified word is a label-changing replacement of the word it replaced."""
        ref, new = reference_text.words, transformed_text.words
        extra = len(new) - len(ref)
        for i in transformed_text.attack_attrs["newly_modified_indices"]:
            if i >= len(ref) or i >= len(new):
                continue  # nothing replaced at i (an appended word): not a swap
            replacement = " ".join(new[i : i + extra + 1]) if extra > 0 else new[i]
            if self.label_changing(ref[i], replacement):
                return False
        return True

    def extra_repr_keys(self) -> list[str]:
        """Shown in ``print(attack)``."""
        return ["checks", *super().extra_repr_keys()]


def polarity_constraints(resources: AttackResources, options: Mapping | None) -> list[Constraint]:
    """``[PolarityConstraint]`` for a recipe's ``polarity_constraint`` option, ``[]`` when it is None.

    ``options``: ``{"checks": [...], "vader_threshold": t, "afinn_threshold": t}`` (``attack.validity``);
    the lexicons come from ``resources.polarity`` (the bundle's ``polarity/``).
    """
    if options is None:
        return []
    if resources.polarity is None:
        raise ValueError(
            "the polarity constraint needs the attack bundle's polarity/ lexicons: rebuild models/attack "
            "(the attack_resources stage)"
        )
    rule = ValidityRule(
        vader_threshold=float(options.get("vader_threshold", 0.5)),
        afinn_threshold=int(options.get("afinn_threshold", 1)),
    )
    return [PolarityConstraint(resources.polarity, rule, tuple(options.get("checks", WORD_CHECKS)))]


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


def common_constraints(resources: AttackResources, polarity_constraint: Mapping | None) -> list[Constraint]:
    """The constraints every word-swap recipe opens with: no word swapped twice, no stopword swapped
    (lower-cased, the bundle's list), then the optional polarity check (:func:`polarity_constraints`)."""
    return [
        _ta.constraints.pre_transformation.RepeatModification(),
        LowercaseStopwordModification(resources.stopwords),
        *polarity_constraints(resources, polarity_constraint),
    ]


def whole_text_similarity(
    resources: AttackResources, encoder: MeanPooledEncoder | None, threshold: float, metric: str
) -> EncoderSimilarity:
    """Sentence similarity of the whole perturbed text to the original (BERT-Attack's and TextBugger's)."""
    return EncoderSimilarity(
        sentence_encoder(resources, encoder),
        threshold=threshold,
        metric=metric,
        compare_against_original=True,
        window_size=None,
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


def greedy_wir_attack(
    model_wrapper,
    constraints: list,
    transformation,
    *,
    wir_method: str,
    query_budget: int | None = None,
    **wir,
):  # noqa: ANN001 - textattack objects
    """The recipes' ``textattack.Attack``: the untargeted goal, greedy word swap by word importance ranking
    (``wir_method``: "delete", "unk", "gradient"; ``wir`` more ``GreedyWordSwapWIR`` options)."""
    return _ta.Attack(
        untargeted_goal(model_wrapper, query_budget=query_budget),
        constraints,
        transformation,
        _ta.search_methods.GreedyWordSwapWIR(wir_method=wir_method, **wir),
    )
