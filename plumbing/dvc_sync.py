"""``runtime.storage: dvc``: a checkout per host, synchronised through the default DVC remote.

A worker on ``runtime.work_pool`` has its own checkout (same commit) and no shared disk. For each GPU stage
the pipeline sends to the pool:

1. parent (:func:`before_remote`): every output recorded in its ``dvc.lock`` goes to the remote, and the
   lock itself travels with the run (job variables env: ``ROBUSTPRUNE_DVC_SYNC=1``, and the lock text
   gzip + base64 in ``ROBUSTPRUNE_DVC_LOCK``);
2. worker (:func:`worker_sync`, around the stage flow's body): installs that ``dvc.lock``, pulls the stage's
   inputs (its deps that are other stages' outputs), runs the stage, ``dvc commit``s it, pushes its outputs
   and publishes the stage's new ``dvc.lock`` entry as a Prefect artifact of its flow run;
3. parent (:func:`after_remote`): reads that artifact, writes the entry into its ``dvc.lock``, pulls the
   stage's outputs and checks ``dvc status <stage>`` is clean.

The entry comes back through Prefect (the only channel both hosts share besides the DVC remote) as a
markdown artifact keyed ``dvc-lock-<stage>`` on the remote flow run, not as a Prefect Variable: an artifact
belongs to its flow run (so the key needs no run id in it and nothing global is left to clean up), shows on
the run's page in the UI, and has no size cap, whereas a Variable's value is capped at 5000 characters (a
stage's lock entry, with its params, can be larger).

Outputs with ``cache: false`` (reports/*.json, reports/attacks) are synchronised too: they are stored in
the DVC cache and the remote by the hash ``dvc.lock`` records for them (``dvc push`` alone skips them), and
checked out from there. Everything runs from the repository root.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SYNC_ENV = "ROBUSTPRUNE_DVC_SYNC"
LOCK_ENV = "ROBUSTPRUNE_DVC_LOCK"
MAX_LOCK_CHARS = 64_000  # the encoded lock in the job variables; dvc.lock of the default run: a few KB
FENCE = "```json\n"


def _log() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a flow run (its lines show on the run), else the package logger."""
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run context
        return logging.getLogger("robustprune")


# ------------------------------------------------------------------------------------------- helpers
def encode_lock(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode("ascii")


def decode_lock(data: str) -> str:
    return gzip.decompress(base64.b64decode(data)).decode()


def artifact_key(stage: str) -> str:
    """Prefect artifact keys are lowercase letters, digits and dashes."""
    return f"dvc-lock-{stage.replace('_', '-')}"


@contextlib.contextmanager
def open_repo(root: Path) -> Iterator[Any]:
    """The DVC repository at ``root``, used from ``root`` (DVC resolves some paths against the cwd), locked."""
    from dvc.repo import Repo, lock_repo

    with contextlib.chdir(root), Repo(str(root)) as repo, lock_repo(repo):
        yield repo


def _lock_stages(root: Path) -> dict[str, Any]:
    # DVC's YAML 1.2 reader: PyYAML (1.1) would read a sparsity written as 2:4 as the sexagesimal int 124
    from dvc.utils.serialize import load_yaml

    path = root / "dvc.lock"
    return load_yaml(path).get("stages", {}) if path.is_file() else {}


def _stage(repo: Any, name: str) -> Any:
    (stage,) = repo.stage.collect(name)
    return stage


def _recorded_outs(repo: Any) -> list[Any]:
    """Every output of every stage that has a dvc.lock entry (with a hash)."""
    return [o for s in repo.index.stages for o in s.outs if o.hash_info]


def _as_cached(out: Any) -> Any:
    """Treat a ``cache: false`` output as cached: stored in / checked out from the cache by its lock hash."""
    out.use_cache = True
    return out


def push_outs(repo: Any, outs: list[Any]) -> tuple[int, list[str]]:
    """Store each output in the DVC cache if needed and push it; returns (objects pushed, outputs skipped).

    An output whose files no longer match its dvc.lock hash (a stale stage about to rerun) is skipped.
    """
    pushed, skipped = 0, []
    for out in map(_as_cached, outs):
        if out.changed_cache():
            if not out.exists or out.changed_checksum():
                skipped.append(str(out))
                continue
            out.commit(relink=False)
        for odb, objs in out.get_used_objs(push=True).items():
            result = repo.cloud.push(objs, odb=odb)
            if result.failed:
                raise RuntimeError(f"dvc push: {len(result.failed)} object(s) of {out} could not be uploaded")
            pushed += len(result.transferred)
    return pushed, skipped


def pull_outs(repo: Any, outs: list[Any]) -> list[str]:
    """Fetch each output's objects from the remote and check it out as dvc.lock records it."""
    done = []
    for out in map(_as_cached, outs):
        for odb, objs in out.get_used_objs().items():  # a directory's .dir object is fetched here
            result = repo.cloud.pull(objs, odb=odb)
            if result.failed:
                raise RuntimeError(
                    f"dvc pull: {len(result.failed)} object(s) of {out} are not on the DVC remote"
                )
        out.checkout(force=True)
        done.append(str(out))
    return done


def input_outs(repo: Any, stage: str) -> list[Any]:
    """The outputs of other stages that ``stage`` depends on (what a worker must pull before running it)."""
    deps = {d.def_path for d in _stage(repo, stage).deps}
    return [o for s in repo.index.stages if s.name != stage for o in s.outs if o.def_path in deps]


def _dvc_call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # DVC's errors are many classes; one line that says which step failed
        raise RuntimeError(f"{what}: {type(e).__name__}: {e}") from e


# ------------------------------------------------------------------------------------------- parent
def before_remote(root: Path, stage: str) -> dict[str, str]:
    """Push what dvc.lock records; the job-variable env that sends this lock to the worker."""
    lock = root / "dvc.lock"
    text = lock.read_text() if lock.is_file() else ""
    encoded = encode_lock(text)
    if len(encoded) > MAX_LOCK_CHARS:
        raise RuntimeError(
            f"stage {stage!r}: dvc.lock is {len(encoded)} characters gzip+base64, over the "
            f"{MAX_LOCK_CHARS} that runtime.storage: dvc sends with a run"
        )
    with open_repo(root) as repo:
        pushed, skipped = _dvc_call(f"stage {stage!r}: dvc push", push_outs, repo, _recorded_outs(repo))
    _log().info(
        "stage %r: %d object(s) pushed to the DVC remote%s",
        stage,
        pushed,
        f"; not pushed (changed since dvc.lock): {skipped}" if skipped else "",
    )
    return {SYNC_ENV: "1", LOCK_ENV: encoded}


def read_lock_entry(flow_run: Any, stage: str) -> dict[str, Any]:
    """The stage's dvc.lock entry the worker published as an artifact of ``flow_run``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]),
                key=ArtifactFilterKey(any_=[artifact_key(stage)]),
            )
        )
    if not found:
        raise RuntimeError(
            f"stage {stage!r}: flow run {flow_run.name} ({flow_run.id}) completed without publishing its "
            f"dvc.lock entry (artifact {artifact_key(stage)!r}); is ROBUSTPRUNE_DVC_SYNC handled by the "
            "worker's checkout (same commit)?"
        )
    data = str(max(found, key=lambda a: a.created).data)
    return json.loads(data.split(FENCE, 1)[1].rsplit("```", 1)[0])


def after_remote(root: Path, stage: str, flow_run: Any, record: bool = True) -> list[str]:
    """Write the worker's lock entry into dvc.lock, pull the stage's outputs, check the stage is fresh.

    ``record=False`` (an alternate params profile, which never writes dvc.lock): the entry is used to pull
    the outputs and dvc.lock is put back as it was.
    """
    from dvc.utils.serialize import modify_yaml

    entry = read_lock_entry(flow_run, stage)
    lock = root / "dvc.lock"
    before = lock.read_text() if lock.is_file() else None
    where = f"stage {stage!r} (flow run {flow_run.name}, {flow_run.id})"
    try:
        with modify_yaml(lock) as data:
            data.setdefault("schema", "2.0")
            data.setdefault("stages", {})[stage] = entry
        with open_repo(root) as repo:
            pulled = _dvc_call(f"{where}: dvc pull", pull_outs, repo, list(_stage(repo, stage).outs))
    finally:
        if not record:
            if before is None:
                lock.unlink(missing_ok=True)
            else:
                lock.write_text(before)
    if record:
        with open_repo(root) as repo:
            changed = repo.status(targets=[stage])
        if changed:  # dvc.lock as it was: the stage stays stale (or recorded as before), runs again next time
            if before is None:
                lock.unlink(missing_ok=True)
            else:
                lock.write_text(before)
            raise RuntimeError(
                f"{where}: not up to date after pulling the worker's outputs (dvc status: {changed}); "
                "the worker's checkout must be the same commit with the same params.yaml"
            )
    _log().info("%s: dvc.lock entry from the worker, pulled %s", where, pulled)
    return pulled


# ------------------------------------------------------------------------------------------- worker
@contextlib.contextmanager
def worker_sync(stage: str, root: str | Path) -> Iterator[None]:
    """Around a GPU stage flow's body: a no-op unless ``ROBUSTPRUNE_DVC_SYNC=1`` (set by the pipeline).

    Before: install the pipeline's dvc.lock and pull the stage's inputs. After the body succeeded:
    ``dvc commit`` the stage, push its outputs, publish its lock entry (:func:`read_lock_entry`).
    """
    if os.environ.get(SYNC_ENV) != "1":
        yield
        return
    root = Path(root).resolve()
    if LOCK_ENV not in os.environ:
        raise RuntimeError(f"{SYNC_ENV}=1 without {LOCK_ENV}: the pipeline sends both")
    (root / "dvc.lock").write_text(decode_lock(os.environ[LOCK_ENV]))
    with open_repo(root) as repo:
        pulled = _dvc_call(
            f"stage {stage!r}: dvc pull of its inputs", pull_outs, repo, input_outs(repo, stage)
        )
        # its own persistent outputs as last recorded, when the remote has them (best effort): what the
        # stage resumes from and finds cached, as it would on a shared disk
        resumed = []
        for out in _stage(repo, stage).outs:
            if out.persist and out.hash_info:
                with contextlib.suppress(Exception):
                    resumed += pull_outs(repo, [out])
    _log().info(
        "stage %r: dvc.lock from the pipeline installed; inputs pulled: %s; its previous outputs: %s",
        stage,
        pulled,
        resumed or "none",
    )
    yield
    with open_repo(root) as repo:
        _dvc_call(f"stage {stage!r}: dvc commit", repo.commit, target=stage, force=True)
    with open_repo(root) as repo:
        pushed, skipped = _dvc_call(
            f"stage {stage!r}: dvc push", push_outs, repo, list(_stage(repo, stage).outs)
        )
    if skipped:
        raise RuntimeError(f"stage {stage!r}: outputs {skipped} do not match the dvc.lock just committed")
    entry = _lock_stages(root)[stage]
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        markdown=f"dvc.lock entry of stage `{stage}` (runtime.storage: dvc)\n\n{FENCE}"
        f"{json.dumps(entry, indent=1)}\n```\n",
        key=artifact_key(stage),
        description=f"dvc.lock entry of {stage}, for the pipeline host (plumbing/dvc_sync.py)",
    )
    _log().info("stage %r: committed, %d object(s) pushed, lock entry published", stage, pushed)
