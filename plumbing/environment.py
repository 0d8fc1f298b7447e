"""The offline, telemetry-free environment defaults of every entry point: the flows (``make run``, ``dvc repro``,
``python -m flows.<stage>``), the tests and the benchmarks. Each sets them with :func:`set_defaults` before torch,
transformers, Prefect or MLflow is imported; a value the caller's environment already chose is kept.

Standard library only: importing this module imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def offline_defaults(root: Path) -> dict[str, str]:
    """No hub downloads, no telemetry, the checkout's ``nltk_data``, quiet tokenizers and GitPython."""
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "NLTK_DATA": str(root / "nltk_data"),
        "TOKENIZERS_PARALLELISM": "false",
        "GIT_PYTHON_REFRESH": "quiet",
    }


def set_defaults(root: Path, extra: Mapping[str, str] | None = None) -> None:
    """``os.environ.setdefault`` for :func:`offline_defaults` and then ``extra``."""
    for key, value in {**offline_defaults(root), **(extra or {})}.items():
        os.environ.setdefault(key, value)
