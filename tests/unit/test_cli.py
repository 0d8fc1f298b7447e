"""The `robustprune` command (flows/cli.py): arguments, the params it writes, and stopping before any work."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flows import cli
from robustprune.config import FINETUNED_NAME, parse_params
from tests.conftest import ROOT, synthetic_reviews, tiny_bert, tiny_tokenizer


@pytest.mark.parametrize("command", ["prune", "attack", "report", "run"])
def test_every_subcommand_has_help(command: str, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: robustprune {command}")


@pytest.mark.parametrize(
    "argv, option",
    [
        (["prune", "org/model", "--sparsity", "1.5"], "argument --sparsity"),
        (["prune", "org/model", "--sparsity", "4:2"], "argument --sparsity"),
        (["prune", "org/model", "--method", "obs"], "argument --method"),
        (["prune", "org/model", "--format", "onnx"], "argument --format"),
        (["prune", "./no-such-model"], "argument MODEL"),
        (["attack", "org/model", "--recipes", "textfooler,pwws"], "argument --recipes"),
        (["attack", "org/model", "--recipes", "textfooler,textfooler"], "argument --recipes"),
        (["attack", "org/model", "--examples", "0"], "argument --examples"),
        (["attack", "org/model", "--data", "./missing.csv"], "argument --data"),
        (["attack", "org/model", "--params", "./missing.yaml"], "argument --params"),
        (["prune"], "MODEL"),
        (["shrink", "org/model"], "argument COMMAND"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and option in err[0], err


def split_importtime(stderr: str) -> tuple[list[str], set[str]]:
    """The lines of a ``python -X importtime`` run's stderr that are not its import times, and the modules
    it imported."""
    lines = stderr.splitlines()
    errors = [line for line in lines if not line.startswith("import time:")]
    imported = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    return errors, imported


def test_a_bad_argument_costs_no_heavy_import():
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flows.cli", "prune", "org/model", "--sparsity", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors, imported = split_importtime(res.stderr)
    assert res.returncode == 2 and len(errors) == 1 and "argument --sparsity" in errors[0], res.stderr[-2000:]
    assert not {"torch", "prefect", "mlflow", "transformers"} & imported


def test_the_console_script_is_this_entry_point():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["robustprune"].split(":")
    assert module == "flows.cli" and getattr(cli, func) is cli.entry
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {"flows", "tasks", "robustprune"} <= set(found["include"])  # installed with the library


def _args(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_prune_overlay_is_the_pipeline_params_with_the_commands_values():
    args = _args(
        "prune", "org/my-model", "--sparsity", "2:4", "--method", "sparsegpt", "--recipes", "textbugger"
    )
    raw = cli.classifier_overlay(args, {"prune": {"methods": ["wanda"], "block_size": 64}}, "prune")
    params = parse_params(raw)
    assert params.model.finetuned == "org/my-model" and params.dense_source == "finetuned"
    assert params.prune.combos == [("sparsegpt", "2:4")] and params.prune.block_size == 64  # base kept
    assert params.attacked_models() == [FINETUNED_NAME, "sparsegpt_2-4"]
    assert params.attack.recipes == ["textbugger"]
    assert params.sds.combos == [] and params.cap.model_names() == []  # SDS and CAP prune other models
    attack = parse_params(cli.classifier_overlay(_args("attack", "org/m"), {}, "attack"))
    assert attack.attacked_models() == [FINETUNED_NAME]


def test_lm_overlay_sets_the_lm_track():
    args = _args("prune", "org/lm", "--method", "wanda", "--sparsity", "0.5")
    params = parse_params(cli.lm_overlay(args, {}))
    assert (
        params.lm.model == "org/lm" and params.lm.combos == [("wanda", "0.5")] and params.lm.sds.combos == []
    )


def _project(tmp_path: Path, num_labels: int = 2, weights: bool = True) -> tuple[Path, Path]:
    model = tmp_path / "my-classifier"
    tiny_bert(num_labels=num_labels).save_pretrained(model)
    tiny_tokenizer(model).save_pretrained(model)
    if not weights:
        (model / "model.safetensors").unlink()
    data = tmp_path / "reviews.csv"
    data.write_text(
        "sentence,sentiment\n" + "".join(f"{t},{'pos' if y else 'neg'}\n" for t, y in synthetic_reviews(240))
    )
    return model, data


@pytest.mark.parametrize(
    "num_labels, weights, expected",
    [(3, True, "num_labels is 3"), (2, False, "no weights file")],
)
def test_a_bad_model_stops_before_the_work_directory_exists(
    tmp_path, monkeypatch, capsys, num_labels, weights, expected
):
    model, data = _project(tmp_path, num_labels, weights)
    monkeypatch.chdir(tmp_path)
    wd = tmp_path / "work"
    argv = [
        "prune",
        str(model),
        "--data",
        str(data),
        "--text-column",
        "sentence",
        "--label-column",
        "sentiment",
    ]
    argv += ["--workdir", str(wd)]
    params = tmp_path / "base.yaml"
    params.write_text("data: {validation_size: 40, test_size: 40}\nruntime: {device: cpu}\n")
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--params", str(params)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and any(
        "model.finetuned" in line and expected in line for line in err.splitlines()
    ), err
    assert not wd.exists() and not (tmp_path / "mlruns.db").exists()  # nothing written


def test_a_workdir_with_someone_elses_params_is_refused(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    with pytest.raises(SystemExit) as e:
        cli.main(["attack", "org/m", "--workdir", str(tmp_path)])
    assert e.value.code == 2 and "argument --workdir" in capsys.readouterr().err
    assert (tmp_path / "params.yaml").read_text() == "seed: 0\n"
