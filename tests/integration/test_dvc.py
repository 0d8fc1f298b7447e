"""`dvc repro` on the tiny config: every stage runs once, a second repro skips all, a sparsity change
re-runs only prune and what depends on it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustprune.config import load_params, parse_params
from tests.conftest import ROOT, write_tiny_project


def load_params_dict(raw: dict) -> dict:
    """Validate and fill every default back in (DVC needs every key a stage lists)."""
    return parse_params(raw).model_dump(mode="json")


pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", out))


def test_dvc_repro_skips_and_reruns_downstream_only(tmp_path: Path, prefect_api_url: str):
    for d in ("src", "flows", "tasks"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    write_tiny_project(tmp_path)
    # DVC reads the keys each stage lists in dvc.yaml, so params.yaml must spell them all out (as the
    # repository's does): write the validated params with every default filled in.
    params = load_params(tmp_path / "params.yaml").model_dump(mode="json")
    params["prune"] = {"methods": ["magnitude", "sparsegpt"], "sparsities": [0.5], "block_size": 16}
    params["sds"] = {"methods": [], "sparsities": []}
    params["attack"] = {
        "models": ["soup-greedy"],
        "recipes": ["textbugger"],
        "num_examples": 4,
        "shard_size": 4,
        "resources": {"vocab_size": 2000, "counterfit_epochs": 1, "mlm_steps": 2, "mlm_batch_size": 4},
    }
    params = load_params_dict(params)
    params["finetune"]["variants"] = params["finetune"]["variants"][:1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PREFECT_HOME": str(tmp_path / ".prefect"),
        "PYTHONPATH": str(tmp_path / "src"),
        "PREFECT_API_URL": prefect_api_url,
    }
    _run(["git", "init", "-q"], tmp_path, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], tmp_path, env)

    first = _run([sys.executable, "-m", "dvc", "repro"], tmp_path, env)
    assert _ran(first) == {
        "prepare",
        "finetune",
        "soup",
        "calibrate",
        "prune",
        "sds",
        "cap",
        "evaluate",
        "attack_resources",
        "attack",
        "report",
    }
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    assert set(lock) == _ran(first)  # every stage that ran is recorded, with the params it read
    assert lock["prune"]["params"]["params.yaml"]["prune"]["sparsities"] == [0.5]
    pruned_out = next(o for o in lock["prune"]["outs"] if o["path"] == "models/pruned")
    assert pruned_out["md5"].endswith(".dir") and pruned_out["nfiles"] > 0
    eval_rows = {r["name"]: r for r in json.loads((tmp_path / "reports" / "eval.json").read_text())["models"]}
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert f"{100 * eval_rows['sparsegpt_0.5']['accuracy']:.1f}" in summary

    second = _run([sys.executable, "-m", "dvc", "repro"], tmp_path, env)
    assert _ran(second) == set(), second
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], tmp_path, env)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first"], tmp_path, env)

    params["prune"]["sparsities"] = ["2:4"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    third = _run([sys.executable, "-m", "dvc", "repro"], tmp_path, env)
    assert _ran(third) == {"prune", "sds", "evaluate", "attack", "report"}, third
    pruned = sorted(p.name for p in (tmp_path / "models" / "pruned").iterdir())
    assert pruned == ["magnitude_2-4", "sparsegpt_2-4"]  # combos no longer in params are removed

    # dvc reads the metrics the report stage wrote: the pruned models' accuracies are evaluate's
    shown = json.loads(_run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], tmp_path, env))
    metrics = shown[""]["data"]["reports/metrics.json"]["data"]
    eval_rows = {r["name"]: r for r in json.loads((tmp_path / "reports" / "eval.json").read_text())["models"]}
    pruned = {n: m for n, m in metrics["models"].items() if m["kind"] == "pruned"}
    assert set(pruned) == {"magnitude_2-4", "sparsegpt_2-4"}
    for name, m in pruned.items():
        assert m["accuracy"]["value"] == pytest.approx(eval_rows[name]["accuracy"], abs=1e-9)
        assert m["accuracy"]["low"] <= m["accuracy"]["value"] <= m["accuracy"]["high"]
        assert m["measured_sparsity"] == pytest.approx(0.5, abs=1e-6) == eval_rows[name]["measured_sparsity"]
    diff = json.loads(_run([sys.executable, "-m", "dvc", "params", "diff", "--json"], tmp_path, env))
    assert diff["params.yaml"]["prune.sparsities"] == {"old": "[0.5]", "new": "['2:4']"}  # dvc's rendering
