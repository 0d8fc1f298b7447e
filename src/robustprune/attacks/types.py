"""Shared data types of the attack package (the contract between resource builders and recipes).

Resource builders (``embeddings.py``, ``wordnet.py``, ``lookalike.py``, ``mlm.py``) produce these;
recipes (``textfooler.py``, ``bert_attack.py``, ``textbugger.py``) consume them.  Nothing here
imports textattack, prefect, mlflow or dvc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class WordVectors:
    """A word embedding with precomputed nearest neighbours.

    ``matrix``: (V, d) float32, rows L2-normalised; ``words[i]`` is row i; ``neighbours``: (V, K)
    int64 row indices of the K nearest other words by cosine, nearest first; ``similarities``:
    (V, K) float32 cosine of each of those neighbours.
    """

    matrix: np.ndarray
    words: tuple[str, ...]
    neighbours: np.ndarray
    similarities: np.ndarray

    def index(self) -> dict[str, int]:
        """Word → row index."""
        return {w: i for i, w in enumerate(self.words)}


@dataclass(frozen=True)
class AttackResources:
    """Everything the offline recipes need, loaded from the attack-resources stage's outputs.

    ``vectors``: counter-fitted word vectors (TextFooler, TextBugger word swaps).
    ``pos``: word → set of coarse WordNet parts of speech (subset of {"noun", "verb", "adj", "adv"}).
    ``stopwords``: words never perturbed.
    ``lookalikes``: character → look-alike characters (TextBugger "sub-C").
    ``encoder_dir``: sentence encoder (HF directory, mean-pooled) for the similarity constraints.
    ``mlm_dir``: masked-LM directory (``AutoModelForMaskedLM`` loads it) for BERT-Attack.
    ``tagger_dir``: spaCy pipeline directory for the contextual part-of-speech check (TextFooler);
    ``None``: the WordNet lexical check (``pos``) is used instead.
    ``polarity``: VADER, AFINN and WordNet antonyms (:class:`robustprune.attacks.validity.Polarity`) for
    the polarity constraint; ``None`` when the bundle has no ``polarity/``.
    """

    vectors: WordVectors
    pos: dict[str, frozenset[str]]
    stopwords: frozenset[str]
    lookalikes: dict[str, tuple[str, ...]]
    encoder_dir: Path
    mlm_dir: Path | None = None
    tagger_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # robustprune.attacks.validity.Polarity (the bundle's polarity/): the polarity constraint's lexicons
    polarity: object | None = None
