"""TextFooler (Jin et al. 2019, "Is BERT Really Robust?", arXiv:1907.11932), built offline.

Components follow textattack's ``TextFoolerJin2019`` recipe (which follows the released code):

* search: greedy word swap in order of word importance, importance = drop in the true-class
  probability when the word is deleted (paper Sec. 3.1 step 1; ``GreedyWordSwapWIR("delete")``);
* transformation: the ``max_candidates=50`` nearest neighbours in counter-fitted word vectors
  (paper Sec. 3.1 step 2, N = 50);
* constraints: no word modified twice; no stop word modified; embedding cosine >= 0.5 (the
  paper says 0.7, the released code and textattack use 0.5); same part of speech (nouns and
  verbs interchangeable, as textattack); sentence-encoder angular similarity >= 0.840845057 on a
  15-word window around the swap, compared with the previous text (the released code's
  USE threshold 0.5 on 1 - angle, with the missing division by pi: 1 - 0.5/pi), skipped for texts
  shorter than the window.

Deviations from the paper (all forced by the offline setting):

* Word vectors: ``AttackResources.vectors`` (counter-fitted GloVe, Mrksic et al. 2016, built
  offline) instead of counter-fitted PARAGRAM-SL999.
* Part of speech: WordNet lexical categories of each word, not a contextual tagger
  (:class:`~robustprune.attacks.components.LexicalPartOfSpeech`; unknown words always pass).
* Sentence encoder: mean-pooled all-MiniLM-L6-v2 instead of USE.  Same metric, window and
  threshold; MiniLM's cosines of near-paraphrases sit around 0.9 like USE's, but the scales are not
  calibrated against each other.  The threshold is an option (``sim_threshold``).
* Candidates that ``words_from_text`` does not parse as exactly one word are dropped.
* Stop words are compared in lower case (``resources.stopwords``, not the released list).
"""

from __future__ import annotations

from robustprune.attacks.components import (
    LexicalPartOfSpeech,
    LowercaseStopwordModification,
    OneWordEmbeddingSwap,
    sentence_encoder,
    untargeted_goal,
    word_embedding,
)
from robustprune.attacks.similarity import EncoderSimilarity, MeanPooledEncoder
from robustprune.attacks.textattack_env import import_textattack
from robustprune.attacks.types import AttackResources

NAME = "textfooler"


def build(
    model_wrapper,
    resources: AttackResources,
    *,
    max_candidates: int = 50,
    min_cos_sim: float = 0.5,
    allow_verb_noun_swap: bool = True,
    sim_threshold: float = 0.840845057,
    sim_metric: str = "angular",
    window_size: int | None = 15,
    skip_text_shorter_than_window: bool = True,
    encoder: MeanPooledEncoder | None = None,
    query_budget: int | None = None,
):
    """A ``textattack.Attack`` implementing TextFooler with the paper's / textattack's defaults."""
    ta = import_textattack()
    embedding = word_embedding(resources.vectors)
    constraints = [
        ta.constraints.pre_transformation.RepeatModification(),
        LowercaseStopwordModification(resources.stopwords),
        ta.constraints.semantics.WordEmbeddingDistance(embedding=embedding, min_cos_sim=min_cos_sim),
        LexicalPartOfSpeech(resources.pos, allow_verb_noun_swap=allow_verb_noun_swap),
        EncoderSimilarity(
            sentence_encoder(resources, encoder),
            threshold=sim_threshold,
            metric=sim_metric,
            compare_against_original=False,
            window_size=window_size,
            skip_text_shorter_than_window=skip_text_shorter_than_window,
        ),
    ]
    return ta.Attack(
        untargeted_goal(model_wrapper, query_budget=query_budget),
        constraints,
        OneWordEmbeddingSwap(max_candidates=max_candidates, embedding=embedding),
        ta.search_methods.GreedyWordSwapWIR(wir_method="delete"),
    )
