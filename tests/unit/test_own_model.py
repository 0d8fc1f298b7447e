"""Bringing your own classifier or soup ingredients: the checks made before any work (robustprune.own_model),
the params they come from (model.finetuned, soup.ingredients) and the names the pipeline gives the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustprune.config import FINETUNED_NAME, ConfigError, parse_params
from robustprune.own_model import (
    architecture_signature,
    classifier_problems,
    config_label_names,
    generic_label_names,
    label_mapping,
    same_architecture_problems,
    set_label_names,
)
from tests.conftest import tiny_bert, tiny_llama

CLASSIFIER = {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}


def with_labels(*names: str) -> dict:
    return {**CLASSIFIER, "id2label": {str(i): n for i, n in enumerate(names)}}


def test_label_names_come_from_id2label_in_id_order_or_transformers_defaults():
    assert config_label_names({"id2label": {"1": "pos", "0": "neg", "10": "x"}}) == ["neg", "pos", "x"]
    assert config_label_names({}) == ["LABEL_0", "LABEL_1"]  # PretrainedConfig's default: two labels
    assert config_label_names({"num_labels": 3}) == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert generic_label_names(["LABEL_0", "LABEL_1"])
    assert not generic_label_names(["LABEL_1", "LABEL_0"]) and not generic_label_names(["neg", "pos"])


@pytest.mark.parametrize(
    "config, labels, expected",
    [
        (with_labels("neg", "pos"), ["neg", "pos"], None),
        (with_labels("NEG ", "Pos"), ["neg", "pos"], None),  # case and blanks aside
        (with_labels("LABEL_0", "LABEL_1"), ["neg", "pos"], None),  # generic names: nothing to compare
        (with_labels("negative", "positive"), ["0", "1"], None),  # integer data labels carry no names
        (with_labels("neg", "pos"), None, None),  # data labels unknown (a hub data set offline)
        (with_labels("a", "b", "c"), ["neg", "pos"], "num_labels is 3"),
        (CLASSIFIER, ["a", "b", "c"], "num_labels is 2"),
        (with_labels("pos", "neg"), ["neg", "pos"], "does not match the data's labels"),
        ({"architectures": ["LlamaForCausalLM"]}, ["neg", "pos"], "a causal LM"),
        ({"architectures": ["BertModel"]}, ["neg", "pos"], "no sequence-classification head"),
    ],
)
def test_classifier_problems_name_the_key_and_what_is_wrong(config, labels, expected):
    problems = classifier_problems(config, labels, "model.finetuned = '/m'")
    if expected is None:
        assert problems == []
    else:
        assert (
            len(problems) == 1
            and problems[0].startswith("model.finetuned = '/m': ")
            and expected in problems[0]
        )


def test_set_label_names_writes_the_data_mapping_into_the_config():
    model = tiny_bert(num_labels=2)
    assert model.config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    set_label_names(model, ["neg", "pos"])
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.label2id == {"neg": 0, "pos": 1}
    assert label_mapping(("a", "b", "c"))[1] == {"a": 0, "b": 1, "c": 2}


def _save(model, d: Path) -> Path:
    model.save_pretrained(d)
    return d


def test_ingredients_of_one_architecture_pass_and_a_wider_one_is_named(tmp_path: Path):
    a = _save(tiny_bert(seed=0), tmp_path / "a")
    b = _save(tiny_bert(seed=1), tmp_path / "b")
    wide = _save(tiny_bert(seed=2, intermediate=48), tmp_path / "wide")
    assert same_architecture_problems([("soup.ingredients.0", a), ("soup.ingredients.1", b)]) == []
    problems = same_architecture_problems([("soup.ingredients.0", a), ("soup.ingredients.1", wide)])
    assert len(problems) == 1 and problems[0].startswith(f"soup.ingredients.1 = {str(wide)!r}")
    assert "intermediate_size 48 vs 40" in problems[0]
    # equal configs but different tensors (a config edited by hand): the safetensors headers tell
    cfg = json.loads((wide / "config.json").read_text())
    cfg["intermediate_size"] = 40
    (wide / "config.json").write_text(json.dumps(cfg))
    problems = same_architecture_problems([("soup.ingredients.0", a), ("soup.ingredients.1", wide)])
    assert len(problems) == 1 and "has shape" in problems[0] and "intermediate" in problems[0]
    assert "tensors" in architecture_signature(a)


def test_a_causal_lm_is_not_the_architecture_of_a_classifier(tmp_path: Path):
    a = _save(tiny_bert(), tmp_path / "a")
    lm = _save(tiny_llama(), tmp_path / "lm")
    problems = same_architecture_problems([("soup.ingredients.0", a), ("soup.ingredients.1", lm)])
    assert len(problems) == 1 and "architectures" in problems[0]


def test_params_name_the_dense_models_by_where_they_come_from():
    default = parse_params({})
    assert default.dense_source == "finetune" and "soup-greedy" in default.model_names()
    own = parse_params({"model": {"finetuned": "org/my-sst2-model"}})
    assert own.dense_source == "finetuned"
    assert own.model_names()[0] == FINETUNED_NAME and not {"soup-greedy", "lr5e-5-s0"} & set(
        own.model_names()
    )
    assert own.attack.models[0] == FINETUNED_NAME  # the default list's dense model is the given one
    assert own.attacked_models() == [FINETUNED_NAME, "sparsegpt_0.875", "rakp_0.875"]
    soup = parse_params({"soup": {"ingredients": ["runs/a", {"name": "b2", "path": "org/b"}]}})
    assert soup.dense_source == "ingredients" and soup.ingredient_names() == ["a", "b2"]
    assert soup.attacked_models(best_ingredient="b2")[:2] == ["b2", "soup-greedy"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"model": {"finetuned": "./no-such-dir"}}, "model.finetuned = './no-such-dir': no such directory"),
        ({"model": {"finetuned": " "}}, "model.finetuned = ' ': an empty name"),
        (
            {"soup": {"ingredients": ["x/run", "y/run"]}},
            "soup.ingredients = ['x/run', 'y/run']: ingredient names",
        ),
        (
            {"model": {"finetuned": "org/a"}, "soup": {"ingredients": ["org/b"]}},
            "model.finetuned = 'org/a' and soup.ingredients",
        ),
        ({"soup": {"ingredients": [{"name": "a/b", "path": "x"}]}}, "soup.ingredients.0.SoupIngredient.name"),
    ],
)
def test_bad_own_model_params_are_one_line_naming_the_key(raw, expected):
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    assert any(expected in line for line in str(e.value).splitlines()), str(e.value)
