"""Prefect flows: one per DVC stage, plus ``flows.pipeline`` that runs them all as subflows.

Importing this package sets the offline, telemetry-free defaults for every entry point (``make run``,
``dvc repro``, ``python -m flows.<stage>``), unless the caller's environment already chose otherwise.
"""

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "PREFECT_HOME": str(_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "NLTK_DATA": str(_ROOT / "nltk_data"),
    "TOKENIZERS_PARALLELISM": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}.items():
    os.environ.setdefault(_key, _value)

# `python -m flows.<stage>` (make run, dvc repro): validate params.yaml and its inputs now, before the stage
# module imports Prefect, MLflow and torch, so that a bad input stops in about a second (plumbing/cli.py)
if __import__("sys").argv[:1] == ["-m"]:
    from plumbing.cli import early_validate

    early_validate()
