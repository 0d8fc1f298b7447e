"""``runtime.storage: dvc`` on real processes (issue #18): a checkout per host, synchronised through DVC.

Two project directories that share nothing but a local-directory DVC remote (and the Prefect API):

- the parent's: a copy of the tiny project (``pipeline_run``), a git + DVC repository with every stage
  recorded, then ``evaluate`` and ``report`` made stale;
- the worker's: code, ``dvc.yaml`` and the same ``params.yaml`` only (no data/, models/, reports/, no
  dvc.lock), served by a real ``prefect worker start`` whose working directory it is.

The pipeline runs with ``work_pool`` = the pool and ``storage: dvc``: it pushes what its dvc.lock records and
sends the lock with the run, the worker pulls evaluate's inputs, runs it, pushes reports/eval.json and
publishes its lock entry, and the parent writes that entry and pulls the output; report runs in-process.
Every process is started in its own process group and stopped by its pid (tests/integration/test_scaleout.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import copy_project, make_checkout
from tests.integration.test_scaleout import (
    BIN,
    _flow_runs_of,
    pipeline_through_worker,
    run,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POOL = "dvc-pool"  # its own pool: the deployments <stage>/<stage>-dvc-pool are this module's


def _code_checkout(dst: Path, params: dict) -> Path:
    """A checkout as a host gets it from git: code, dvc.yaml, prefect.yaml, params.yaml; a DVC repo."""
    dst.mkdir(parents=True)
    return make_checkout(dst, params)


@pytest.fixture(scope="module")
def dvc_route(pipeline_run, prefect_api_url, tmp_path_factory) -> Iterator[dict]:
    from dvc.utils.serialize import modify_yaml

    import flows  # noqa: F401
    from robustprune.config import load_params

    src_root, src_params, _ = pipeline_run
    tmp = tmp_path_factory.mktemp("scaleout-dvc")
    remote = tmp / "dvc-remote"  # what both hosts share
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PREFECT_API_URL": prefect_api_url}
    params = load_params(src_params).model_dump(mode="json")  # every key spelled out: DVC reads them
    params["runtime"] |= {"work_pool": POOL, "storage": "dvc"}

    # the parent: the tiny run's checkout (every stage recorded by its pipeline), then evaluate and report
    # made stale
    parent = copy_project(src_root, tmp / "parent", skip=("mlruns.db", "mlartifacts", ".prefect"))
    (parent / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(remote)], parent, env)
    with modify_yaml(parent / "dvc.lock") as lock:  # DVC's YAML 1.2 (PyYAML would turn 2:4 into 124)
        for s in ("evaluate", "report"):
            del lock["stages"][s]

    # the worker's checkout: nothing but code and config; the same remote
    worker_dir = _code_checkout(tmp / "worker", params)
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(remote)], worker_dir, env)
    assert not any((worker_dir / d).exists() for d in ("data", "models", "reports", "dvc.lock"))

    logs = tmp / "logs"
    logs.mkdir()
    with pipeline_through_worker(POOL, worker_dir, parent, env, tmp, cwd=worker_dir) as ran:
        result, seconds = ran["result"], ran["seconds"]
        yield {
            "parent": parent,
            "worker": worker_dir,
            "src_root": src_root,
            "remote": remote,
            "env": env,
            "tmp": tmp,
            "result": result,
            "seconds": seconds,
            "logs": logs,
        }
    for d in (parent, worker_dir, remote):  # ~0.8 GB of checkouts; logs stay for a failed session
        shutil.rmtree(d, ignore_errors=True)


def test_evaluate_runs_on_a_worker_with_its_own_checkout_synchronised_through_dvc(dvc_route):
    from dvc.repo import Repo
    from dvc.utils.serialize import load_yaml

    parent, worker = dvc_route["parent"], dvc_route["worker"]
    result = dvc_route["result"]
    assert set(result["ran"]) == {"evaluate", "report"}, result
    (flow_run,) = _flow_runs_of(f"evaluate/evaluate-{POOL}")
    assert flow_run.state.is_completed(), flow_run.state
    env = flow_run.job_variables["env"]
    assert env["ROBUSTPRUNE_DVC_SYNC"] == "1" and len(env["ROBUSTPRUNE_DVC_LOCK"]) < 100_000

    # the worker received evaluate's inputs by pull, and only those (models/attack is no input of evaluate)
    for out in ("data/prepared", "models/finetuned", "models/soup", "models/pruned", "models/sds"):
        assert any((worker / out).iterdir()), out
    assert (worker / "reports" / "attacks").is_dir() and not (worker / "models" / "attack").exists()
    assert "evaluate" in load_yaml(worker / "dvc.lock")["stages"]

    # what the worker computed is what the in-process pipeline computed on the same inputs
    remote = json.loads((parent / "reports" / "eval.json").read_text())
    local = json.loads((dvc_route["src_root"] / "reports" / "eval.json").read_text())
    for ev, where in ((remote, worker), (local, dvc_route["src_root"])):  # rows name their model's path
        for m in ev["models"]:
            assert Path(m.pop("path")).parent.parent.parent == where
    assert remote == local

    # the parent recorded the worker's entry: evaluate (and everything) is up to date
    with contextlib.chdir(parent), Repo(str(parent)) as repo:  # DVC resolves some paths against the cwd
        assert repo.status(targets=["evaluate"]) == {}
        assert repo.status() == {}
    print(f"storage: dvc, evaluate on the worker's checkout: pipeline {dvc_route['seconds']:.1f} s")


def test_storage_dvc_without_a_remote_exits_2_naming_it(dvc_route):
    bare = _code_checkout(
        dvc_route["tmp"] / "no-remote",
        yaml.safe_load((dvc_route["parent"] / "params.yaml").read_text()),
    )
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--params", "params.yaml", "--root", "."],
        cwd=bare,
        env=dvc_route["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall = time.monotonic() - t0
    assert res.returncode == 2, res.stderr[-2000:]
    assert "runtime.storage = 'dvc': no default DVC remote" in res.stderr, res.stderr
    assert "dvc remote add -d" in res.stderr, res.stderr
    checked = float(res.stderr.split("nothing was run or written (", 1)[1].split("s)", 1)[0])
    assert not (bare / "data").exists() and not (bare / "dvc.lock").exists()
    print(f"storage: dvc, no remote -> exit 2 after {wall:.1f} s wall, {checked:.1f} s of checks")


DVC_YAML = """stages:
  up:
    cmd: 'true'
    outs:
      - models/m:
          persist: true
      - reports/att:
          cache: false
  ev:
    cmd: 'true'
    deps: [models/m, reports/att, code.py]
    outs:
      - reports/eval.json:
          cache: false
"""


def test_sync_functions_carry_cached_and_uncached_outputs_both_ways(tmp_path, monkeypatch):
    """tasks/dvc_sync.py without Prefect: parent push, worker pull / commit / push, parent pull (both modes)."""
    from unittest import mock

    from dvc.repo import Repo

    from plumbing import dvc_sync

    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    hosts = {name: tmp_path / name for name in ("parent", "worker")}
    for d in hosts.values():
        d.mkdir()
        (d / "dvc.yaml").write_text(DVC_YAML)
        (d / "code.py").write_text("x = 1\n")
        run(["git", "init", "-q"], d, env)
        run([sys.executable, "-m", "dvc", "init", "-q"], d, env)
        run([sys.executable, "-m", "dvc", "remote", "add", "-d", "s", str(tmp_path / "remote")], d, env)
    parent, worker = hosts["parent"], hosts["worker"]
    (parent / "models" / "m").mkdir(parents=True)
    (parent / "models" / "m" / "w.bin").write_bytes(b"weights")
    (parent / "reports" / "att").mkdir(parents=True)
    (parent / "reports" / "att" / "x.csv").write_text("text,label\n")
    run([sys.executable, "-m", "dvc", "commit", "-f", "-q", "up"], parent, env)

    sent = dvc_sync.before_remote(parent, "ev")
    assert dvc_sync.decode_lock(sent[dvc_sync.LOCK_ENV]) == (parent / "dvc.lock").read_text()
    for k, v in sent.items():
        monkeypatch.setenv(k, v)
    with (
        mock.patch("prefect.artifacts.create_markdown_artifact") as publish,
        dvc_sync.worker_sync("ev", worker),
    ):
        assert (worker / "models" / "m" / "w.bin").read_bytes() == b"weights"  # cached, pulled
        assert (worker / "reports" / "att" / "x.csv").is_file()  # cache: false, pulled by its lock hash
        (worker / "reports" / "eval.json").write_text('{"accuracy": 0.9}')
    markdown = publish.call_args.kwargs["markdown"]
    entry = json.loads(markdown.split(dvc_sync.FENCE, 1)[1].rsplit("```", 1)[0])
    assert (
        publish.call_args.kwargs["key"] == "dvc-lock-ev" and entry["outs"][0]["path"] == "reports/eval.json"
    )

    flow_run = mock.Mock(id="run-id")
    flow_run.name = "remote-run"
    with mock.patch.object(dvc_sync, "read_lock_entry", return_value=entry):
        before = (parent / "dvc.lock").read_text()
        dvc_sync.after_remote(parent, "ev", flow_run, record=False)  # an alternate profile: lock untouched
        assert (parent / "dvc.lock").read_text() == before
        assert (parent / "reports" / "eval.json").read_text() == '{"accuracy": 0.9}'
        (parent / "reports" / "eval.json").unlink()
        assert dvc_sync.after_remote(parent, "ev", flow_run) == ["reports/eval.json"]
    with contextlib.chdir(parent), Repo(str(parent)) as repo:
        assert repo.status() == {}
    recorded = (parent / "dvc.lock").read_text()
    # a worker whose code differs from the parent's: the parent names the stage and the flow run
    (worker / "code.py").write_text("x = 2\n")
    with (
        mock.patch("prefect.artifacts.create_markdown_artifact") as publish,
        dvc_sync.worker_sync("ev", worker),
    ):
        pass
    entry = json.loads(publish.call_args.kwargs["markdown"].split(dvc_sync.FENCE, 1)[1].rsplit("```", 1)[0])
    with (
        mock.patch.object(dvc_sync, "read_lock_entry", return_value=entry),
        pytest.raises(RuntimeError, match=r"stage 'ev' \(flow run remote-run, run-id\): not up to date"),
    ):
        dvc_sync.after_remote(parent, "ev", flow_run)
    assert (parent / "dvc.lock").read_text() == recorded  # put back: the stage stays recorded as it was
    monkeypatch.delenv(dvc_sync.SYNC_ENV)
    with dvc_sync.worker_sync("ev", tmp_path / "nowhere"):  # without the variable: nothing happens
        pass
