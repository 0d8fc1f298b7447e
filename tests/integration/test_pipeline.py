"""The real flows on the tiny config: Prefect runs, MLflow records, files land where DVC expects them."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from robustprune.checkpoints import load_masks, read_json
from tests.conftest import ROOT
from tests.integration.conftest import copy_project

pytestmark = pytest.mark.integration
COMBOS = ["magnitude_0.5", "magnitude_2-4", "sparsegpt_0.5", "sparsegpt_2-4", "rakp_0.5", "rakp_2-4"]


def test_pipeline_produces_every_artifact(pipeline_run):
    from flows.pipeline import STAGES

    root, _, result = pipeline_run
    assert set(result["ran"]) == set(STAGES)
    for f in (
        "summary.md",
        "metrics.json",
        "eval.json",
        "sds.json",
        "attack.json",
        "plots/accuracy_vs_sparsity.png",
        "plots/accuracy_vs_sparsity.csv",
        "plots/attack_vs_sparsity.png",
        "plots/transfer_vs_sparsity.png",
        "plots/fidelity_vs_robustness.png",
    ):
        data = (root / "reports" / f).read_bytes()
        assert data.startswith(b"\x89PNG") if f.endswith(".png") else len(data.strip()) > 0, f
    summary = (root / "reports" / "summary.md").read_text()
    for combo in [*COMBOS, "sds-sparsegpt_0.5"]:
        assert f"| {combo} |" in summary
    assert "## Robustness: accuracy under attack" in summary and "## SDS" in summary
    for split in ("train", "validation", "test"):
        assert (root / "data" / "prepared" / f"{split}.parquet").exists()


def test_finetuned_variants_learn_and_the_robust_soup_follows_its_rule(pipeline_run):
    from robustprune.soup import SoupScore, accepts

    root = pipeline_run[0]
    finetune, soup = read_json(root / "reports" / "finetune.json"), read_json(root / "reports" / "soup.json")
    assert max(m["test_accuracy"] for m in finetune.values()) >= 0.75  # synthetic task is learnable
    assert finetune["c"]["adversarial"]["steps"] == 2 and finetune["c"]["optimizer"] == "adam"
    # c also trains on one perturbed copy of every training text per epoch (FreeLB + augment): 4 epochs
    n_train = len(pd.read_parquet(root / "data" / "prepared" / "train.parquet"))
    aug = finetune["c"]["augment_stats"]
    assert sum(aug["copies"].values()) == 4 * n_train and 0 < aug["changed_word_fraction"] <= 0.5
    assert finetune["c"]["augment"]["copies"] == 1  # the variant's settings, beside the run's statistics
    assert finetune["c"]["steps"] == 4 * math.ceil(2 * n_train / 16)
    assert finetune["a"]["steps"] == 5 * math.ceil(n_train / 16)
    ing = soup["ingredients"]
    assert soup["criterion"] == "robustness" and set(ing) == set(finetune)
    for name, e in ing.items():  # each ingredient attacked on the same seeded validation rows
        assert e["attacked"] == 6 and 0 <= e["robustness"] <= e["accuracy"] + 1e-9
        assert e["accuracy"] == pytest.approx(finetune[name]["validation_accuracy"])
    best = max(e["accuracy"] for e in ing.values())
    drop = soup["max_accuracy_drop"]
    ranking = sorted(
        ing,
        key=lambda n: (ing[n]["accuracy"] < best - drop - 1e-12, -ing[n]["robustness"], -ing[n]["accuracy"]),
    )
    assert soup["ranking"] == ranking and soup["best_ingredient"] == ranking[0]
    history = soup["greedy"]["history"]
    assert [h["candidate"] for h in history] == ranking
    current = SoupScore(history[0]["accuracy"], history[0]["robustness"])
    for h in history[1:]:  # every keep/refuse decision is the documented rule
        trial = SoupScore(h["accuracy"], h["robustness"])
        if h.get("inadmissible"):
            assert not h["kept"] and ing[h["candidate"]]["accuracy"] < best - drop
            continue
        assert h["kept"] == accepts(trial, current, "robustness", drop, best)
        current = trial if h["kept"] else current
    assert soup["greedy"]["members"] == [h["candidate"] for h in history if h["kept"]]


def test_evaluation_transfers_the_dense_models_adversarial_texts(pipeline_run):
    import csv

    root = pipeline_run[0]
    ev = read_json(root / "reports" / "eval.json")
    assert ev["reference"] == "soup-greedy"
    succeeded = 0
    for recipe in ("textfooler", "bert-attack", "textbugger"):
        with (root / "reports" / "attacks" / "soup-greedy" / f"{recipe}.csv").open() as f:
            succeeded += sum(r["outcome"] == "succeeded" for r in csv.DictReader(f))
    assert len(ev["transfer"]) == succeeded
    rows = {r["name"]: r for r in ev["models"]}
    ref = rows["soup-greedy"]
    if succeeded:
        assert ref["transfer"]["all"] == {"correct": 0, "n": succeeded, "bits": "0" * succeeded}
    assert ref["fidelity"]["per_layer"] == pytest.approx([1.0] * len(ref["fidelity"]["per_layer"]), abs=1e-5)
    for r in ev["models"]:
        assert len(r["correct_bits"]) == r["total"] and r["correct_bits"].count("1") == r["correct"]
        if r["kind"] in ("pruned", "sds"):  # post-training pruning leaves the embeddings as they were
            assert r["fidelity"]["per_layer"][0] == pytest.approx(1.0, abs=1e-5), r["name"]
    assert rows["sparsegpt_2-4"]["fidelity"]["last"] < 1 - 1e-4


def test_report_verdicts_follow_their_intervals(pipeline_run):
    root = pipeline_run[0]
    metrics = read_json(root / "reports" / "metrics.json")
    comps = metrics["comparisons"]
    assert {(c["a"], c["b"]) for c in comps} >= {
        ("sparsegpt_0.5", "soup-greedy"),
        ("rakp_0.5", "sparsegpt_0.5"),
        ("sds-sparsegpt_0.5", "sparsegpt_0.5"),
    }
    near = {n for n, m in metrics["models"].items() if m.get("near_constant")}
    assert all("class_balance" in m for m in metrics["models"].values())  # eval.json records predictions
    for c in comps:
        excludes = c["low"] > 0 or c["high"] < 0
        assert c["interval_verdict"] == (
            "better" if c["low"] > 0 else "worse" if excludes else "no measurable difference"
        )
        judged = c["metric"] == "clean" or not ({c["a"], c["b"]} & near)
        assert c["verdict"] == (c["interval_verdict"] if judged else "no verdict (near-constant model)")
        assert c["low"] <= c["diff"] <= c["high"]
    attacked = {f"{a['model']}.{a['recipe']}" for a in read_json(root / "reports" / "attack.json")}
    assert set(metrics["validity"]) == attacked and all(  # issue #28: every success audited
        v["accuracy_under_valid_attack"]["k"] >= v["accuracy_under_attack"]["k"]
        for v in metrics["validity"].values()
    )
    summary = (root / "reports" / "summary.md").read_text()
    assert "## Paired comparisons" in summary and "## Verdicts at a glance" in summary
    for m, v in metrics["models"].items():
        a = v["accuracy"]
        assert a["low"] <= a["value"] <= a["high"], m


def test_pruned_models_load_with_exact_sparsity_and_masks(pipeline_run):
    from transformers import AutoModelForSequenceClassification

    from robustprune.config import load_params
    from robustprune.data import load_splits
    from robustprune.metrics import predict_logits
    from robustprune.modeling import load_tokenizer, prunable_linears

    root = pipeline_run[0]
    max_length = load_params(pipeline_run[1]).data.max_length
    rows = {r["name"]: r for r in read_json(root / "reports" / "eval.json")["models"]}
    for combo in COMBOS:
        d = root / "models" / "pruned" / combo
        model = AutoModelForSequenceClassification.from_pretrained(d)
        masks = load_masks(d / "masks.safetensors")
        linears = prunable_linears(model)
        assert len(masks) == len(linears) == 12
        for name, lin in linears.items():
            key = name.removeprefix("bert.encoder.layer.")
            assert torch.equal(lin.weight != 0, masks[key]), (combo, name)
            if combo.endswith("2-4"):
                assert int((lin.weight != 0).reshape(lin.weight.shape[0], -1, 4).sum(-1).max()) <= 2
        assert rows[combo]["measured_sparsity"] == pytest.approx(0.5, abs=1e-6)
        # the recorded per-example outcomes are the saved model's predictions, recomputed here
        bits = rows[combo]["correct_bits"]
        test = load_splits(root / "data" / "prepared").test
        logits = predict_logits(model, load_tokenizer(d), test["text"].tolist(), max_length=max_length)
        assert bits == "".join("1" if ok else "0" for ok in logits.argmax(-1) == test["label"].to_numpy())
        assert len(bits) == rows[combo]["total"]
        assert rows[combo]["accuracy"] == pytest.approx(bits.count("1") / len(bits))


def test_sds_model_is_reactivated_then_repruned(pipeline_run):
    from transformers import AutoModelForSequenceClassification

    from robustprune.modeling import measured_sparsity

    root = pipeline_run[0]
    sds = read_json(root / "reports" / "sds.json")["sds-sparsegpt_0.5"]
    assert sds["source"] == "sparsegpt_0.5" and 0.0 <= sds["reactivated_accuracy"] <= 1.0
    assert sds["reactivation"]["mean_error_after"] <= sds["reactivation"]["mean_error_before"] + 1e-6
    model = AutoModelForSequenceClassification.from_pretrained(root / "models" / "sds" / "sds-sparsegpt_0.5")
    assert measured_sparsity(model) == pytest.approx(0.5, abs=1e-6)
    first = AutoModelForSequenceClassification.from_pretrained(root / "models" / "pruned" / "sparsegpt_0.5")
    assert any(  # the re-prune is a new solution, not the first pass copied
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), first.state_dict().values(), strict=True)
    )


def test_attack_stage_attacks_each_model_with_each_recipe(pipeline_run):
    import csv

    root = pipeline_run[0]
    rows = read_json(root / "reports" / "attack.json")
    assert {(r["model"], r["recipe"]) for r in rows} == {
        (m, r)
        for m in ("soup-greedy", "sds-sparsegpt_0.5")
        for r in ("textfooler", "bert-attack", "textbugger")
    }
    for r in rows:
        assert r["num_examples"] == 6
        assert r["accuracy_under_attack"] <= r["original_accuracy"] + 1e-9
        assert r["floor_seconds"] > 0 and r["wall_seconds"] >= r["floor_seconds"] * 0.5
        with (root / "reports" / "attacks" / r["model"] / f"{r['recipe']}.csv").open() as f:
            lines = list(csv.DictReader(f))
        assert len(lines) == 6
        assert sum(x["outcome"] == "failed" for x in lines) / 6 == pytest.approx(r["accuracy_under_attack"])
        for x in lines:
            if x["outcome"] == "succeeded":
                assert x["perturbed_text"] != x["original_text"]
                assert x["perturbed_prediction"] != x["label"]


def test_mlflow_parent_run_holds_nested_stage_runs(pipeline_run):
    import mlflow

    root = pipeline_run[0]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["robustprune"], output_format="list")
    parents = [r for r in runs if r.info.run_name == "pipeline"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    from flows.pipeline import STAGES

    assert {r.info.run_name for r in children} == set(STAGES)
    attack = next(r for r in children if r.info.run_name == "attack")
    assert "soup-greedy.textfooler.accuracy_under_attack" in attack.data.metrics
    csvs = {a.path for a in mlflow.MlflowClient().list_artifacts(attack.info.run_id, "attacks/soup-greedy")}
    assert "attacks/soup-greedy/textbugger.csv" in csvs
    prune = next(r for r in children if r.info.run_name == "prune")
    assert prune.data.params["prune.methods"] == "['magnitude', 'sparsegpt', 'rakp']"
    evaluate = next(r for r in children if r.info.run_name == "evaluate")
    assert "sparsegpt_0.5.accuracy" in evaluate.data.metrics
    report = next(r for r in children if r.info.run_name == "report")
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(report.info.run_id, "report")}
    assert "report/summary.md" in arts and "report/accuracy_vs_sparsity.png" in arts


def test_mlflow_nested_runs_sit_in_their_parents_experiment_of_kind_model_training(pipeline_run):
    """Every nested run is in its parent's experiment (the per-combination prune runs were in `Default`), and
    the experiment carries MLflow 3's kind tag for the model-training view (not the GenAI one)."""
    from mlflow.tracking import MlflowClient

    from tasks.common import EXPERIMENT_TAGS
    from tasks.tracking import MODEL_TAG

    root = pipeline_run[0]
    client = MlflowClient(f"sqlite:///{root / 'mlruns.db'}")
    exp = client.get_experiment_by_name("robustprune")
    assert exp.tags["mlflow.experimentKind"] == EXPERIMENT_TAGS["mlflow.experimentKind"]
    assert EXPERIMENT_TAGS == {"mlflow.experimentKind": "custom_model_development"}
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = {r.info.run_id: r for r in client.search_runs(experiments, max_results=5000)}
    nested = [r for r in runs.values() if "mlflow.parentRunId" in r.data.tags]
    assert nested
    for r in nested:
        parent = runs[r.data.tags["mlflow.parentRunId"]]
        assert r.info.experiment_id == parent.info.experiment_id == exp.experiment_id, r.info.run_name
    assert {r.info.experiment_id for r in runs.values()} == {exp.experiment_id}  # nothing in Default
    # the per-(method, sparsity) runs: under prune, one each, with the per-block error curve
    (prune,) = [r for r in nested if r.data.tags.get("stage") == "prune" and r.info.run_name == "prune"]
    combos = {r.info.run_name: r for r in nested if r.data.tags["mlflow.parentRunId"] == prune.info.run_id}
    assert set(combos) == set(COMBOS)
    for name, r in combos.items():
        curve = client.get_metric_history(r.info.run_id, "block_output_error")
        assert [m.step for m in curve] == [0, 1], name  # the tiny BERT's two blocks
        assert r.data.tags[MODEL_TAG] == name  # the report stage's model run is this same run


def test_prune_resumes_after_kill_9_with_identical_masks(pipeline_run, prefect_api_url, tmp_path):
    """kill -9 in the middle of pruning, start again: it resumes and ends with the uninterrupted masks."""
    root, params, _ = pipeline_run
    work = copy_project(
        root, tmp_path / "p", skip=("models/pruned", ".cache/prune-work", "mlruns.db", "mlartifacts")
    )
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": prefect_api_url}
    cmd = [sys.executable, "-m", "flows.prune", "--params", str(params), "--root", str(work)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not list((work / ".cache" / "prune-work").glob("*/*/block_000.json")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_mid_way = not (work / "models" / "pruned" / COMBOS[-1]).exists()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert killed_mid_way
    assert "resuming" in res.stdout + res.stderr
    for combo in COMBOS:
        ref = load_masks(root / "models" / "pruned" / combo / "masks.safetensors")
        got = load_masks(work / "models" / "pruned" / combo / "masks.safetensors")
        assert all(torch.equal(ref[k], got[k]) for k in ref), combo
    leftovers = [p for p in work.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]
    assert not leftovers


def test_second_run_reuses_cached_evaluations(pipeline_run, tmp_path):
    """Evaluate is keyed by model content: a re-run answers from Prefect's cache with the same numbers.

    The copy is evaluated twice: the shared run's persisted results belong to the xdist worker that made it
    (``pipeline_run``), so the first evaluation may or may not be a hit here; the second must be one."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    from flows.evaluate import evaluate_flow

    src = pipeline_run[0]
    before = json.loads((src / "reports" / "eval.json").read_text())["models"]
    root = copy_project(src, tmp_path / "again", skip=("mlruns.db", "mlartifacts"))  # the shared run stays
    evaluate_flow(params_path=str(root / "params.yaml"), root=str(root))
    state = evaluate_flow(params_path=str(root / "params.yaml"), root=str(root), return_state=True)
    rows = state.result()
    assert [r["accuracy"] for r in rows] == [r["accuracy"] for r in before]
    # Prefect 3 runs tasks client-side and reports their states to the server as events, which the server
    # records asynchronously: right after the flow returns (more so on a loaded machine) a task run can still
    # be missing or show its previous state. Poll until every evaluate task has a final state (or 60 s).
    deadline = time.monotonic() + 60
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
        states = {r.name: r.state.name for r in runs if r.name.startswith("evaluate-") and r.state}
        final = all(r.state and r.state.is_final() for r in runs if r.name.startswith("evaluate-"))
        if (len(states) >= len(before) and final) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(states) == len(before) and set(states.values()) == {"Cached"}, states


def test_prefect_yaml_deploys_every_deployment(tmp_path, prefect_api_url):
    """`prefect deploy --all` registers the pipeline (with its schedule) and the GPU stage deployments.

    On the session's Prefect API (the scale-out tests deploy the same file there again, with their own pool
    names and checkouts): one command, no temporary server of its own to start."""
    import contextlib

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        for pool in ("cpu", "gpu"):
            with contextlib.suppress(Exception):  # `cpu` may exist already (tests/integration/test_scaleout*)
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        assert {"cpu", "gpu"} <= {p.name for p in client.read_work_pools()}
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "ph"),
        "PREFECT_API_URL": prefect_api_url,
        "ROBUSTPRUNE_DIR": str(ROOT),
        "ROBUSTPRUNE_GPU_POOL": "gpu",  # prefect.yaml names the GPU pool from it (docs/deployment.md)
    }
    prefect = str(Path(sys.executable).parent / "prefect")
    res = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for name in ("pipeline/pipeline", "finetune/finetune-gpu", "prune/prune-gpu", "evaluate/evaluate-gpu"):
        assert f"Deployment '{name}' successfully created" in out, name
