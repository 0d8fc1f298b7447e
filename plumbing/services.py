"""The preflight of a run: the library's input checks (:mod:`robustprune.preflight`) and the services the
run needs: with ``runtime.work_pool``, the Prefect API answers, the pool exists and has an online worker, and
every deployment the pipeline sends there exists (:func:`check_work_pool`, plain HTTP with a time budget).

No Prefect import: the caller passes the Prefect API address (:func:`plumbing.cli.prefect_api`) and the
deployment names (:func:`plumbing.remote.remote_deployments`).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from robustprune.config import Params
from robustprune.preflight import PreflightError, input_problems


@dataclass(frozen=True)
class PrefectApi:
    """Where the Prefect API is (None: not configured, Prefect would start a temporary local server)."""

    url: str | None
    headers: Mapping[str, str] = field(default_factory=dict)


def preflight(
    params: Params,
    root: Path,
    stage: str = "pipeline",
    *,
    prefect_api: PrefectApi | None = None,
    remote_deployments: Sequence[str] = (),
    stage_inputs: Sequence[str] | None = None,
    timeout: float = 4.0,
) -> None:
    """Raise PreflightError with one line per problem: the inputs, then (``pipeline`` with a work pool) the
    Prefect API, pool and deployments.

    ``remote_deployments``: the ``flow/deployment`` names the pipeline sends to ``runtime.work_pool``;
    ``stage_inputs``: paths under ``root`` a single stage reads (None: not checked).
    """
    problems = input_problems(params, Path(root), stage, stage_inputs=stage_inputs)
    if stage == "pipeline" and params.runtime.work_pool:
        problems += check_work_pool(
            prefect_api or PrefectApi(None), params.runtime.work_pool, remote_deployments, timeout=timeout
        )
    if problems:
        raise PreflightError("\n".join(problems))


def check_work_pool(
    api: PrefectApi, pool: str, deployments: Sequence[str] = (), *, timeout: float = 4.0
) -> list[str]:
    """Problems that would stop a run sent to work pool ``pool``: unreachable API, no pool, no online
    worker, missing deployments (``flow/deployment`` names). Plain HTTP; all requests share ``timeout``.
    """
    key = f"runtime.work_pool = {pool!r}"
    if not api.url:
        return [
            f"{key}: no Prefect API is configured (PREFECT_API_URL is unset), so no worker can serve the pool; "
            "start a server (prefect server start), set PREFECT_API_URL and start a worker "
            f"(prefect worker start --pool {pool}), or set runtime.work_pool: null to run in-process"
        ]
    deadline = time.monotonic() + timeout
    base = api.url.rstrip("/")

    def call(method: str, path: str, body: object | None = None) -> tuple[int, object]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {timeout:g} s")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **api.headers}
        req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=left) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None

    try:
        status, _ = call("GET", "/health")
        if status != 200:
            return [f"{key}: the Prefect API at {base} answered HTTP {status} to /health"]
        status, info = call("GET", f"/work_pools/{urllib.parse.quote(pool, safe='')}")
        if status == 404:
            return [
                f"{key}: the Prefect API at {base} has no work pool {pool!r}; create it "
                f"(prefect work-pool create {pool} --type process) and start a worker on a CUDA host"
            ]
        if status != 200:
            return [f"{key}: reading the pool from the Prefect API at {base} gave HTTP {status}"]
        problems = []
        if isinstance(info, dict) and info.get("is_paused"):
            problems.append(f"{key}: the work pool is paused (prefect work-pool resume {pool})")
        status, workers = call("POST", f"/work_pools/{urllib.parse.quote(pool, safe='')}/workers/filter", {})
        online = [w for w in workers or [] if isinstance(w, dict) and w.get("status") == "ONLINE"]
        if not online:
            problems.append(
                f"{key}: no online worker serves the pool ({len(workers or [])} known, none online); "
                f"start one on a CUDA host: prefect worker start --pool {pool}"
            )
        for name in deployments:
            status, dep = call("GET", f"/deployments/name/{urllib.parse.quote(name, safe='/')}")
            if status == 404:
                problems.append(
                    f"{key}: deployment {name!r} does not exist; register it (prefect deploy --all)"
                )
            elif status == 200 and isinstance(dep, dict) and dep.get("work_pool_name") not in (None, pool):
                problems.append(
                    f"{key}: deployment {name!r} runs on pool {dep.get('work_pool_name')!r}, not {pool!r}"
                )
        return problems
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return [
            f"{key}: the Prefect API at {base} does not answer ({reason}); start the server or fix "
            "PREFECT_API_URL, or set runtime.work_pool: null to run in-process"
        ]
