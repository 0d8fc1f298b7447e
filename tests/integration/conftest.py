from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import write_tiny_project


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect API for every in-process flow run of the session."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness) -> str:
    """The harness server's URL, for flows run in subprocesses (saves each one starting its own server)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, prefect_harness):
    """The real pipeline flow, run once on the tiny project; tests read what it produced."""
    import flows  # noqa: F401
    from flows.pipeline import pipeline

    root = tmp_path_factory.mktemp("tiny-project")
    params = write_tiny_project(root)
    result = pipeline(params_path=str(params), root=str(root))
    return root, params, result


def copy_project(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    shutil.copytree(
        src,
        dst,
        ignore=lambda d, names: [n for n in names if (Path(d) / n).relative_to(src).as_posix() in skip],
    )
    return dst
