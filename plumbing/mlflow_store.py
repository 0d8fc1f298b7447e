"""Where MLflow logs: the tracking URI of a run, and what a stage started elsewhere must be told of it."""

from __future__ import annotations

import os
from pathlib import Path

from robustprune.config import Params

#: the tracking URI a remote stage run uses (set by the pipeline through the deployment's job variables, so
#: a worker logs where the pipeline logs even when its own params.yaml names a relative sqlite path)
URI_ENV = "ROBUSTPRUNE_MLFLOW_URI"
#: the pipeline's MLflow run id, for a stage process started under it (tasks.common.stage_run nests there)
PARENT_ENV = "ROBUSTPRUNE_MLFLOW_PARENT"


def tracking_uri(params: Params, root: Path) -> str:
    """runtime.mlflow_uri with a relative sqlite path resolved against the project root (or $ROBUSTPRUNE_MLFLOW_URI)."""
    if os.environ.get(URI_ENV):
        return os.environ[URI_ENV]
    uri = params.runtime.mlflow_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"
    return uri
