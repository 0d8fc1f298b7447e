"""Model soups: uniform and greedy weight averaging (Wortsman et al. 2022, Sec. 3, Recipe 1 "greedy soup").

RAKP builds its robust dense starting point this way (Li et al. 2023, Sec. 4.1): average only the
fine-tuned variants that help. Greedy: sort the ingredients by validation accuracy, start from the best,
and keep each next one only if the average with it does not lower validation accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

StateDict = Mapping[str, torch.Tensor]


@dataclass
class SoupResult:
    state_dict: dict[str, torch.Tensor]
    members: list[str]
    validation_accuracy: float
    history: list[dict] = field(default_factory=list)


def average_state_dicts(state_dicts: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors; other tensors (integer buffers) are taken from the first."""
    if not state_dicts:
        raise ValueError("cannot average zero state dicts")
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], start=1):
        if list(sd) != keys:
            missing = sorted(set(keys) ^ set(sd))[:5]
            raise ValueError(
                f"state dict {i} has different keys from the first (e.g. {missing}): not the same architecture"
            )
    out = {}
    for k in keys:
        first = state_dicts[0][k]
        if first.is_floating_point():
            acc = torch.zeros_like(first, dtype=torch.float64)
            for sd in state_dicts:
                acc += sd[k].to(torch.float64)
            out[k] = (acc / len(state_dicts)).to(first.dtype)
        else:
            out[k] = first.clone()
    return out


def greedy_soup(
    ingredients: Sequence[tuple[str, StateDict, float]],
    evaluate: Callable[[StateDict], float],
) -> SoupResult:
    """Greedy soup over (name, state_dict, validation accuracy) ingredients.

    ``evaluate`` returns the validation accuracy of a state dict. Ties keep the ingredient
    (">= current"), as in the paper's Recipe 1.
    """
    ranked = sorted(ingredients, key=lambda x: -x[2])
    name, sd, acc = ranked[0]
    members, chosen, best = [name], [sd], acc
    history = [{"candidate": name, "accuracy": acc, "kept": True}]
    for name, sd, _ in ranked[1:]:
        trial = average_state_dicts([*chosen, sd])
        trial_acc = evaluate(trial)
        kept = trial_acc >= best
        history.append({"candidate": name, "accuracy": trial_acc, "kept": kept})
        if kept:
            members.append(name)
            chosen.append(sd)
            best = trial_acc
    return SoupResult(average_state_dicts(chosen), members, best, history)
