"""Prefect flows: one per DVC stage, plus ``flows.pipeline`` that runs them all as subflows.

Importing this package sets the offline, telemetry-free defaults for every entry point (``make run``,
``dvc repro``, ``python -m flows.<stage>``), unless the caller's environment already chose otherwise.
"""

from pathlib import Path

from plumbing.environment import set_defaults

_ROOT = Path(__file__).resolve().parent.parent
set_defaults(
    _ROOT,
    {
        "PREFECT_HOME": str(_ROOT / ".prefect"),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    },
)

# `python -m flows.<stage>` (make run, dvc repro): validate params.yaml and its inputs now, before the stage
# module imports Prefect, MLflow and torch, so that a bad input stops in about a second (plumbing/cli.py)
if __import__("sys").argv[:1] == ["-m"]:
    from plumbing.cli import early_validate

    early_validate()
