"""Two identical runs write identical files: checkpoints byte for byte (safetensors metadata sorted, no
timestamps inside), JSON reports equal once their timings are dropped."""

from __future__ import annotations

import importlib

import pytest

from tests.reliability.conftest import OUTPUTS, copy_for, output_differences

pytestmark = pytest.mark.reliability


def test_second_run_writes_the_same_bytes(finished, tmp_path):
    work = copy_for(finished, "prune", tmp_path / "again")  # without pruned and SDS models or their caches
    for stage in ("prune", "sds"):
        flow = getattr(importlib.import_module(f"flows.{stage}"), f"{stage}_flow")
        flow(params_path=str(work / "params.yaml"), root=str(work))
    assert output_differences(finished.root, work, OUTPUTS["prune"] + OUTPUTS["sds"]) == []
    masks = sorted((work / "models" / "pruned").glob("*/masks.safetensors"))
    assert masks and all(m.read_bytes() == (finished.root / m.relative_to(work)).read_bytes() for m in masks)
