"""TextFooler (Jin et al. 2019, "Is BERT Really Robust?", arXiv:1907.11932), built offline.

Components follow textattack's ``TextFoolerJin2019`` recipe (which follows the released code,
github.com/jind11/TextFooler ``attack_classification.py``):

* search: greedy word swap in order of word importance, importance = drop in the true-class
  probability when the word is deleted (paper Sec. 3.1 step 1; ``GreedyWordSwapWIR("delete")``);
* transformation: the ``max_candidates=50`` nearest neighbours in counter-fitted word vectors
  (paper Sec. 3.1 step 2, N = 50);
* constraints: no word modified twice; no stop word modified; embedding cosine >= 0.5 (the
  paper says 0.7, the released code and textattack use 0.5); same part of speech, tagged in
  context (nouns and verbs interchangeable, as the released ``criteria.pos_filter`` and
  textattack); sentence-encoder similarity on a 15-word window around the swap, compared with the
  previous text (``compare_against_original=False``, the released code's ``text_cache``).

Sentence similarity, what the released code does (``attack_classification.py``, ``attack()``):
its USE score is ``1 - arccos(cos)`` (radians, no division by pi), kept when ``>= 0.5`` (the
function's default; the script's ``--sim_score_threshold`` defaults to 0.7); textattack turns this
into its angular metric ``1 - arccos(cos)/pi >= 1 - 0.5/pi = 0.840845057`` (``sim_threshold``).
For a text with fewer words than the window (``len_text < sim_score_window``) the released code
compares the *whole* text but first sets ``sim_score_threshold = 0.1`` (its comment: "shut down
the similarity thresholding function"): ``1 - arccos(cos) >= 0.1``, i.e. cos >= 0.62, angular >=
1 - 0.9/pi = 0.7135 — a much weaker check, not the same check on the whole text.  textattack's
recipe goes further and skips short texts altogether (``skip_text_shorter_than_window=True``).
``short_text`` chooses (:class:`~robustprune.attacks.similarity.EncoderSimilarity`):

* ``"released"`` (default): whole text at the released code's lowered threshold
  (``short_text_threshold`` = 1 - 0.9/pi);
* ``"strict"``: whole text at ``sim_threshold``, the same bar as long texts;
* ``"skip"``: textattack's recipe, no check (what this project did before issue #14).

``benchmarks/attack_fidelity.py`` measures each rule (``docs/attacks.md``).

Part of speech: ``pos="tagger"`` (default) tags the word and its replacement inside the reference
text's window (4 words before, 3 after: textattack's ``PartOfSpeech``) with spaCy's
``en_core_web_sm`` tagger mapped to the universal tag set (:mod:`robustprune.attacks.tagger`;
``AttackResources.tagger_dir`` or ``tagger``).  The released code tags the original text whole and
the candidate's 9-word window with NLTK's tagger; textattack tags both in the same 8-word window.
Without a tagger (spaCy missing, or a bundle built without it) and with ``pos="lexical"`` the
WordNet check :class:`~robustprune.attacks.components.LexicalPartOfSpeech` runs instead; which one
ran is :func:`~robustprune.attacks.components.pos_label` of the attack.

Options beyond the paper (issue #28; both off by default, so the recipe stays the papers'):

* ``adjusted=True``: Morris et al. 2020's adjusted TextFooler ("Reevaluating Adversarial Examples in
  Natural Language", Findings of EMNLP 2020, Table 6; textattack's ``Jin2019TextFoolerAdjusted``): word
  cosine >= 0.9 (``ADJUSTED_MIN_COS_SIM``), sentence-encoder *cosine* >= 0.98 (``ADJUSTED_SIM_THRESHOLD``)
  on the 15-word window, short texts compared whole at the same bar (``short_text="strict"``, their
  ``skip_text_shorter_than_window=False``). Their third constraint, no new LanguageTool grammar error,
  needs a LanguageTool server (Java, downloaded at run time) and is left out.
* ``polarity_constraint``: reject swaps with opposite lexicon polarity or WordNet antonyms
  (:class:`~robustprune.attacks.components.PolarityConstraint`), checked before the costly constraints.

Deviations from the paper (all forced by the offline setting):

* Word vectors: ``AttackResources.vectors`` (counter-fitted GloVe, Mrksic et al. 2016, built
  offline) instead of counter-fitted PARAGRAM-SL999.
* Part of speech: spaCy's tagger instead of NLTK's (both predict Penn Treebank tags, mapped to the
  same universal tags).
* Sentence encoder: mean-pooled all-MiniLM-L6-v2 instead of USE.  Same metric, window and
  threshold; MiniLM's cosines of near-paraphrases sit around 0.9 like USE's, but the scales are not
  calibrated against each other (the fidelity benchmark sweeps the threshold).
* Candidates that ``words_from_text`` does not parse as exactly one word are dropped.
* Stop words are compared in lower case (``resources.stopwords``, not the released list).
"""

from __future__ import annotations

from robustprune.attacks.components import (
    OneWordEmbeddingSwap,
    common_constraints,
    greedy_wir_attack,
    part_of_speech,
    sentence_encoder,
    word_embedding,
)
from robustprune.attacks.similarity import (
    RELEASED_SHORT_TEXT_THRESHOLD,
    EncoderSimilarity,
    MeanPooledEncoder,
)
from robustprune.attacks.tagger import ContextTagger, load_tagger_or_none
from robustprune.attacks.textattack_env import import_textattack
from robustprune.attacks.types import AttackResources
from robustprune.registry import TEXTFOOLER

NAME = TEXTFOOLER.name
ADJUSTED_MIN_COS_SIM = 0.9  # Morris et al. 2020, adjusted TextFooler: word-embedding cosine
ADJUSTED_SIM_THRESHOLD = 0.98  # ... and sentence-encoder cosine


def build(
    model_wrapper,
    resources: AttackResources,
    *,
    max_candidates: int = 50,
    min_cos_sim: float = 0.5,
    allow_verb_noun_swap: bool = True,
    pos: str = "tagger",
    sim_threshold: float = 0.840845057,
    sim_metric: str = "angular",
    window_size: int | None = 15,
    short_text: str = "released",
    short_text_threshold: float = RELEASED_SHORT_TEXT_THRESHOLD,
    encoder: MeanPooledEncoder | None = None,
    tagger: ContextTagger | None = None,
    query_budget: int | None = None,
    adjusted: bool = False,
    polarity_constraint: dict | None = None,
):
    """A ``textattack.Attack`` implementing TextFooler (see the module docstring for every option).

    ``pos``: "tagger" (contextual; falls back to "lexical" without a tagger) or "lexical";
    ``short_text``: "released", "strict" or "skip"; ``tagger``: a shared
    :class:`~robustprune.attacks.tagger.ContextTagger` (default: loaded from ``resources``).
    ``adjusted``: Morris et al.'s thresholds, overriding ``min_cos_sim``, ``sim_threshold``,
    ``sim_metric`` and ``short_text``; ``polarity_constraint``: the options of
    :func:`~robustprune.attacks.components.polarity_constraints` (None: no such constraint).
    """
    if adjusted:
        min_cos_sim, sim_threshold, sim_metric, short_text = (
            ADJUSTED_MIN_COS_SIM,
            ADJUSTED_SIM_THRESHOLD,
            "cosine",
            "strict",
        )
    ta = import_textattack()
    embedding = word_embedding(resources.vectors)
    pos_constraint, _ = part_of_speech(
        resources,
        (tagger or load_tagger_or_none(resources.tagger_dir)) if pos == "tagger" else None,
        mode=pos,
        allow_verb_noun_swap=allow_verb_noun_swap,
    )
    constraints = [
        *common_constraints(resources, polarity_constraint),
        ta.constraints.semantics.WordEmbeddingDistance(embedding=embedding, min_cos_sim=min_cos_sim),
        pos_constraint,
        EncoderSimilarity(
            sentence_encoder(resources, encoder),
            threshold=sim_threshold,
            metric=sim_metric,
            compare_against_original=False,
            window_size=window_size,
            short_text=short_text,
            short_text_threshold=short_text_threshold,
        ),
    ]
    swap = OneWordEmbeddingSwap(max_candidates=max_candidates, embedding=embedding)
    return greedy_wir_attack(model_wrapper, constraints, swap, wir_method="delete", query_budget=query_budget)
