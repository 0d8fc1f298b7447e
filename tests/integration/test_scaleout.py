"""Scale-out on real processes (issue #18): a work pool with a custom name served by a real `prefect worker`
subprocess, a real `mlflow server` subprocess, a DVC remote and a fresh clone, the watch flow and the
pipeline deployment's trigger.

One module-scoped run does the expensive part once: a copy of the tiny project (``pipeline_run``) made a
git + DVC repository with every stage recorded, then ``prune``, ``evaluate`` and ``report`` made stale;
``prefect deploy --all`` (prefect.yaml, ``ROBUSTPRUNE_GPU_POOL`` = the custom pool) registers the
deployments on the session's Prefect API; the pipeline runs with ``runtime.work_pool`` = that pool and
``runtime.mlflow_uri`` = the MLflow server, so prune and evaluate run through the worker and report runs
in-process. The tests below read what that run left. Every server and worker is started on 127.0.0.1 on a
free port in its own process group and stopped by its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.conftest import copy_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POOL = "scaleout-pool"  # a process work pool whose name is not `gpu`
BIN = Path(sys.executable).parent
REMOTE_STAGES = ("prune", "evaluate")  # made stale; both are GPU stages, so both go to the pool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started(cmd: list[str], env: dict, cwd: Path, log: Path) -> Iterator[subprocess.Popen]:
    """A server/worker subprocess in its own process group, stopped by its pid (SIGTERM, then SIGKILL)."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the group is the pid's: the server and its children
            try:  # 5 s: a worker still running a triggered flow run would otherwise hold the teardown 20 s
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


def wait_for(check, what: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"{what}: the process exited ({proc.returncode}):\n{log.read_text()[-3000:] if log else ''}"
            )
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{log.read_text()[-3000:] if log else ''}")


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 600) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (
        f"{cmd} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    return res.stdout + res.stderr


def process_worker(pool: str, env: dict, home: Path, project: Path) -> tuple[list[str], dict]:
    """The command and environment of a real ``prefect worker start`` on a process pool, serving ``project``
    (``ROBUSTPRUNE_DIR``) one run at a time, with its own Prefect home and a fast poll."""
    worker_env = {
        **env,
        "PREFECT_HOME": str(home),  # its own result storage: no cache hit from the first run
        "ROBUSTPRUNE_DIR": str(project),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
    }
    cmd = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process", "--limit", "1"]
    return cmd, worker_env


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def _online_workers(pool: str) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return sum(w.status == "ONLINE" for w in client.read_workers_for_work_pool(pool))


def _flow_runs_of(deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))


@contextlib.contextmanager
def pipeline_through_worker(
    pool: str,
    checkout: Path,
    project: Path,
    env: dict,
    tmp: Path,
    *,
    cwd: Path,
    ready=None,  # noqa: ANN001
) -> Iterator[dict]:
    """``prefect deploy --all`` from ``checkout`` (the GPU stages to ``pool``), a real process worker serving
    that checkout, and the pipeline run on ``project`` while the worker is online (after ``ready()``, when
    given). Yields the deploy output, the pipeline's result, its seconds and the worker's process."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.pipeline import pipeline

    with get_client(sync_client=True) as client:
        for name in (pool, "cpu"):  # `cpu`: the pipeline and watch deployments' pool (may exist already)
            with contextlib.suppress(Exception):
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    deploy_env = {
        **env,
        "ROBUSTPRUNE_GPU_POOL": pool,
        "ROBUSTPRUNE_DIR": str(checkout),
        "PREFECT_HOME": str(tmp / "ph-deploy"),
    }
    deployed = run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], checkout, deploy_env)
    worker_cmd, worker_env = process_worker(pool, env, tmp / "ph-worker", checkout)
    log = tmp / "logs" / "worker.log"
    with started(worker_cmd, worker_env, cwd, log) as worker:
        if ready is not None:
            ready()
        wait_for(lambda: _online_workers(pool), "worker online", 240, worker, log)
        t0 = time.monotonic()
        result = pipeline(params_path=str(project / "params.yaml"), root=str(project))
        yield {"deployed": deployed, "result": result, "seconds": time.monotonic() - t0, "worker": worker}


@pytest.fixture(scope="module")
def scaleout(pipeline_run, prefect_api_url, tmp_path_factory) -> Iterator[dict]:

    import flows  # noqa: F401
    from robustprune.config import load_params

    src_root, src_params, _ = pipeline_run
    tmp = tmp_path_factory.mktemp("scaleout")
    # the tiny run's checkout: code, dvc.yaml, prefect.yaml, every stage recorded in dvc.lock and cached
    root = copy_project(src_root, tmp / "project", skip=("mlruns.db", "mlartifacts", ".prefect"))
    ml_port = free_port()
    params = load_params(src_params).model_dump(mode="json")  # every key spelled out: DVC reads them
    params["runtime"] |= {"work_pool": POOL, "mlflow_uri": f"http://127.0.0.1:{ml_port}"}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PREFECT_API_URL": prefect_api_url,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    logs = tmp / "logs"
    logs.mkdir()
    store = tmp / "mlflow-store"  # outside the project: the server's sqlite store and artifacts
    (store / "artifacts").mkdir(parents=True)
    mlflow_cmd = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(ml_port),
        "--workers",
        "1",
    ]
    mlflow_cmd += [
        "--backend-store-uri",
        f"sqlite:///{store}/mlflow.db",
        "--artifacts-destination",
        str(store / "artifacts"),
    ]
    with started(mlflow_cmd, env, tmp, logs / "mlflow.log") as mlflow_server:
        # the repository: every stage recorded by the tiny pipeline run, then three made stale
        run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(tmp / "dvc-remote")], root, env)
        from dvc.utils.serialize import modify_yaml

        with modify_yaml(root / "dvc.lock") as lock:  # DVC's YAML 1.2: PyYAML would turn a 2:4 into 124
            reference = {s: lock["stages"][s] for s in (*REMOTE_STAGES, "report")}
            for s in (*REMOTE_STAGES, "report"):
                del lock["stages"][s]
        run(["git", "add", "-A"], root, env)
        run(["git", "commit", "-qm", "tiny project"], root, env)

        def mlflow_up() -> None:
            wait_for(
                lambda: _http_ok(f"http://127.0.0.1:{ml_port}/health"),
                "mlflow server",
                240,
                mlflow_server,
                logs / "mlflow.log",
            )

        with pipeline_through_worker(POOL, root, root, env, tmp, cwd=tmp, ready=mlflow_up) as ran:
            deployed, result, seconds = ran["deployed"], ran["result"], ran["seconds"]
            yield {
                "root": root,
                "src_root": src_root,
                "env": env,
                "tmp": tmp,
                "deployed": deployed,
                "result": result,
                "seconds": seconds,
                "reference_lock": reference,
                "mlflow_uri": f"http://127.0.0.1:{ml_port}",
                "store": store,
                "logs": logs,
            }
    shutil.rmtree(root, ignore_errors=True)  # the project copy (~1 GB); logs stay for a failed session


def test_gpu_stages_run_through_a_worker_on_the_named_pool(scaleout):
    from prefect.client.orchestration import get_client

    from plumbing.remote import GPU_STAGES

    root, result = scaleout["root"], scaleout["result"]
    for stage in ("finetune", "prune", "sds", "cap", "evaluate", "attack", "lm"):
        assert f"Deployment '{stage}/{stage}-{POOL}' successfully created" in scaleout["deployed"], stage
    # the stale stages and whatever DVC finds stale below them ran, the rest were cache hits
    assert {*REMOTE_STAGES, "report"} <= set(result["ran"]) and "prepare" in result["skipped"], result
    with get_client(sync_client=True) as client:
        for stage in (s for s in result["ran"] if s in GPU_STAGES):  # every GPU stage went to the pool
            runs = _flow_runs_of(f"{stage}/{stage}-{POOL}")
            assert len(runs) == 1 and runs[0].state.is_completed(), (stage, runs)
            assert runs[0].work_pool_name == POOL
            assert runs[0].parameters == {
                "params_path": "params.yaml",
                "root": ".",
            }  # relative to the checkout
            assert runs[0].idempotency_key.endswith(f":{stage}")
            env = runs[0].job_variables["env"]
            assert env["ROBUSTPRUNE_MLFLOW_URI"] == scaleout["mlflow_uri"]
            assert json.loads(env["ROBUSTPRUNE_TASK_RUNNER"])["task_runner"] == "thread"
            parent = client.read_task_run(runs[0].parent_task_run_id)
            pipeline_run = client.read_flow_run(parent.flow_run_id)
            assert pipeline_run.name and client.read_flow(pipeline_run.flow_id).name == "pipeline"
    # what the worker computed is what the in-process pipeline computed on the same inputs
    remote = json.loads((root / "reports" / "eval.json").read_text())
    local = json.loads((scaleout["src_root"] / "reports" / "eval.json").read_text())
    for ev, where in ((remote, root), (local, scaleout["src_root"])):  # rows name their model's absolute path
        for m in ev["models"]:
            assert Path(m.pop("path")).parent.parent.parent == where
    assert remote == local
    # the parent recorded the stages after the worker finished: the lock matches, nothing is stale
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        assert repo.status() == {}
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) >= {*REMOTE_STAGES, "report"}
    assert lock["prune"]["outs"] == scaleout["reference_lock"]["prune"]["outs"]  # a cache hit on the worker


def test_remote_stage_runs_nest_under_the_pipeline_run_on_the_mlflow_server(scaleout):
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(scaleout["mlflow_uri"])
    exp = client.get_experiment_by_name("robustprune")
    assert (
        not exp.artifact_location.startswith(("file:", "/"))
        or str(scaleout["root"]) not in exp.artifact_location
    )
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.info.run_name == "pipeline"]
    stages = {
        r.data.tags.get("stage"): r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert {*REMOTE_STAGES, "report"} <= set(stages)
    # the worker's prune run opened one nested run per (method, sparsity)
    combos = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == stages["prune"].info.run_id]
    assert {r.info.run_name for r in combos} == {
        "magnitude_0.5",
        "magnitude_2-4",
        "sparsegpt_0.5",
        "sparsegpt_2-4",
        "rakp_0.5",
        "rakp_2-4",
    }
    # nothing of MLflow's landed in the project: the server owns the store and the artifacts
    root = scaleout["root"]
    assert (
        not (root / "mlruns.db").exists()
        and not (root / "mlartifacts").exists()
        and not (root / "mlruns").exists()
    )
    assert (scaleout["store"] / "mlflow.db").is_file()
    assert any(scaleout["store"].joinpath("artifacts").rglob("summary.md"))
    assert mlflow.get_tracking_uri() == scaleout["mlflow_uri"]


def test_every_model_is_a_run_and_the_best_per_sparsity_is_registered(scaleout):
    from mlflow.tracking import MlflowClient

    from robustprune.stats import rate
    from tasks.tracking import MODEL_TAG, alias_for, version_model_id

    root = scaleout["root"]
    evaluation = json.loads((root / "reports" / "eval.json").read_text())
    models = {m["name"]: m for m in evaluation["models"]}
    attack = json.loads((root / "reports" / "attack.json").read_text())
    client = MlflowClient(scaleout["mlflow_uri"])
    exp = client.get_experiment_by_name("robustprune")
    runs = client.search_runs(
        [exp.experiment_id], filter_string="tags.`robustprune.model` != ''", max_results=1000
    )
    by_model = {}
    for r in runs:
        by_model.setdefault(r.data.tags["robustprune.model"], []).append(r)
    assert set(by_model) == set(models)
    for name, (r,) in by_model.items():  # exactly one run per model
        m = models[name]
        assert (
            r.data.params["method"] == r.data.tags["method"]
            and r.data.params["sparsity"] == r.data.tags["sparsity"]
        )
        acc = rate(m["correct"], m["total"])
        assert r.data.metrics["accuracy"] == pytest.approx(acc.value)
        assert r.data.metrics["accuracy_low"] == pytest.approx(acc.low) and r.data.metrics[
            "accuracy_high"
        ] == pytest.approx(acc.high)
        assert r.data.metrics["measured_sparsity"] == pytest.approx(m["measured_sparsity"])
        for a in (a for a in attack if a["model"] == name):
            assert r.data.metrics[f"accuracy_under_attack.{a['recipe']}"] == pytest.approx(
                a["accuracy_under_attack"]
            )
    pruned_runs = [rs[0] for rs in by_model.values() if rs[0].data.params["kind"] == "pruned"]
    combo_parents = {r.data.tags["mlflow.parentRunId"] for r in pruned_runs}
    assert (
        len(combo_parents) == 1
    )  # all under the (remote) prune stage run: the per-combination runs themselves
    assert all("prune_seconds" in r.data.metrics for r in pruned_runs)

    # registry: one version per sparse checkpoint, no weights copied, the alias on the most accurate
    versions = client.search_model_versions("name = 'robustprune-pruned'")
    sparse = {n: m for n, m in models.items() if m["kind"] in ("pruned", "sds", "cap")}
    assert {v.tags[MODEL_TAG] for v in versions} == set(sparse)
    for v in versions:
        assert v.tags["dvc.path"].startswith("models/") and len(v.tags["weights.sha256"]) == 64
        files = [f.path for f in client.list_logged_model_artifacts(version_model_id(v))]
        assert not any(f.endswith((".safetensors", ".bin")) for f in files), files
    by_sparsity: dict[str, list[str]] = {}
    for n in sparse:
        by_sparsity.setdefault(by_model[n][0].data.params["sparsity"], []).append(n)
    for sparsity, names in by_sparsity.items():
        best = max(names, key=lambda n: (models[n]["correct"], -names.index(n)))
        v = client.get_model_version_by_alias("robustprune-pruned", alias_for(sparsity))
        assert models[v.tags[MODEL_TAG]]["correct"] == models[best]["correct"], (
            sparsity,
            v.tags[MODEL_TAG],
            best,
        )
        logged = client.get_logged_model(version_model_id(v))
        metrics = {m.key: m.value for m in logged.metrics}
        chosen = models[v.tags[MODEL_TAG]]
        assert metrics["accuracy"] == pytest.approx(chosen["correct"] / chosen["total"])
        assert metrics["accuracy"] == pytest.approx(chosen["accuracy"])


def test_missing_pool_exits_2_before_running_anything_naming_it(scaleout, tmp_path):
    params = yaml.safe_load((scaleout["root"] / "params.yaml").read_text())
    params["runtime"]["work_pool"] = "nope"
    (scaleout["root"] / "params-nope.yaml").write_text(yaml.safe_dump(params))
    try:
        t0 = time.monotonic()
        res = subprocess.run(
            [sys.executable, "-m", "flows.pipeline", "--params", "params-nope.yaml", "--root", "."],
            cwd=scaleout["root"],
            env=scaleout["env"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        wall = time.monotonic() - t0
    finally:
        (scaleout["root"] / "params-nope.yaml").unlink()
    assert res.returncode == 2, res.stderr[-2000:]
    assert "runtime.work_pool = 'nope'" in res.stderr and "no work pool 'nope'" in res.stderr, res.stderr
    checked = float(res.stderr.split("nothing was run or written (", 1)[1].split("s)", 1)[0])
    # how long the checks took is printed, not asserted (tests check behaviour, never wall time)
    print(f"work_pool: nope -> exit 2 after {wall:.1f} s wall, {checked:.1f} s of checks")


def test_dvc_remote_push_then_a_fresh_clone_pulls_and_reproduces_nothing(scaleout, tmp_path):
    root, env = scaleout["root"], scaleout["env"]
    make = ["make", "-f", str(ROOT / "Makefile"), f"BIN={BIN}", "STAMP=ready", "REQ_HASH=x", "-o", "ready-x"]
    run([*make, "push"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "pipeline ran"], root, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    assert not (clone / "models" / "pruned").exists()
    run([*make, "pull"], clone, env)
    for out in ("models/pruned", "models/soup", "data/prepared", "reports/eval.json"):
        assert (clone / out).exists(), out
    status = run([sys.executable, "-m", "dvc", "status", "--json"], clone, env)
    assert json.loads(status.strip().splitlines()[-1]) == {}, status
    repro = run([sys.executable, "-m", "dvc", "repro"], clone, env)
    assert "Running stage" not in repro, repro


def test_watch_emits_once_for_an_edit_and_the_trigger_starts_the_pipeline(scaleout):
    from flows.watch import EVENT, resource_id, watch_flow

    root = scaleout["root"]
    before = {r.id for r in _flow_runs_of("pipeline/pipeline")}
    clean = watch_flow(root=str(root))
    assert clean == {"stale": [], "event": None}
    text = (root / "params.yaml").read_text()
    params = yaml.safe_load(text)
    params["evaluate"]["batch_size"] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        edited = watch_flow(root=str(root))
    finally:
        (root / "params.yaml").write_text(text)
    assert "evaluate" in edited["stale"] and edited["event"]
    new = wait_for(
        lambda: [r for r in _flow_runs_of("pipeline/pipeline") if r.id not in before],
        "triggered pipeline run",
        120,
    )
    assert len(new) == 1 and new[0].parameters["params_path"] == "params.yaml"
    # The trigger fired, so the server received the event; its event persister writes events to the
    # database in batches (every few seconds), so the query waits for it instead of reading once.
    events = wait_for(lambda: _events(EVENT, resource_id(root)), "persisted watch event", 60)
    assert len(events) == 1 and events[0]["payload"]["stale_stages"] == edited["stale"]


def _events(name: str, resource: str) -> list[dict]:
    from prefect.settings import PREFECT_API_URL

    body = json.dumps(
        {"filter": {"event": {"name": [name]}, "resource": {"id": [resource]}}, "limit": 50}
    ).encode()
    req = urllib.request.Request(
        PREFECT_API_URL.value().rstrip("/") + "/events/filter",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["events"]
