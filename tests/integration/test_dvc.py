"""DVC on the tiny config: the pipeline records every stage it runs in dvc.lock (the shared tiny run is made in
a git + DVC checkout, as `make run` is), `dvc repro` then has nothing to do, and a sparsity change re-runs
only prune and what depends on it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import copy_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", out))


def test_dvc_repro_skips_and_reruns_downstream_only(pipeline_run, tmp_path: Path, prefect_api_url: str):
    from dvc.utils.serialize import load_yaml  # DVC's YAML 1.2: PyYAML would read an unquoted 2:4 as 124

    src, _, result = pipeline_run
    # the first run: every stage ran and is recorded, with the params it read
    assert set(result["ran"]) == {
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
    assert result["skipped"] == []
    lock = load_yaml(src / "dvc.lock")["stages"]
    assert set(lock) == set(result["ran"])
    assert lock["prune"]["params"]["params.yaml"]["prune"]["sparsities"] == [0.5, "2:4"]
    pruned_out = next(o for o in lock["prune"]["outs"] if o["path"] == "models/pruned")
    assert pruned_out["md5"].endswith(".dir") and pruned_out["nfiles"] > 0
    eval_rows = {r["name"]: r for r in json.loads((src / "reports" / "eval.json").read_text())["models"]}
    summary = (src / "reports" / "summary.md").read_text()
    assert f"{100 * eval_rows['sparsegpt_0.5']['accuracy']:.1f}" in summary

    # a copy of that checkout (the shared run stays as it is); the stages run as DVC commands
    root = copy_project(src, tmp_path / "p", skip=("mlruns.db", "mlartifacts"))
    env = {
        **os.environ,  # PREFECT_HOME: the session's, whose persisted task results the stages may reuse
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(root / "src"),
        "PREFECT_API_URL": prefect_api_url,
    }
    second = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    assert _ran(second) == set(), second
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root, env)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first"], root, env)

    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["prune"]["sparsities"] == [0.5, "2:4"]
    params["prune"]["sparsities"] = [0.5, 0.75]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    assert _ran(third) == {"prune", "sds", "evaluate", "attack", "report"}, third
    pruned = sorted(p.name for p in (root / "models" / "pruned").iterdir())
    combos = sorted(f"{m}_{s}" for m in ("magnitude", "sparsegpt", "rakp") for s in ("0.5", "0.75"))
    assert pruned == combos  # the new combos pruned, the 2:4 ones no longer in params removed

    # dvc reads the metrics the report stage wrote: the pruned models' accuracies are evaluate's
    shown = json.loads(_run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], root, env))
    metrics = shown[""]["data"]["reports/metrics.json"]["data"]
    eval_rows = {r["name"]: r for r in json.loads((root / "reports" / "eval.json").read_text())["models"]}
    pruned = {n: m for n, m in metrics["models"].items() if m["kind"] == "pruned"}
    assert set(pruned) == set(combos)
    for name, m in pruned.items():
        assert m["accuracy"]["value"] == pytest.approx(eval_rows[name]["accuracy"], abs=1e-9)
        assert m["accuracy"]["low"] <= m["accuracy"]["value"] <= m["accuracy"]["high"]
        target = float(name.rsplit("_", 1)[1])
        assert (
            m["measured_sparsity"] == pytest.approx(target, abs=1e-6) == eval_rows[name]["measured_sparsity"]
        )
    diff = json.loads(_run([sys.executable, "-m", "dvc", "params", "diff", "--json"], root, env))
    assert diff["params.yaml"]["prune.sparsities"] == {"old": "[0.5, '2:4']", "new": "[0.5, 0.75]"}
