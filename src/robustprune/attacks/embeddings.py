"""Counter-fitted GloVe word vectors with a nearest-neighbour table (TextFooler's word-swap space).

TextFooler (Jin et al., AAAI 2020) swaps words for their nearest neighbours in the counter-fitted
paragram vectors of Mrkšić et al. (2016), which are not available offline.  This module builds a
stand-in: GloVe 6B 50-d (resource ``glove50``) restricted to its ``vocab_size`` most frequent
purely alphabetic words (TextFooler's vocabulary has 65,713 words), counter-fitted with WordNet
synonym and antonym pairs (:mod:`robustprune.attacks.counterfit`), with the top-K cosine
neighbours of every word.

The vocabulary is ASCII lowercase letters only (``[a-z]+``), so every word and neighbour is
exactly one word for ``textattack.shared.utils.words_from_text``: no punctuation, clitics
(``'s``), numbers or hyphenated compounds that would change the word count of a perturbed text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from robustprune.attacks.counterfit import RHO, counter_fit, normalise_rows
from robustprune.attacks.types import WordVectors
from robustprune.attacks.wordnet import Lexicon
from robustprune.checkpoints import atomic_path

GLOVE_MATRIX = "glove_6B_50d_emb.npy"
GLOVE_INDEX = "glove_6B_index.parquet"
DEFAULT_VOCAB_SIZE = 50_000
WORD_PATTERN = re.compile(r"[a-z]+")


def load_glove(glove_dir: Path, vocab_size: int | None = DEFAULT_VOCAB_SIZE) -> tuple[np.ndarray, list[str]]:
    """The first ``vocab_size`` purely alphabetic GloVe words (frequency order) and their raw vectors.

    ``glove_dir`` holds the extracted ``glove50`` resource; the matrix is stored in Fortran
    order and returned C-contiguous float32.  ``vocab_size=None`` keeps every alphabetic word.
    """
    import pandas as pd

    glove_dir = Path(glove_dir)
    words = pd.read_parquet(glove_dir / GLOVE_INDEX, columns=["index"])["index"].tolist()
    keep = [i for i, w in enumerate(words) if isinstance(w, str) and WORD_PATTERN.fullmatch(w)]
    keep = keep[:vocab_size] if vocab_size is not None else keep
    matrix = np.load(glove_dir / GLOVE_MATRIX, mmap_mode="r")
    if matrix.shape[0] != len(words):
        raise ValueError(f"{glove_dir}: {matrix.shape[0]} vectors but {len(words)} words in {GLOVE_INDEX}")
    return np.ascontiguousarray(matrix[keep], dtype=np.float32), [words[i] for i in keep]


def nearest_neighbours(
    matrix: np.ndarray, k: int, *, rows: np.ndarray | None = None, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours (self excluded) of ``rows`` (default all) by chunked matrix multiply.

    ``matrix`` must have unit rows.  Returns ``(indices int64 (R, k), similarities float32 (R, k))``,
    nearest first; ties are broken by the smaller index.
    """
    import torch

    rows = np.arange(len(matrix)) if rows is None else np.asarray(rows, dtype=np.int64)
    k = min(k, len(matrix) - 1)
    full = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
    indices = np.empty((len(rows), k), dtype=np.int64)
    sims = np.empty((len(rows), k), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        block = torch.from_numpy(rows[start : start + chunk])
        scores = full[block] @ full.T
        scores[torch.arange(len(block)), block] = -float("inf")
        top = torch.topk(scores, k, dim=1, sorted=True)
        indices[start : start + len(block)] = top.indices.numpy()
        sims[start : start + len(block)] = top.values.numpy()
    return indices, sims


def constraint_pairs(relation: Mapping[str, Iterable[str]], index: Mapping[str, int]) -> np.ndarray:
    """(P, 2) int64 row pairs ``i < j`` of the symmetric ``relation`` restricted to ``index``'s words."""
    pairs = {
        (min(i, j), max(i, j))
        for word, others in relation.items()
        if (i := index.get(word)) is not None
        for other in others
        if (j := index.get(other)) is not None and j != i
    }
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def vsp_pairs(
    matrix: np.ndarray, rows: np.ndarray, *, rho: float = RHO, k: int = 50, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Vector-space-preservation pairs (Mrkšić et al. 2016, Eq. 3): each of ``rows`` with its
    neighbours within cosine distance ``rho`` in the original space (at most ``k`` per row),
    as sorted ``i < j`` pairs, minus the pairs in ``exclude`` (e.g. antonyms)."""
    if len(rows) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    neighbours, sims = nearest_neighbours(matrix, k, rows=rows)
    close = sims >= 1.0 - rho
    left = np.repeat(np.asarray(rows, dtype=np.int64), close.sum(axis=1))
    right = neighbours[close]
    pairs = np.unique(np.stack([np.minimum(left, right), np.maximum(left, right)], axis=1), axis=0)
    if exclude is not None and len(exclude):
        width = len(matrix)
        drop = np.isin(pairs[:, 0] * width + pairs[:, 1], exclude[:, 0] * width + exclude[:, 1])
        pairs = pairs[~drop]
    return pairs


def build_word_vectors(
    glove_dir: Path,
    lexicon: Lexicon,
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    neighbours: int = 50,
    epochs: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> WordVectors:
    """GloVe 6B 50-d counter-fitted with ``lexicon``'s synonyms and antonyms, with K-NN tables.

    Steps: :func:`load_glove` (alphabetic vocabulary, see module doc); WordNet synonym and
    antonym pairs inside the vocabulary; VSP pairs (:func:`vsp_pairs`); :func:`counter_fit`
    for ``epochs`` full-batch steps; top-``neighbours`` cosine table (:func:`nearest_neighbours`).
    The procedure is deterministic: ``seed`` is accepted for a uniform stage interface and does
    not change the result.
    """
    del seed  # deterministic full-batch updates: nothing to seed
    start = time.perf_counter()
    raw, words = load_glove(glove_dir, vocab_size)
    matrix = normalise_rows(raw)
    index = {w: i for i, w in enumerate(words)}
    synonyms = constraint_pairs(lexicon.synonyms, index)
    antonyms = constraint_pairs(lexicon.antonyms, index)
    constrained = np.unique(np.concatenate([synonyms.ravel(), antonyms.ravel()]))
    preserve = vsp_pairs(matrix, constrained, exclude=antonyms)
    if progress:
        print(
            f"counter-fitting {len(words)} words: {len(synonyms)} synonym, {len(antonyms)} antonym, "
            f"{len(preserve)} VSP pairs ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )

    def report(epoch: int, terms: dict[str, float]) -> None:
        print(f"epoch {epoch}/{epochs}: " + ", ".join(f"{k}={v:.1f}" for k, v in terms.items()), flush=True)

    fitted = counter_fit(
        matrix, synonyms, antonyms, preserve, epochs=epochs, progress=report if progress else None
    )
    nn, sims = nearest_neighbours(fitted, neighbours)
    if progress:
        print(f"word vectors built in {time.perf_counter() - start:.1f} s", flush=True)
    return WordVectors(matrix=fitted, words=tuple(words), neighbours=nn, similarities=sims)


def save_word_vectors(vectors: WordVectors, path: Path) -> Path:
    """Write ``vectors`` to one ``.npz`` file atomically (no pickles: words as a unicode array)."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(
            handle,
            matrix=vectors.matrix.astype(np.float32),
            words=np.array(vectors.words, dtype=str),
            neighbours=vectors.neighbours.astype(np.int64),
            similarities=vectors.similarities.astype(np.float32),
        )
    return Path(path)


def load_word_vectors(path: Path) -> WordVectors:
    """Read a :func:`save_word_vectors` file and check that its arrays agree in shape."""
    with np.load(Path(path), allow_pickle=False) as data:
        vectors = WordVectors(
            matrix=data["matrix"],
            words=tuple(str(w) for w in data["words"]),
            neighbours=data["neighbours"],
            similarities=data["similarities"],
        )
    size = len(vectors.words)
    if (
        vectors.matrix.shape[0] != size
        or vectors.neighbours.shape[0] != size
        or vectors.neighbours.shape != vectors.similarities.shape
    ):
        raise ValueError(
            f"{path}: inconsistent word vectors: {size} words, matrix {vectors.matrix.shape}, "
            f"neighbours {vectors.neighbours.shape}, similarities {vectors.similarities.shape}"
        )
    return vectors
