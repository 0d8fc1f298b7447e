"""`robustprune prune` / `robustprune attack` on a classifier fine-tuned outside the pipeline (issue #25).

A tiny BERT classifier is trained here with plain transformers and saved with ``save_pretrained`` (generic
``LABEL_0/1`` names); ``robustprune prune`` prunes it with RAKP at 87.5% (shipped as safetensors) and at 2:4
(shipped in compressed-tensors' sparse-24-bitmask format) through the pipeline's flows on the tiny project's
data. The shipped directory is reloaded in a fresh process, as a user would. ``robustprune attack`` on the
greedy soup the tiny pipeline built gives the same per-example outcomes as the pipeline's attack stage.

The work directories start with the tiny project's attack resources (and their key record), so that the
attack_resources stage of each run is a cache hit rather than a rebuild of the same bundle.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robustprune.checkpoints import load_masks, read_json
from tests.conftest import ROOT, synthetic_reviews, tiny_bert, tiny_tokenizer

pytestmark = pytest.mark.integration

# a user's fresh process: transformers loads each shipped directory; the logits of the test texts, batched as the
# pipeline's evaluation batches them (robustprune.fidelity.forward_with_representations)
RELOAD = """
import json, sys
import numpy as np, pandas as pd, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from robustprune.fidelity import forward_with_representations
info = {}
for out, test, max_length, batch_size, dest in json.loads(sys.argv[1]):
    model = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    texts = pd.read_parquet(test)["text"].tolist()
    logits, _ = forward_with_representations(model, tok, texts, batch_size=batch_size, max_length=max_length)
    np.save(dest, logits)
    info[out] = {str(k): v for k, v in model.config.id2label.items()}
print(json.dumps(info))
"""


@pytest.fixture(scope="module")
def own_classifier(tmp_path_factory) -> Path:
    """Fine-tuned with plain transformers, outside the pipeline, saved with save_pretrained."""
    d = tmp_path_factory.mktemp("elsewhere") / "my-classifier"
    tok = tiny_tokenizer(d)
    model = tiny_bert(seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = synthetic_reviews(240, seed=1)
    torch.manual_seed(0)
    model.train()
    for step in range(40):
        batch = [rows[(step * 16 + i) % len(rows)] for i in range(16)]
        enc = tok([t for t, _ in batch], padding=True, return_tensors="pt")
        model(**enc, labels=torch.tensor([y for _, y in batch])).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval().save_pretrained(d)
    tok.save_pretrained(d)
    assert "id2label" not in json.loads((d / "config.json").read_text())  # transformers' LABEL_0, LABEL_1
    return d


def workdir(pipeline_root: Path, dest: Path) -> Path:
    shutil.copytree(pipeline_root / "models" / "attack", dest / "models" / "attack")
    (dest / ".cache").mkdir(parents=True)
    shutil.copy2(
        pipeline_root / ".cache" / "attack-resources.json", dest / ".cache" / "attack-resources.json"
    )
    return dest


@pytest.fixture(scope="module")
def pruned_runs(pipeline_run, own_classifier, tmp_path_factory, prefect_api_url):
    """`robustprune prune` at 87.5% (attacked, safetensors) and at 2:4 (not attacked, compressed-tensors)."""
    from flows.cli import main

    root, params, _ = pipeline_run
    base = tmp_path_factory.mktemp("cli")
    cwd = Path.cwd()
    os.chdir(base)  # the MLflow store of a relative sqlite URI is the caller's: ./mlruns.db
    try:
        runs = {}
        for sparsity, extra in (
            ("0.875", ["--recipes", "textbugger"]),
            ("2:4", ["--recipes", "none", "--format", "compressed-tensors"]),
        ):
            wd = workdir(root, base / f"work-{sparsity.replace(':', '-')}")
            out = base / f"shipped-{sparsity.replace(':', '-')}"
            argv = [
                "prune",
                str(own_classifier),
                "--data",
                str(root / "reviews.csv"),
                "--params",
                str(params),
            ]
            argv += ["--sparsity", sparsity, "--workdir", str(wd), "--out", str(out), *extra]
            assert main(argv) == 0
            runs[sparsity] = {
                "workdir": wd,
                "out": out,
                "metrics": read_json(wd / "reports" / "metrics.json"),
            }
        return runs
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def reloaded(pruned_runs, tmp_path_factory) -> dict:
    """Both shipped directories loaded in one fresh process: logits and id2label per sparsity."""
    import yaml

    tmp = tmp_path_factory.mktemp("reload")
    jobs = []
    for sparsity, run in pruned_runs.items():
        p = yaml.safe_load((run["workdir"] / "params.yaml").read_text())
        test = run["workdir"] / "data" / "prepared" / "test.parquet"
        dest = tmp / f"{sparsity.replace(':', '-')}.npy"
        jobs.append(
            [str(run["out"]), str(test), p["data"]["max_length"], p["evaluate"]["batch_size"], str(dest)]
        )
    res = subprocess.run(
        [sys.executable, "-c", RELOAD, json.dumps(jobs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    return {s: (np.load(job[4]), info[job[0]]) for s, job in zip(pruned_runs, jobs, strict=True)}


@pytest.mark.parametrize("sparsity", ["0.875", "2:4"])
def test_prune_ships_a_checkpoint_that_reloads_with_the_evaluated_logits(pruned_runs, reloaded, sparsity):
    from robustprune.fidelity import forward_with_representations
    from robustprune.modeling import load_classifier, load_tokenizer, prunable_linears

    run = pruned_runs[sparsity]
    wd, out, metrics = run["workdir"], run["out"], run["metrics"]
    name = "rakp_0.875" if sparsity == "0.875" else "rakp_2-4"
    record = read_json(out / "robustprune.json")
    # exact sparsity / N:M structure, in the shipped weights
    shipped = load_classifier(wd / "models" / "pruned" / name)
    for lname, lin in prunable_linears(shipped).items():
        w = lin.weight.detach()
        if sparsity == "0.875":
            assert int((w == 0).sum()) == round(0.875 * w.numel()), lname  # every Linear exactly
        else:
            assert ((w.view(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), lname  # at most 2 of every 4
    assert record["measured_sparsity"]["overall"] == pytest.approx(0.875 if sparsity == "0.875" else 0.5)
    assert set(record["measured_sparsity"]["layers"]) == set(prunable_linears(shipped))
    if sparsity == "0.875":
        masks = load_masks(out / "masks.safetensors")  # shipped beside the weights: the kept positions
        for lname, lin in prunable_linears(shipped).items():
            assert torch.equal(masks[lname.removeprefix("bert.encoder.layer.")], lin.weight != 0), lname
        assert record["weights"]["format"] == "safetensors"
    else:
        cfg = json.loads((out / "config.json").read_text())["quantization_config"]["sparsity_config"]
        assert (
            cfg["format"] == "sparse-24-bitmask"
            and record["weights"]["bytes"] < record["weights"]["dense_bytes"]
        )
    # a fresh process loads it with transformers: the data's labels, the pipeline's evaluation logits
    logits, id2label = reloaded[sparsity]
    assert id2label == {"0": "neg", "1": "pos"} == {str(k): v for k, v in shipped.config.id2label.items()}
    import pandas as pd

    test = pd.read_parquet(wd / "data" / "prepared" / "test.parquet")
    p = read_json(wd / "reports" / "eval.json")
    evaluated = next(m for m in p["models"] if m["name"] == name)
    ours, _ = forward_with_representations(
        load_classifier(wd / "models" / "pruned" / name),
        load_tokenizer(wd / "models" / "pruned" / name),
        test["text"].tolist(),
        batch_size=32,
        max_length=16,
    )
    assert np.array_equal(logits, ours)  # bit-identical to the pipeline's evaluation forward
    correct = logits.argmax(-1) == test["label"].to_numpy()
    assert "".join("1" if c else "0" for c in correct) == evaluated["correct_bits"]
    report = metrics["models"][name]["accuracy"]
    assert report["k"] == int(correct.sum()) and report["n"] == len(test)
    assert record["accuracy"]["clean"] == report  # the record carries the report's numbers and interval
    # the dense reference is the given classifier, pruned as it is: nothing fine-tuned, no soup
    assert read_json(wd / "reports" / "soup.json")["skipped"]
    assert list(read_json(wd / "reports" / "finetune.json")) == ["finetuned"]
    assert p["reference"] == "finetuned" and record["source"]["model"].endswith("my-classifier")
    assert record["calibration"]["num_samples"] == 24 and len(record["calibration"]["digest"]) == 64
    if sparsity == "0.875":  # attacked: textbugger on the seeded rows, with its interval
        under = record["accuracy"]["under_attack"]["textbugger"]
        assert under == metrics["attack"][f"{name}.textbugger"]["accuracy_under_attack"] and under["n"] == 6


def _outcomes(path: Path) -> list[tuple]:
    with path.open(newline="") as f:
        return [
            (r["test_row"], r["outcome"], r["perturbed_text"], r["num_queries"]) for r in csv.DictReader(f)
        ]


def test_attack_command_gives_the_attack_stage_outcomes_for_the_same_model(
    pipeline_run, tmp_path, prefect_api_url
):
    """The greedy soup the tiny pipeline built and attacked, given to `robustprune attack` as a directory."""
    from flows.cli import main

    root, params, _ = pipeline_run
    wd = workdir(root, tmp_path / "work")
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        argv = ["attack", str(root / "models" / "soup" / "greedy"), "--data", str(root / "reviews.csv")]
        assert (
            main([*argv, "--params", str(params), "--workdir", str(wd), "--recipes", "textfooler,textbugger"])
            == 0
        )
    finally:
        os.chdir(cwd)
    for recipe in ("textfooler", "textbugger"):
        ours = _outcomes(wd / "reports" / "attacks" / "finetuned" / f"{recipe}.csv")
        stage = _outcomes(root / "reports" / "attacks" / "soup-greedy" / f"{recipe}.csv")
        assert len(ours) == 6 and ours == stage  # same rows, same outcomes, same adversarial texts
    rows = read_json(wd / "reports" / "attack.json")
    assert [(r["model"], r["recipe"]) for r in rows] == [
        ("finetuned", "textfooler"),
        ("finetuned", "textbugger"),
    ]


def test_a_causal_lm_given_to_prune_goes_through_the_lm_track(tmp_path, prefect_api_url, monkeypatch):
    """`robustprune prune` on a saved LlamaForCausalLM: the causal-LM flow (perplexity, no attack), shipped."""
    import random

    from transformers import AutoModelForCausalLM

    from flows.cli import main
    from robustprune.modeling import prunable_linears
    from tests.conftest import FILLER, NEGATIVE, POSITIVE, tiny_llama

    model_dir = tmp_path / "my-lm"
    tiny_llama().save_pretrained(model_dir)
    tiny_tokenizer(model_dir).save_pretrained(model_dir)
    rng = random.Random(0)
    text = tmp_path / "docs.txt"
    text.write_text(
        "\n\n".join(" ".join(rng.choice(POSITIVE + NEGATIVE + FILLER) for _ in range(60)) for _ in range(40))
    )
    base = tmp_path / "base-lm.yaml"
    base.write_text(
        "lm: {eval_tokens: 256, window: 32, calib_chunks: 8, calib_len: 32, block_size: 16}\n"
        "runtime: {progress: false, device: cpu}\n"
    )
    monkeypatch.chdir(tmp_path)
    out, wd = tmp_path / "shipped", tmp_path / "work"
    argv = ["prune", str(model_dir), "--data", str(text), "--params", str(base), "--workdir", str(wd)]
    assert main([*argv, "--method", "sparsegpt", "--sparsity", "2:4", "--out", str(out)]) == 0
    rows = read_json(wd / "reports" / "lm.json")
    assert [(r["method"], r["sparsity"], r.get("stage")) for r in rows] == [
        ("dense", "0", None),
        ("sparsegpt", "2:4", "prune"),
    ]
    assert not (wd / "reports" / "attack.json").exists()  # a causal LM is not attacked
    record = read_json(out / "robustprune.json")
    assert record["perplexity"] == {
        "pruned": rows[1]["ppl"],
        "dense": rows[0]["ppl"],
        "tokens": rows[1]["tokens"],
    }
    shipped = AutoModelForCausalLM.from_pretrained(out)
    for name, lin in prunable_linears(shipped).items():
        assert ((lin.weight.view(lin.weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), name
    assert record["measured_sparsity"]["overall"] == pytest.approx(0.5)
