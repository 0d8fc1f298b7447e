"""The cap stage's wiring (``tasks/cap.py``): which model fills which bank, where the student starts, which
options an ablation trains with, how long the stages are."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustprune.config import parse_params
from tests.conftest import tiny_bert


def _project(root: Path) -> None:
    tiny_bert(seed=1).bert.save_pretrained(root / "models" / "base")  # the pre-trained encoder
    tiny_bert(seed=2).save_pretrained(root / "models" / "soup" / "greedy")  # the fine-tuned dense model


def _params(**cap):
    return parse_params({"cap": cap})


def _same(a: torch.nn.Module, b: torch.nn.Module, prefix: str = "") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(v, sb[prefix + k]) for k, v in sa.items() if prefix + k in sb)


def test_bank_models_are_the_pretrained_encoder_then_the_finetuned_soup(tmp_path):
    """PrC from models/base, FiC and the KD logits from the soup. Planted: swapped, or the soup twice."""
    from tasks.cap import bank_models
    from tasks.common import Layout

    _project(tmp_path)
    pre, fine = bank_models(_params(), Layout(tmp_path))
    assert _same(pre, tiny_bert(seed=1).bert) and not hasattr(pre, "classifier")
    assert _same(fine, tiny_bert(seed=2)) and hasattr(fine, "classifier")


def test_start_model_finetuned_is_the_soup_pretrained_is_the_encoder_with_a_seeded_head(tmp_path):
    from tasks.cap import start_model
    from tasks.common import Layout

    _project(tmp_path)
    layout = Layout(tmp_path)
    soup = start_model(_params(start="finetuned"), layout)
    assert _same(soup, tiny_bert(seed=2))
    a = start_model(_params(start="pretrained", seed=7), layout)
    b = start_model(_params(start="pretrained", seed=7), layout)
    c = start_model(_params(start="pretrained", seed=8), layout)
    assert _same(a.bert, tiny_bert(seed=1).bert)  # every encoder weight from the pre-trained model
    assert torch.equal(a.classifier.weight, b.classifier.weight)  # the head: seeded by cap.seed
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert not torch.equal(a.classifier.weight, soup.classifier.weight)
    assert a.config.num_labels == soup.config.num_labels and a.config.id2label == soup.config.id2label


def test_bank_dict_maps_each_module_to_its_own_bank():
    from tasks.cap import _bank_dict

    saved = {"prc": torch.zeros(3, 2), "fic": torch.ones(3, 2), "labels": torch.tensor([0, 1, 0])}
    snaps = [torch.full((3, 2), 2.0), torch.full((3, 2), 3.0)]
    out = _bank_dict(["prc", "fic", "snc"], saved, snaps)
    assert torch.equal(out["prc"][0][:, 0], saved["prc"]) and torch.equal(out["fic"][0][:, 0], saved["fic"])
    assert out["snc"][0].shape == (3, 2, 2) and torch.equal(out["snc"][0][:, 1], snaps[1])
    assert set(_bank_dict(["fic"], saved, snaps)) == {"fic"}
    assert set(_bank_dict(["snc"], saved, [])) == set()  # no snapshot yet: no SnC term


def test_run_options_apply_the_ablation_settings_to_ablations_only():
    from tasks.cap import run_options, train_options

    cap = _params(
        lr=3e-4, ablation_settings={"lr": 5e-5, "warmup_ratio": 0.3, "weights": {"ce": 1.0, "kd": 0.0}}
    ).cap
    main = run_options(cap, "cap")
    assert main == train_options(cap) and main.lr == 3e-4
    abl = run_options(cap, "cap-nocl")
    assert (abl.lr, abl.warmup_ratio, abl.weights.ce, abl.weights.kd) == (5e-5, 0.3, 1.0, 0.0)
    assert abl.batch_size == main.batch_size and abl.temperature == main.temperature
    plain = _params(ablation_settings={"lr": None, "warmup_ratio": None, "weights": None}).cap
    assert run_options(plain, "cap-nocl") == train_options(plain)  # nothing set: the main run's options
    default = _params().cap  # params.yaml: the ablation's own warm-up share only
    assert run_options(default, "cap-nocl").warmup_ratio == 0.3 != train_options(default).warmup_ratio


def test_run_stages_in_epochs_and_separate_runs():
    from tasks.cap import run_stages

    cap = _params(
        sparsities=[0.5, 0.9], warmup_steps=2, ramp_steps=5, hold_steps=3, length_unit="epochs",
        path="separate", snapshots="epoch", batch_size=32,
    ).cap  # fmt: skip
    run = run_stages(cap, 2000)  # 63 steps an epoch
    assert [(s.initial, s.final, s.warmup, s.ramp, s.hold) for s in run] == [
        (0.0, 0.5, 126, 315, 189),
        (0.0, 0.9, 126, 315, 189),
    ]
    default = run_stages(_params().cap, 2000)
    assert [s.steps for s in default] == [15, 15, 30, 20]


def test_separate_runs_need_epoch_snapshots_for_snc():
    from robustprune.config import ConfigError

    with pytest.raises((ValueError, ConfigError), match="snapshots"):
        _params(path="separate", snapshots="stage")
    assert _params(path="separate", snapshots="stage", modules=["prc", "fic"]).cap.path == "separate"
