"""Checks that need more than the schema: does the data the params name exist and make sense?

Run before anything heavy is imported or any output is touched, so that bad input costs seconds.
"""

from __future__ import annotations

from pathlib import Path

from robustprune.config import Params


class PreflightError(ValueError):
    """The params are well-formed but the inputs they name are unusable."""


def preflight(params: Params, root: Path, stage: str = "pipeline") -> None:
    """Raise PreflightError naming the key, the value and what is wrong."""
    cfg = params.data
    if stage in ("pipeline", "prepare"):
        if cfg.kind == "file":
            from robustprune.data import DataError, load_table, make_splits

            try:
                df, names = load_table(Path(cfg.source), cfg.text_column, cfg.label_column)
                make_splits(
                    df,
                    names,
                    validation_size=cfg.validation_size,
                    test_size=cfg.test_size,
                    seed=params.seed,
                    max_train_examples=cfg.max_train_examples,
                )
            except DataError as e:
                raise PreflightError(f"data.source = {cfg.source!r}: {e}") from None
        if cfg.kind == "builtin" or params.model.kind == "builtin":
            from robustprune.resources import ResourceError, find_wheel

            for name in {
                cfg.source if cfg.kind == "builtin" else None,
                params.model.name if params.model.kind == "builtin" else None,
            } - {None}:
                try:
                    find_wheel(name)
                except ResourceError as e:
                    raise PreflightError(str(e)) from None
    needs = {
        "finetune": ["data/prepared", "models/base"],
        "soup": ["models/finetuned"],
        "calibrate": ["data/prepared", "models/base"],
        "prune": ["models/soup", "data/calibration"],
        "evaluate": ["data/prepared"],
    }
    missing = [p for p in needs.get(stage, []) if not (root / p).exists()]
    if missing:
        raise PreflightError(
            f"stage {stage!r} needs {missing}, which do not exist under {root.resolve()}: "
            "run the upstream stages first (dvc repro, or python -m flows.pipeline)"
        )
