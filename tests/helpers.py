"""Small helpers more than one test module (or a benchmark) shares; fixtures stay in the conftest files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def magnitude_prune_rows(model: torch.nn.Module, sparsity: str) -> torch.nn.Module:
    """Every block Linear of ``model`` pruned in place by |w| within each row (unstructured, an exact count
    per row) or within each group of 4 (``"2:4"``); returns ``model``."""
    from robustprune.modeling import prunable_linears

    for lin in prunable_linears(model).values():
        w = lin.weight.data
        if sparsity == "2:4":
            groups = w.view(w.shape[0], -1, 4)
            groups.scatter_(2, groups.abs().argsort(dim=2)[:, :, :2], 0.0)
        else:
            w.scatter_(1, w.abs().argsort(dim=1)[:, : int(w.shape[1] * float(sparsity))], 0.0)
    return model


def wheel_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``tmp_path/wheels`` that :mod:`robustprune.resources` reads its wheels and sdists from."""
    from robustprune import resources

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv(resources.WHEELS_ENV, str(wheels))
    return wheels
