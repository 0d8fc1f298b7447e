"""Shared command line of every flow: validate params.yaml first, fail fast and clearly, then run."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from robustprune.config import ConfigError, load_params
from robustprune.preflight import PreflightError, preflight


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


def validate_or_exit(params_path: str, root: str, stage: str) -> None:
    """Exit 2 with one line per problem when params.yaml or the data it names is bad."""
    t0 = time.perf_counter()
    try:
        params = load_params(params_path)
        preflight(params, Path(root), stage)
    except (ConfigError, PreflightError) as e:
        print(
            f"error: invalid configuration, nothing was run or written ({time.perf_counter() - t0:.1f}s):\n{e}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def main(stage: str, flow_fn: Callable, argv: list[str] | None = None) -> None:
    args = parse_args(stage, argv)
    validate_or_exit(args.params, args.root, stage)
    kwargs = {"params_path": args.params, "root": args.root}
    if stage == "pipeline":
        kwargs["force"] = args.force
    flow_fn(**kwargs)
