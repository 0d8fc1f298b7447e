"""Model soups: uniform and greedy weight averaging (Wortsman et al. 2022, Sec. 3, Recipe 1 "greedy soup"),
ranked by accuracy or, as RAKP builds its robust dense start, by robustness (Li et al. 2023, Sec. 4.1).

Greedy: rank the ingredients by the criterion, start from the best, and keep each next one only if the soup
with it does not lower the criterion. With ``criterion = "robustness"`` the criterion is accuracy under
attack on a validation attack set (ties broken by clean validation accuracy), and clean accuracy is guarded:
an ingredient or a soup whose clean validation accuracy is more than ``max_accuracy_drop`` below the best
ingredient's is not admissible (it is never a member). Without that guard a model that has collapsed to one
class ranks first: it cannot be attacked, so its accuracy under attack is its share of that class.
The selection (:func:`greedy_select`) is separate from the averaging (:func:`average_state_dicts`): the caller
decides how a list of members is turned into a model and scored (and can cache that).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from robustprune.stats import rate

StateDict = Mapping[str, torch.Tensor]
CRITERIA = ("accuracy", "robustness")


@dataclass(frozen=True)
class SoupScore:
    """Clean validation accuracy and (criterion = robustness) validation accuracy under attack, measured on
    ``attacked`` validation rows (when known: the robustness then carries its Wilson interval)."""

    accuracy: float
    robustness: float | None = None
    attacked: int | None = None

    def robustness_interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of the robustness (``round(robustness x attacked)`` of ``attacked`` rows)."""
        if self.robustness is None or not self.attacked:
            return None
        r = rate(round(self.robustness * self.attacked), self.attacked)
        return r.low, r.high

    def row(self) -> dict:
        """The score as a history row: its fields, plus ``robustness_low`` / ``robustness_high`` when known."""
        out = asdict(self)
        interval = self.robustness_interval()
        if interval is not None:
            out["robustness_low"], out["robustness_high"] = interval
        return out

    def key(self, criterion: str) -> tuple[float, ...]:
        """Sort key, larger is better: (robustness, accuracy) or (accuracy,)."""
        if criterion == "robustness":
            if self.robustness is None:
                raise ValueError("criterion 'robustness' needs a robustness score for every candidate")
            return (self.robustness, self.accuracy)
        return (self.accuracy,)


@dataclass
class GreedyResult:
    members: list[str]
    score: SoupScore
    ranking: list[str]
    history: list[dict] = field(default_factory=list)


def accepts(
    trial: SoupScore, current: SoupScore, criterion: str, max_accuracy_drop: float, best_accuracy: float = 0.0
) -> bool:
    """The greedy rule: the criterion does not drop (ties keep, as Recipe 1's ">="), and with
    ``robustness`` clean accuracy stays within ``max_accuracy_drop`` of ``best_accuracy`` (the best
    ingredient's clean validation accuracy)."""
    if criterion == "accuracy":
        return trial.accuracy >= current.accuracy
    if criterion == "robustness":
        assert trial.robustness is not None and current.robustness is not None
        return trial.robustness >= current.robustness and admissible(trial, max_accuracy_drop, best_accuracy)
    raise ValueError(f"soup criterion {criterion!r} is not one of {list(CRITERIA)}")


def admissible(score: SoupScore, max_accuracy_drop: float, best_accuracy: float) -> bool:
    """Clean validation accuracy within ``max_accuracy_drop`` of the best ingredient's."""
    return score.accuracy >= best_accuracy - max_accuracy_drop - 1e-12


def greedy_select(
    scores: Mapping[str, SoupScore],
    evaluate: Callable[[Sequence[str]], SoupScore],
    *,
    criterion: str = "accuracy",
    max_accuracy_drop: float = 1.0,
) -> GreedyResult:
    """Greedy soup over ingredients named in ``scores`` (each ingredient's own score).

    ``evaluate(members)`` scores the soup of those members. Ranking is stable: equal keys keep the order of
    ``scores``. Returns the members kept, the final soup's score and one history row per candidate (with the
    robustness's 95% interval when the score knows its row count: :meth:`SoupScore.row`).
    """
    if not scores:
        raise ValueError("a soup needs at least one ingredient")
    best = max(s.accuracy for s in scores.values())
    ranking = sorted(scores, key=lambda n: tuple(-x for x in scores[n].key(criterion)))
    if criterion == "robustness":  # inadmissible ingredients last, never members
        ranking = sorted(ranking, key=lambda n: not admissible(scores[n], max_accuracy_drop, best))
    members = [ranking[0]]
    current = scores[ranking[0]]
    history = [{"candidate": ranking[0], **current.row(), "kept": True, "members": list(members)}]
    for name in ranking[1:]:
        if criterion == "robustness" and not admissible(scores[name], max_accuracy_drop, best):
            history.append({"candidate": name, **scores[name].row(), "kept": False, "members": list(members)})
            history[-1]["inadmissible"] = True
            continue
        trial = evaluate([*members, name])
        kept = accepts(trial, current, criterion, max_accuracy_drop, best)
        if kept:
            members.append(name)
            current = trial
        history.append({"candidate": name, **trial.row(), "kept": kept, "members": list(members)})
    return GreedyResult(members, current, ranking, history)


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
