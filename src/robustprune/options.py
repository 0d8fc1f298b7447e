"""From validated ``params.yaml`` sections to the solvers' option dataclasses (pure; no IO).

The pipeline's tasks and the benchmarks build their :class:`PruneOptions` and :class:`SDSOptions` here,
so a profile means the same run whichever of them executes it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from typing import Any, TypeVar

from pydantic import BaseModel

from robustprune.config import LMConfig, PruneConfig, SdsConfig, parse_sparsity
from robustprune.pruning import Pattern
from robustprune.pruning.layerwise import PruneOptions, RakpOptions
from robustprune.sds import SDSOptions

T = TypeVar("T")


def section_options(
    cls: type[T], section: BaseModel, *, not_options: Collection[str] = (), **values: Any
) -> T:
    """The options dataclass ``cls`` from a validated params section: each of the section's keys (except
    ``not_options``: the keys that choose what runs, not how) is passed as the field of the same name;
    ``values`` set fields as converted (they win over a key of the same name). A key ``cls`` has no field
    for raises ValueError: a setting in params.yaml must reach its solver."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type] - cls is a dataclass
    keys = [k for k in type(section).model_fields if k not in not_options]
    if stray := [k for k in keys if k not in names]:
        raise ValueError(f"{type(section).__name__} keys {stray} are no field of {cls.__name__}")
    return cls(**{**{k: getattr(section, k) for k in keys}, **values})


def prune_options(cfg: PruneConfig | LMConfig, method: str, sparsity: str) -> PruneOptions:
    """Options for one ``method`` x ``sparsity`` (``"0.5"``, ``"2:4"``) from the ``prune`` or ``lm`` section.

    Both sections carry the same solver fields; only ``prune`` restricts the pruned Linears (``modules``).
    """
    s, n, m = parse_sparsity(sparsity)
    rk = cfg.rakp
    return PruneOptions(
        method=method,
        pattern=Pattern(sparsity=s, n=n, m=m),
        block_size=cfg.block_size,
        dampening=cfg.dampening,
        modules=cfg.modules if isinstance(cfg, PruneConfig) else None,
        track_dense=cfg.track_dense,
        rakp=section_options(
            RakpOptions,
            rk,
            alpha=rk.alpha if isinstance(rk.alpha, float) else None,
            alpha_depth=tuple(rk.alpha_depth) if rk.alpha == "depth" else None,
            alpha_grid=tuple(rk.alpha_grid),
        ),
    )


def sds_options(cfg: SdsConfig) -> SDSOptions:
    """SDS's reactivation / adjustment options from an ``sds`` section (``sds:`` or ``lm.sds:``)."""
    return section_options(SDSOptions, cfg, not_options=("methods", "sparsities"))


def alpha_spec(text: str) -> dict[str, object]:
    """RAKP's α as the benchmarks take it on the command line, as :class:`RakpOptions` fields.

    ``"0.25"`` (fixed), ``"adaptive"`` / ``"adaptive-block"`` / ``"adaptive-model"`` / ``"adaptive-output"``
    (held-out choice per block, judged at the block's output, the last block's, or by the KL divergence of the
    model's output distribution) or ``"depth:A-B"`` (linear depth schedule from
    A at the first block to B at the last). Raises ValueError naming the accepted forms.
    """
    rules = {
        "adaptive": "block",
        "adaptive-block": "block",
        "adaptive-model": "model",
        "adaptive-output": "output",
    }
    if text in rules:
        return {"alpha": None, "alpha_depth": None, "alpha_criterion": rules[text]}
    try:
        if text.startswith("depth:"):
            first, last = (float(v) for v in text[len("depth:") :].split("-"))
            if not (0 <= first <= 1 and 0 <= last <= 1):
                raise ValueError
            return {"alpha": None, "alpha_depth": (first, last), "alpha_criterion": "block"}
        value = float(text)
        if not 0 <= value <= 1:
            raise ValueError
        return {"alpha": value, "alpha_depth": None, "alpha_criterion": "block"}
    except ValueError:
        raise ValueError(
            f"alpha {text!r}: expected a number in [0, 1], one of {sorted(rules)}, or 'depth:A-B' with A, B in [0, 1]"
        ) from None
