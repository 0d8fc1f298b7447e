"""flows.cap end to end on a tiny project: models, report, a rerun that is a cache hit, kill -9 and resume."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from robustprune.checkpoints import read_json
from tests.conftest import ROOT
from tests.integration.conftest import copy_project

pytestmark = pytest.mark.integration

MAIN = ["cap_0.5", "cap_0.75", "cap_0.875", "cap_0.9"]
NOCL = ["cap-nocl_0.5", "cap-nocl_0.75", "cap-nocl_0.875", "cap-nocl_0.9"]


def _digests(root: Path) -> dict[str, str]:
    return {
        d.name: hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
        for d in sorted((root / "models" / "cap").iterdir())
        if d.is_dir()
    }


@pytest.fixture(scope="module")
def cap_run(pipeline_run):
    """The cap stage of the shared tiny run (tests/conftest.py's tiny project: a small CAP schedule, CAP-f
    at 25% then 50%): its project root, params and report."""
    root, params, _ = pipeline_run
    return root, params, read_json(root / "reports" / "cap.json")


def test_cap_flow_produces_models_and_report(cap_run):
    from transformers import AutoModelForSequenceClassification

    from robustprune.cap.structured import encoder_parameters
    from robustprune.modeling import is_structured, load_structured, measured_sparsity, prunable_linears

    root, _, report = cap_run
    cap_dir = root / "models" / "cap"
    assert read_json(cap_dir / "index.json") == sorted([*MAIN, *NOCL, "cap-f_0.5"])
    for name, target in zip(MAIN + NOCL, [0.5, 0.75, 0.875, 0.9] * 2, strict=True):
        model = AutoModelForSequenceClassification.from_pretrained(cap_dir / name)
        for lin in prunable_linears(model).values():  # exact int(keep * numel) per matrix
            assert int((lin.weight != 0).sum()) <= int((1 - target) * lin.weight.numel())
        assert measured_sparsity(model) >= target
        metrics = read_json(cap_dir / name / "metrics.json")
        assert metrics["test_accuracy"] == sum(metrics["test_correct"]) / 40
    # the main run has contrastive terms (SnC from the second stage on); the ablation has none
    parts = [read_json(cap_dir / n / "metrics.json")["loss_parts"] for n in MAIN]
    assert "prc_sup" in parts[0] and "fic_unsup" in parts[0] and "snc_sup" not in parts[0]
    assert all("snc_sup" in p for p in parts[1:])
    assert not any(
        k.startswith(("prc", "fic", "snc"))
        for n in NOCL
        for k in read_json(cap_dir / n / "metrics.json")["loss_parts"]
    )
    # the contrastive ablation: one paired difference per sparsity, consistent with the two accuracies
    assert [d["sparsity"] for d in report["ablation"]] == [0.5, 0.75, 0.875, 0.9]
    for d, a, b in zip(report["ablation"], report["runs"]["cap"], report["runs"]["cap-nocl"], strict=True):
        assert d["diff"] == pytest.approx(a["accuracy"]["value"] - b["accuracy"]["value"])
        assert d["low"] <= d["diff"] <= d["high"]
    # CAP-f: smaller, reloads only through load_structured, latency measured against the dense soup
    f = cap_dir / "cap-f_0.5"
    assert is_structured(f)
    small = load_structured(f)
    dense = AutoModelForSequenceClassification.from_pretrained(root / "models" / "soup" / "greedy")
    st = report["structured"]["final"]
    assert st["heads_removed"] == 4 and st["neurons_removed"] == 40  # half of 2 x 4 heads, 2 x 40 neurons
    assert encoder_parameters(small) == st["encoder_parameters"] < encoder_parameters(dense)
    ids = torch.randint(5, 99, (2, 7))
    with torch.no_grad():
        assert small(input_ids=ids).logits.shape == (2, 2)
    for row in report["structured"]["latency"]["batches"].values():
        assert row["dense_ms"] > 0 and row["cap_f_ms"] > 0
    assert set(report["training_seconds"]) == {*MAIN, *NOCL, "cap-f_0.5"}


def test_cap_rerun_is_a_cache_hit(cap_run, tmp_path):
    from flows.cap import cap_flow

    src, _, report = cap_run
    root = copy_project(src, tmp_path / "again", skip=("mlruns.db", "mlartifacts"))  # the shared run stays
    before = _digests(root)
    assert before == _digests(src)
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "models" / "cap").rglob("model.safetensors")}
    again = cap_flow(params_path=str(root / "params.yaml"), root=str(root))
    # what the flow returns is the report it wrote, and the rerun's is the first run's
    assert again == report == read_json(root / "reports" / "cap.json") and _digests(root) == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing was retrained or re-exported


def test_cap_killed_after_stage_two_resumes_to_identical_weights(cap_run, tmp_path, prefect_api_url):
    from flows.cap import cap_flow

    root, params, _ = cap_run
    fresh = copy_project(root, tmp_path / "resume", skip=("models/cap", "reports", ".cache", "mlruns.db"))
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "flows.cap", "--params", str(params), "--root", str(fresh)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = fresh / ".cache" / "cap-work" / "cap"
    deadline = time.time() + 120
    while not list(work.glob("1-*/metrics.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in work.glob("*/metrics.json")}
    assert len(finished) >= 2, "stage 2 never finished"
    assert not (fresh / "reports" / "cap.json").exists(), "the run finished before it was killed"
    cap_flow(params_path=str(params), root=str(fresh))
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished stages were not redone
    assert _digests(fresh) == _digests(root)


FAITHFUL = """
cap:
  start: pretrained
  path: staged
  snapshots: epoch
  length_unit: epochs
  criterion: movement
  representation: cls
  sparsities: [0.5, 0.75]
  train_examples: 96
  batch_size: 16
  warmup_steps: 1
  ramp_steps: 1
  hold_steps: 1
  lr: 3.0e-3
  extra_negatives: 24
  ablations: []
  structured: {sparsities: []}
"""


def test_cap_as_the_reference_runs_it(cap_run, tmp_path):
    """start: pretrained, CAP-m, cls, epoch SnC in train mode, lengths in epochs (the student's start itself:
    tests/unit/test_cap_tasks.py): SnC snapshots are taken every epoch after the first (warm-up included) and
    carried into the next stage, and the report says what ran."""
    import yaml

    from flows.cap import cap_flow
    from robustprune.cap.report import cap_markdown

    src, _, _ = cap_run  # the shared tiny run's prepared data, pre-trained encoder and soup
    root = copy_project(src, tmp_path / "faithful", skip=("models/cap", "reports", ".cache", "mlruns.db"))
    params = root / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["cap"] = {**raw["cap"], **yaml.safe_load(FAITHFUL)["cap"]}
    params.write_text(yaml.safe_dump(raw))
    report = cap_flow(params_path=str(params), root=str(root))
    # 96 examples / 16 = 6 steps an epoch; stage 1: 1 dense + 1 ramp + 1 hold epochs, stage 2: 1 + 1
    assert [r["steps"] for r in report["schedule"]] == [18, 12]
    m = [read_json(root / "models" / "cap" / n / "metrics.json") for n in ("cap_0.5", "cap_0.75")]
    assert [x["epoch_snapshots"] for x in m] == [2, 2]  # global steps 6, 12 | 18, 24
    assert "snc_sup" in m[0]["loss_parts"] and "snc_sup" in m[1]["loss_parts"]
    assert m[0]["snapshot"] and not m[1]["snapshot"]  # the last stage's snapshots are not needed later
    md = cap_markdown(report)
    assert "CAP-m" in md and "pre-trained encoder with a fresh seeded head" in md and "not CAP-m" not in md
    assert "one snapshot at the start of every epoch after the first, train mode" in md
