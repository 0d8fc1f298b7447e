"""Counter-fitting word vectors to synonym/antonym constraints (Mrkšić et al., NAACL 2016).

N. Mrkšić, D. Ó Séaghdha, B. Thomson, M. Gašić, L. Rojas-Barahona, P.-H. Su, D. Vandyke,
T.-H. Wen, S. Young, "Counter-fitting Word Vectors to Linguistic Constraints", NAACL 2016.
With ``d(u, v) = 1 - cos(u, v)`` and ``τ(x) = max(0, x)`` the objective (their Eq. 1-4) is

* antonym repel      ``AR  = Σ_{(u,w) ∈ A} τ(δ - d(v'_u, v'_w))``           (δ = 1.0)
* synonym attract    ``SA  = Σ_{(u,w) ∈ S} τ(d(v'_u, v'_w) - γ)``           (γ = 0.0)
* space preservation ``VSP = Σ_i Σ_{j ∈ N(i)} τ(d(v'_i, v'_j) - d(v_i, v_j))``, where ``N(i)`` are
  the words within distance ρ = 0.2 of ``i`` in the original space,

``C = k1·AR + k2·SA + k3·VSP``.  As in the authors' reference implementation
(github.com/nmrksic/counter-fitting) it is minimised by full-batch gradient steps in which each
word moves by the mean of its active pair gradients, and every row is re-normalised to unit
length after each step.  One deviation, documented here: the mean is taken per term
(``k1·mean_AR + k2·mean_SA + k3·mean_VSP``) so that a word's one or two antonym pairs are not
drowned by its dozens of synonym and neighbour pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DELTA, GAMMA, RHO = 1.0, 0.0, 0.2
WEIGHTS = (0.1, 0.1, 0.1)


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Float32 copy of ``matrix`` with unit-length rows (all-zero rows stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def pair_distances(matrix: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine distance ``1 - u·w`` of each row pair of a unit-row ``matrix`` (pairs: (P, 2) int)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return 1.0 - np.einsum("ij,ij->i", matrix[pairs[:, 0]], matrix[pairs[:, 1]])


def objective(
    matrix: np.ndarray,
    synonyms: np.ndarray,
    antonyms: np.ndarray,
    vsp: np.ndarray,
    vsp_distances: np.ndarray,
    *,
    delta: float = DELTA,
    gamma: float = GAMMA,
    weights: tuple[float, float, float] = WEIGHTS,
) -> dict[str, float]:
    """The three terms and the weighted total of the counter-fitting objective (Mrkšić et al. Eq. 1-4)."""
    ar = float(np.maximum(0.0, delta - pair_distances(matrix, antonyms)).sum())
    sa = float(np.maximum(0.0, pair_distances(matrix, synonyms) - gamma).sum())
    vs = float(np.maximum(0.0, pair_distances(matrix, vsp) - vsp_distances).sum())
    k1, k2, k3 = weights
    return {"ar": ar, "sa": sa, "vsp": vs, "total": k1 * ar + k2 * sa + k3 * vs}


def _mean_pair_step(matrix: np.ndarray, pairs: np.ndarray, active: np.ndarray, sign: float) -> np.ndarray:
    """Per-word mean over active pairs of ``sign · (w - cos(u, w)·u)``, for both ends of each pair.

    ``w - cos·u`` is minus the gradient of ``d(u, w)`` with respect to a unit vector ``u``
    (tangent to the sphere): ``sign=+1`` pulls the pair together, ``sign=-1`` pushes it apart.
    """
    step = np.zeros_like(matrix)
    pairs = pairs[active]
    if len(pairs) == 0:
        return step
    u, w = matrix[pairs[:, 0]], matrix[pairs[:, 1]]
    cos = np.einsum("ij,ij->i", u, w)[:, None]
    ends = np.concatenate([pairs[:, 0], pairs[:, 1]])
    grads = sign * np.concatenate([w - cos * u, u - cos * w])
    np.add.at(step, ends, grads)
    counts = np.bincount(ends, minlength=len(matrix)).astype(np.float32)
    return step / np.maximum(counts, 1.0)[:, None]


def counter_fit(
    vectors: np.ndarray,
    synonyms: np.ndarray,
    antonyms: np.ndarray,
    vsp: np.ndarray,
    *,
    epochs: int = 20,
    delta: float = DELTA,
    gamma: float = GAMMA,
    weights: tuple[float, float, float] = WEIGHTS,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> np.ndarray:
    """Counter-fit unit-normalised copies of ``vectors`` (Mrkšić et al. 2016, Eq. 1-4; see module doc).

    ``synonyms``, ``antonyms``, ``vsp``: (P, 2) int row-index pairs; the VSP pairs keep their
    original distances (computed here from ``vectors``) as upper bounds.  Returns a new (V, d)
    float32 matrix with unit rows; rows in no pair are returned unchanged (normalised).
    ``progress(epoch, objective_terms)`` is called after each epoch when given.
    """
    matrix = normalise_rows(vectors)
    synonyms, antonyms, vsp = (
        np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in (synonyms, antonyms, vsp)
    )
    vsp_distances = pair_distances(matrix, vsp)
    k1, k2, k3 = weights
    for epoch in range(epochs):
        step = k1 * _mean_pair_step(matrix, antonyms, pair_distances(matrix, antonyms) < delta, -1.0)
        step += k2 * _mean_pair_step(matrix, synonyms, pair_distances(matrix, synonyms) > gamma, 1.0)
        step += k3 * _mean_pair_step(matrix, vsp, pair_distances(matrix, vsp) > vsp_distances, 1.0)
        matrix = normalise_rows(matrix + step)
        if progress is not None:
            terms = objective(
                matrix, synonyms, antonyms, vsp, vsp_distances, delta=delta, gamma=gamma, weights=weights
            )
            progress(epoch + 1, terms)
    return matrix
