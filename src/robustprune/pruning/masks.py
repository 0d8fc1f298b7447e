"""Sparsity patterns and the mask selectors shared by every pruning method.

A mask is a bool tensor shaped like the weight, ``True`` = KEEP. Every selector here is exact and
deterministic: it prunes precisely the requested number of entries and breaks ties between equal scores
by index (as a stable sort would: among equal scores the lower flat index is pruned first), so two
calls on the same scores always return the same mask, on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_ALLOWED = (
    "a sparsity in [0, 1) such as 0.5 or '0.5', or an N:M pattern such as '2:4' or '4:8' with 1 <= N < M"
)


@dataclass(frozen=True)
class Pattern:
    """A sparsity target.

    ``sparsity`` is the fraction of weights pruned, in [0, 1). For a semi-structured N:M pattern (at most
    ``n`` nonzeros in every group of ``m`` consecutive input columns of a row; 2:4 is 50 %) ``sparsity``
    is ``1 - n/m`` and both ``n`` and ``m`` are set.
    """

    sparsity: float
    n: int | None = None
    m: int | None = None

    def __post_init__(self) -> None:
        if (self.n is None) != (self.m is None):
            raise ValueError(
                f"invalid sparsity pattern {self!r}: set both n and m or neither; allowed: {_ALLOWED}"
            )
        if self.n is not None and self.m is not None:
            if not (1 <= self.n < self.m):
                raise ValueError(
                    f"invalid N:M pattern {self.n}:{self.m}: need 1 <= N < M; allowed: {_ALLOWED}"
                )
            if not math.isclose(self.sparsity, 1.0 - self.n / self.m, rel_tol=0.0, abs_tol=1e-9):
                raise ValueError(
                    f"invalid sparsity pattern {self!r}: an N:M pattern has sparsity 1 - n/m = "
                    f"{1.0 - self.n / self.m:g}, got {self.sparsity!r}"
                )
        if not (0.0 <= self.sparsity < 1.0):
            raise ValueError(f"invalid sparsity {self.sparsity!r}: must be in [0, 1); allowed: {_ALLOWED}")

    @property
    def is_nm(self) -> bool:
        """True for a semi-structured N:M pattern."""
        return self.n is not None

    def __str__(self) -> str:
        """``"0.5"`` for unstructured sparsity, ``"2:4"`` for N:M."""
        if self.is_nm:
            return f"{self.n}:{self.m}"
        return f"{self.sparsity:g}"


def parse_pattern(value: float | str | Pattern) -> Pattern:
    """Parse ``0.5``, ``"0.5"``, ``"2:4"`` or ``"4:8"`` into a :class:`Pattern`.

    Raises ``ValueError`` naming the value and what is allowed for a sparsity outside [0, 1), an N:M with
    ``n >= m`` or ``n < 1``, or anything unparseable.
    """
    if isinstance(value, Pattern):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"invalid sparsity pattern {value!r}: allowed: {_ALLOWED}")
    if isinstance(value, str):
        text = value.strip()
        if ":" in text:
            parts = text.split(":")
            try:
                if len(parts) != 2:
                    raise ValueError
                n, m = int(parts[0]), int(parts[1])
            except ValueError:
                raise ValueError(f"invalid sparsity pattern {value!r}: allowed: {_ALLOWED}") from None
            if not (1 <= n < m):
                raise ValueError(f"invalid sparsity pattern {value!r}: need 1 <= N < M; allowed: {_ALLOWED}")
            return Pattern(sparsity=1.0 - n / m, n=n, m=m)
        try:
            sparsity = float(text)
        except ValueError:
            raise ValueError(f"invalid sparsity pattern {value!r}: allowed: {_ALLOWED}") from None
    else:
        sparsity = float(value)
    if not (0.0 <= sparsity < 1.0):
        raise ValueError(
            f"invalid sparsity pattern {value!r}: sparsity must be in [0, 1); allowed: {_ALLOWED}"
        )
    return Pattern(sparsity=sparsity)


def num_to_prune(numel: int, sparsity: float) -> int:
    """Number of entries to prune out of ``numel``: Python ``round(sparsity * numel)``.

    Python's ``round`` rounds exact halves to the even integer (``round(2.5) == 2``); the result is
    clamped to ``[0, numel]``. Every method uses this one function, so "exact sparsity" means exactly
    this count.
    """
    if numel < 0:
        raise ValueError(f"numel must be >= 0, got {numel}")
    return min(max(round(sparsity * numel), 0), numel)


def topk_prune_mask(scores: Tensor, num_prune: int) -> Tensor:
    """Keep-mask pruning the ``num_prune`` lowest ``scores`` over ALL entries (ties: lower index first).

    Selection in O(numel) without a full sort: the ``num_prune``-th smallest score is the threshold;
    everything below it is pruned, and of the entries equal to it the first ones in flat index order
    fill the remaining count. NaN scores count as +inf (pruned last). Same mask as a stable argsort.
    """
    numel = scores.numel()
    if not (0 <= num_prune <= numel):
        raise ValueError(
            f"num_prune must be in [0, {numel}] for scores of shape {tuple(scores.shape)}, got {num_prune}"
        )
    if num_prune == 0:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    flat = scores.reshape(-1)
    if flat.is_floating_point():
        flat = torch.nan_to_num(flat, nan=float("inf"))
    thresh = torch.kthvalue(flat, num_prune).values
    below = flat < thresh
    at = flat == thresh
    prune = below | (at & (torch.cumsum(at, 0) <= num_prune - below.sum()))
    return (~prune).view(scores.shape)


def split_prune_counts(sizes: Sequence[int], sparsity: float) -> list[int]:
    """Split the prune count of ``sum(sizes)`` entries over consecutive parts of the given sizes.

    Cumulative rounding: part ``p`` covering flat offsets ``[a, b)`` gets
    ``num_to_prune(b, s) - num_to_prune(a, s)``. The counts sum to exactly
    ``num_to_prune(sum(sizes), s)`` (the sum telescopes), each is within one of ``s · size`` and never
    exceeds ``size``, and which parts receive the rounding remainder is a deterministic function of the
    sizes alone (spread evenly along the parts, not piled onto the first or last one).
    """
    counts: list[int] = []
    start = 0
    for size in sizes:
        if size < 0:
            raise ValueError(f"part sizes must be >= 0, got {size}")
        end = start + size
        counts.append(min(num_to_prune(end, sparsity) - num_to_prune(start, sparsity), size))
        start = end
    return counts


def rowwise_prune_mask(scores: Tensor, sparsity: float, *, exact_total: bool = False) -> Tensor:
    """Keep-mask pruning the lowest scores within every row (last dim), ties by index.

    By default exactly ``num_to_prune(cols, sparsity)`` entries per row are pruned. With
    ``exact_total=True`` the per-row counts come from :func:`split_prune_counts`, so that exactly
    ``num_to_prune(scores.numel(), sparsity)`` entries are pruned in total (rows differ by at most one).
    """
    if scores.dim() < 1:
        raise ValueError(f"scores must have at least one dimension, got shape {tuple(scores.shape)}")
    cols = scores.shape[-1]
    rows2d = scores.reshape(-1, cols)
    if exact_total:
        counts = split_prune_counts([cols] * rows2d.shape[0], sparsity)
    else:
        counts = [num_to_prune(cols, sparsity)] * rows2d.shape[0]
    keep = torch.ones_like(rows2d, dtype=torch.bool)
    if not any(counts):
        return keep.view(scores.shape)
    # Selection per row in O(cols) (kthvalue) instead of a stable argsort: the k-th smallest score is the
    # row's threshold, entries below it are pruned and ties at it are filled in column order, which is
    # the mask a stable argsort gives. The counts take at most two values (floor/ceil), one pass each.
    vals = torch.nan_to_num(rows2d, nan=float("inf")) if rows2d.is_floating_point() else rows2d
    k_all = torch.tensor(counts, dtype=torch.long, device=scores.device)
    for k in sorted(set(counts) - {0}):
        rows = (k_all == k).nonzero().squeeze(1)
        sub = vals.index_select(0, rows)
        thresh = torch.kthvalue(sub, k, dim=1, keepdim=True).values
        below = sub < thresh
        at = sub == thresh
        room = k - below.sum(dim=1, keepdim=True)
        keep[rows] = ~(below | (at & (torch.cumsum(at, dim=1) <= room)))
    return keep.view(scores.shape)


def nm_prune_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Keep-mask keeping the ``n`` highest scores in each group of ``m`` consecutive columns of every row.

    Ties are broken by index (the lower column in a group is pruned first). Raises ``ValueError`` if the
    number of columns is not a multiple of ``m``.
    """
    if not (1 <= n < m):
        raise ValueError(f"invalid N:M pattern {n}:{m}: need 1 <= N < M")
    if scores.dim() < 1 or scores.shape[-1] % m != 0:
        raise ValueError(
            f"N:M pruning with M={m} needs the number of columns to be a multiple of {m}; "
            f"got scores of shape {tuple(scores.shape)}"
        )
    cols = scores.shape[-1]
    groups = scores.reshape(-1, cols // m, m)
    keep = torch.ones_like(groups, dtype=torch.bool)
    order = torch.argsort(groups, dim=-1, stable=True)
    keep.scatter_(-1, order[..., : m - n], False)
    return keep.view(scores.shape)
