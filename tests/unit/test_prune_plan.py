"""The prune stage's plan (tasks.prune.plan_branch): params are read once, into what every task of a branch
takes, and the branch's content key (robustprune.pruning.branch.branch_key) names everything it hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from robustprune.checkpoints import save_tensors
from robustprune.config import load_params
from robustprune.options import prune_options
from robustprune.pruning.branch import branch_key
from robustprune.sources import source_model
from tasks.common import Layout, combo_name
from tasks.prune import plan_branch
from tests.unit.test_sequential import TWO_FOUR, _opts

ROOT = Path(__file__).resolve().parents[2]


def test_branch_key_hashes_each_of_its_inputs():
    opts = _opts("sparsegpt", TWO_FOUR)
    args = ("m" * 16, "c" * 16, opts, 8, "k" * 16)
    key = branch_key(*args)
    assert key == branch_key(*args) and len(key) == 16 and int(key, 16) >= 0
    # the layout keys were made with before it moved into the library: a work dir keeps its name
    src = {"model": args[0], "calib": args[1], "opts": repr(opts), "batch": 8, "code": args[4]}
    assert key == hashlib.sha256(json.dumps(src, sort_keys=True).encode()).hexdigest()[:16]
    others = [
        ("n" * 16, *args[1:]),
        (args[0], "d" * 16, *args[2:]),
        (*args[:2], _opts("sparsegpt", TWO_FOUR, track_dense=False), *args[3:]),
        (*args[:3], 16, args[4]),
        (*args[:4], "l" * 16),
    ]
    assert len({key, *(branch_key(*o) for o in others)}) == 1 + len(others)


def test_plan_branch_resolves_params_into_the_plan(tmp_path):
    params = load_params(ROOT / "params.yaml")
    layout = Layout(tmp_path)
    source = source_model(params, layout)
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    calib = layout.calibration / "calibration.safetensors"
    save_tensors(calib, {"input_ids": torch.arange(12).reshape(3, 4)})
    method, sparsity = params.prune.combos[0]
    plan = plan_branch(params, layout, method, sparsity)
    assert plan == plan_branch(params, layout, method, sparsity)
    assert (plan.method, plan.sparsity, plan.combo) == (method, sparsity, combo_name(method, sparsity))
    assert plan.source == source and plan.calibration == calib and plan.device == params.runtime.device
    assert plan.opts == prune_options(params.prune, method, sparsity)
    assert (plan.batch_size, plan.modules) == (params.calibrate.batch_size, params.prune.modules)
    assert plan.work == layout.prune_work / plan.combo / plan.key
    assert plan.output == layout.pruned_model(method, sparsity)
    # the key follows the calibration data and its batching, the source weights and the options
    keys = {plan.key}
    save_tensors(calib, {"input_ids": torch.arange(12).reshape(4, 3)})
    keys.add(plan_branch(params, layout, method, sparsity).key)
    other = params.model_copy(update={"calibrate": params.calibrate.model_copy(update={"batch_size": 3})})
    keys.add(plan_branch(other, layout, method, sparsity).key)
    (source / "config.json").write_text('{"hidden_size": 8}')
    keys.add(plan_branch(params, layout, method, sparsity).key)
    keys.add(plan_branch(params, layout, *params.prune.combos[1]).key)
    assert len(keys) == 5
    assert dataclasses.replace(plan, key="x") != plan  # frozen and compared by value
