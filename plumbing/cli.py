"""Shared command line of every flow: validate first and fail fast, run, stop cleanly on SIGTERM / SIGINT.

``python -m flows.<stage> --params P --root R``:

1. Validation (exit 2, one line per problem, nothing written): params.yaml (robustprune.config) and the
   inputs it names (robustprune.preflight, plumbing.services). ``flows/__init__.py`` calls :func:`early_validate` when the
   package is imported by ``python -m flows.<stage>``, i.e. before Prefect, MLflow and torch are imported,
   so a bad input costs about a second.
2. The flow runs with the stop flag installed (robustprune.interrupt) and every Prefect run and MLflow run it
   creates tagged with one id for this invocation (:func:`plumbing.signals.run_stoppable`).
3. On SIGTERM or SIGINT the work stops within a step (main thread at once; worker threads at their next
   :func:`robustprune.interrupt.raise_if_stopped`), then :func:`plumbing.signals.finalize_stop` marks this invocation's
   Prefect flow runs Cancelled (Prefect itself records a signal as Crashed; a run on a work pool is asked
   to cancel, so its worker stops it) and its MLflow runs KILLED, prints one line and exits 128 + signal
   (130 for SIGINT, 143 for SIGTERM). Every output is written atomically, so what finished is kept and
   the same command resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from plumbing.dvc_stages import stage_inputs
from plumbing.remote import REMOTE_STANDALONE, remote_deployments
from plumbing.services import PrefectApi, check_work_pool, preflight
from plumbing.signals import run_stoppable
from robustprune.config import ConfigError, load_params
from robustprune.preflight import PreflightError

REPO = Path(__file__).resolve().parent.parent
_validated: set[tuple[str, str, str]] = set()


def parse_args(stage: str, argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=f"python -m flows.{stage}", description=f"Run the '{stage}' flow.")
    default = "params-lm.yaml" if stage == "lm" else "params.yaml"
    ap.add_argument("--params", default=default, help=f"params file (default: {default})")
    ap.add_argument(
        "--root", default=".", help="project root that holds data/, models/, reports/ (default: .)"
    )
    if stage == "pipeline":
        ap.add_argument(
            "--force", action="store_true", help="re-run every stage even if DVC says it is up to date"
        )
    return ap.parse_args(argv)


def prefect_api() -> PrefectApi:
    """The Prefect API this process would use (settings, profile or environment), with its auth header."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    headers = {}
    if api.auth_string:
        import base64

        secret = (
            api.auth_string.get_secret_value()
            if hasattr(api.auth_string, "get_secret_value")
            else api.auth_string
        )
        headers["Authorization"] = "Basic " + base64.b64encode(str(secret).encode()).decode()
    elif api.key:
        secret = api.key.get_secret_value() if hasattr(api.key, "get_secret_value") else api.key
        headers["Authorization"] = f"Bearer {secret}"
    return PrefectApi(api.url, headers)


def validate_or_exit(params_path: str, root: str, stage: str) -> None:
    """Exit 2 with one line per problem when params.yaml or the inputs it names are bad."""
    if (params_path, root, stage) in _validated:
        return
    with exit_2_when_invalid():
        params = load_params(params_path)
        dvc_yaml = REPO / ("lm/dvc.yaml" if stage == "lm" else "dvc.yaml")
        pool = params.runtime.work_pool
        remote = bool(pool) and stage in ("pipeline", *REMOTE_STANDALONE)
        problems = scaleout_problems(params, params_path, root, remote)
        if remote and stage in REMOTE_STANDALONE and params.runtime.storage == "dvc":
            problems.append(
                f"runtime.storage = 'dvc' synchronises the pipeline's GPU stages only; the {stage} flow on "
                f"work pool {pool!r} needs storage: shared (a file system the worker shares)"
            )
        try:
            preflight(
                params,
                Path(root),
                stage,
                prefect_api=prefect_api() if remote and stage == "pipeline" else None,
                remote_deployments=remote_deployments(stage, pool) if remote else (),
                # a stage sent to a worker reads its inputs there
                stage_inputs=None if stage == "pipeline" or remote else stage_inputs(dvc_yaml, stage),
            )
        except PreflightError as e:
            problems.append(str(e))
        if remote and stage != "pipeline":  # a standalone stage on the pool: the pool and its deployment
            problems += check_work_pool(prefect_api(), pool, remote_deployments(stage, pool))
        raise_problems(problems)
    _validated.add((params_path, root, stage))


@contextlib.contextmanager
def exit_2_when_invalid() -> Iterator[None]:
    """Exit 2 with the problems (and the seconds the checks took) when the block finds params or inputs bad."""
    t0 = time.perf_counter()
    try:
        yield
    except (ConfigError, PreflightError) as e:
        print(
            f"error: invalid configuration, nothing was run or written ({time.perf_counter() - t0:.1f}s):\n{e}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def raise_problems(problems: list[str]) -> None:
    """One :class:`PreflightError` naming every problem, one a line; nothing when there is none."""
    if problems:
        raise PreflightError("\n".join(problems))


def scaleout_problems(params, params_path: str, root: str, remote: bool) -> list[str]:  # noqa: ANN001 - Params
    """Task runner installed; with a work pool, a params file the worker can find under the project root."""
    import importlib.util

    out = []
    rt = params.runtime
    wanted = {
        "dask": ("prefect_dask", "prefect-dask (requirements.txt)"),
        "ray": ("prefect_ray", "prefect-ray"),
    }
    if rt.task_runner in wanted and importlib.util.find_spec(wanted[rt.task_runner][0]) is None:
        extra = " (pip install -e '.[ray]')" if rt.task_runner == "ray" else ""
        out.append(
            f"runtime.task_runner = {rt.task_runner!r}: {wanted[rt.task_runner][1]} is not installed{extra}; "
            "use thread or process"
        )
    if remote:
        p = Path(params_path)
        p = (p if p.is_absolute() else Path.cwd() / p).resolve()
        if not p.is_relative_to(Path(root).resolve()):
            out.append(
                f"runtime.work_pool = {rt.work_pool!r}: the params file {params_path!r} is outside the project "
                f"root {str(Path(root).resolve())!r}, so a worker cannot read it; put it under the root"
            )
    if remote and rt.storage == "dvc":
        out += dvc_remote_problems(Path(root))
    return out


def dvc_remote_problems(root: Path) -> list[str]:
    """runtime.storage: dvc: the project is a DVC repository with a default remote (`dvc remote default`)."""
    where = str(root.resolve())
    if not (root / ".dvc").is_dir():
        return [
            f"runtime.storage = 'dvc': {where!r} is not a DVC repository (no .dvc/): dvc init, then "
            "dvc remote add -d <name> <url> (on this host and on the worker's)"
        ]
    from dvc.config import Config  # about 0.2 s: the repository's, local, global and system config merged

    try:
        config = Config(dvc_dir=str(root / ".dvc"), validate=False)
    except Exception as e:  # noqa: BLE001 - a broken config file: one line that says so
        return [
            f"runtime.storage = 'dvc': the DVC config of {where!r} cannot be read ({type(e).__name__}: {e})"
        ]
    name = config["core"].get("remote")
    if not name:
        return [
            f"runtime.storage = 'dvc': no default DVC remote in {where!r} (`dvc remote default` is empty); "
            "on both hosts: dvc remote add -d <name> <url> (credentials in .dvc/config.local)"
        ]
    if not config["remote"].get(name, {}).get("url"):
        return [f"runtime.storage = 'dvc': the default DVC remote {name!r} of {where!r} has no url"]
    return []


def early_validate() -> None:
    """Validate before the heavy imports when this process is ``python -m flows.<stage> ...``.

    Called from flows/__init__.py; while ``-m`` imports the package, ``sys.argv[0]`` is ``"-m"`` and
    ``sys.orig_argv`` holds the command line. Anything else (pytest, a Prefect worker, an import) is left
    alone. Argument errors are left to :func:`main`'s parser.
    """
    argv = getattr(sys, "orig_argv", [])
    if sys.argv[:1] != ["-m"] or "-m" not in argv:
        return
    module = argv[argv.index("-m") + 1] if argv.index("-m") + 1 < len(argv) else ""
    if not module.startswith("flows.") or module.count(".") != 1 or module == "flows.cli":
        return
    stage = module.split(".", 1)[1]
    try:  # quietly: --help and usage errors are main()'s to print, once
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = parse_args(stage, sys.argv[1:])
    except SystemExit:
        return
    validate_or_exit(args.params, args.root, stage)


def main(stage: str, flow_fn: Callable, argv: list[str] | None = None) -> None:
    args = parse_args(stage, argv)
    validate_or_exit(args.params, args.root, stage)
    kwargs = {"params_path": args.params, "root": args.root}
    if stage == "pipeline":
        kwargs["force"] = args.force
    params = load_params(args.params)
    if stage in REMOTE_STANDALONE and params.runtime.work_pool:  # e.g. `make run-lm` on a GPU pool
        from plumbing.remote import remote_env, run_remote

        root = Path(args.root).resolve()
        env = remote_env(params, root, None)

        def flow_fn(params_path: str, root: str) -> object:  # noqa: ARG001 - the same keyword arguments
            return run_remote(stage, params.runtime.work_pool, params_path, Path(root).resolve(), env)

    else:  # runtime.task_runner / max_workers / dask_address from params.yaml (plumbing.runners.task_runner)
        from plumbing.runners import runner_settings, task_runner

        flow_fn = flow_fn.with_options(task_runner=task_runner(runner_settings(params)))
    run_stoppable(stage, flow_fn, kwargs, args.params, args.root)
