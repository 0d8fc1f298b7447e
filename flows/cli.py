"""The ``robustprune`` command: the pipeline's flows for a model you already have.

::

    robustprune prune MODEL [--data FILE] [--method rakp] [--sparsity 0.875] [--out DIR] [--format ...]
    robustprune attack MODEL [--data FILE] [--recipes textfooler,textbugger]
    robustprune report [--root DIR]
    robustprune run [--params FILE] [--force]

``prune`` and ``attack`` write a params file, the base params (``--params``, else ``./params.yaml`` when
there is one, else the code's defaults) with the command's values set (``model.finetuned: MODEL``,
``data.source``, one ``prune`` combination, ``attack.models``...), into a work directory (``--workdir``,
default ``.robustprune/<model>-<digest>``), validate it the way ``python -m flows.<stage>`` does (exit 2,
one line per problem, nothing written), and run the pipeline flow on it (``flows.pipeline``, limited to the
stages the command needs): the same Prefect tasks, caches, MLflow runs and resumption as ``make run``,
not a second code path. ``prune --out DIR`` then ships the model (``tasks/export.py``). A causal LM given to
``prune`` goes through the causal-LM track (``flows.lm``, ``params-lm.yaml``: perplexity, no attacks).
``report`` and ``run`` are ``python -m flows.report`` / ``python -m flows.pipeline``.

Nothing heavy is imported before the arguments and the params are validated: a bad argument costs well
under a second and prints one line naming the option (exit 2).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import flows  # noqa: F401  (offline, telemetry-free environment defaults)
from plumbing.cli import exit_2_when_invalid, raise_problems, scaleout_problems
from plumbing.cli import main as run_stage
from plumbing.services import preflight
from plumbing.signals import run_stoppable
from robustprune.config import (
    ATTACK_RECIPES,
    BUILTIN_LMS,
    FINETUNED_NAME,
    PRUNE_METHODS,
    Params,
    combo_label,
    parse_params,
    parse_sparsity,
    read_params_text,
    sparsity_label,
    yaml_mapping,
)
from robustprune.preflight import PreflightError
from robustprune.registry import RAKP

REPO = Path(__file__).resolve().parent.parent
FORMATS = ("safetensors", "compressed-tensors")
#: the stages each command runs (flows.pipeline.STAGES order); SDS and CAP prune other models than the one asked
PRUNE_STAGES = (
    "prepare",
    "attack_resources",
    "finetune",
    "soup",
    "calibrate",
    "prune",
    "attack",
    "evaluate",
    "report",
)
ATTACK_STAGES = ("prepare", "attack_resources", "finetune", "soup", "attack")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``robustprune prune: error: argument --sparsity: ...`` and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


# ------------------------------------------------------------------------------------ argument types
def _looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).expanduser().exists()


def model_arg(value: str) -> str:
    """A saved model directory (made absolute) or a hub name / built-in name."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty model name")
    if not _looks_local(value):
        return value
    path = Path(value).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{value!r}: no such directory (a directory saved by save_pretrained)"
        )
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{value!r}: no config.json (a directory saved by save_pretrained)")
    return str(path.resolve())


def data_arg(value: str) -> str:
    """A local data file (made absolute), the built-in data set, or a hub data set name."""
    if _looks_local(value) or Path(value).suffix.lower() in (
        ".csv",
        ".tsv",
        ".jsonl",
        ".json",
        ".parquet",
        ".txt",
    ):
        path = Path(value).expanduser()
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"{value!r}: no such file")
        return str(path.resolve())
    return value


def sparsity_arg(value: str) -> str:
    try:
        parse_sparsity(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return sparsity_label(value)


def recipes_arg(value: str) -> list[str]:
    """Comma-separated recipes; ``none`` attacks nothing."""
    if value.strip().lower() in ("", "none"):
        return []
    recipes = [r.strip() for r in value.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in ATTACK_RECIPES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown recipe(s) {unknown}; choose from {list(ATTACK_RECIPES)} or none"
        )
    if len(set(recipes)) != len(recipes):
        raise argparse.ArgumentTypeError(f"recipes repeated in {value!r}")
    return recipes


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return n


def params_file_arg(value: str) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r}: no such file")
    return str(path.resolve())


def _add_model_options(p: argparse.ArgumentParser, attack_default: str) -> None:
    p.add_argument(
        "model", metavar="MODEL", type=model_arg, help="a directory saved by save_pretrained, or a hub name"
    )
    p.add_argument(
        "--data",
        type=data_arg,
        help="labelled texts: .csv/.tsv/.jsonl/.json/.parquet (a .txt for a causal LM), or a hub data set "
        "(default: data.source of the base params)",
    )
    p.add_argument("--text-column", help="text column of --data (default: data.text_column)")
    p.add_argument("--label-column", help="label column of --data (default: data.label_column)")
    p.add_argument(
        "--recipes",
        type=recipes_arg,
        help=f"comma-separated attacks ({', '.join(ATTACK_RECIPES)}) or none (default: {attack_default})",
    )
    p.add_argument(
        "--examples", type=positive_int, help="attacked test examples (default: attack.num_examples)"
    )
    p.add_argument(
        "--params",
        type=params_file_arg,
        help="base params file (default: ./params.yaml if present, else the code's defaults)",
    )
    p.add_argument(
        "--workdir",
        help="project root of this run: data/, models/, reports/ (default: .robustprune/<model>-<digest>)",
    )


def build_parser() -> Parser:
    ap = Parser(
        prog="robustprune",
        description="Prune, evaluate and attack a model you already have, with the pipeline's flows.",
    )
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    p = sub.add_parser(
        "prune",
        help="prune MODEL, evaluate it and attack it; ship it with --out",
        description="Prune MODEL (a fine-tuned sequence classifier; a causal LM goes through the LM track) with "
        "one method and sparsity, evaluate and attack it beside the dense model, and ship it with --out.",
    )
    _add_model_options(p, "attack.recipes of the base params")
    p.add_argument(
        "--method", choices=PRUNE_METHODS, default=RAKP.name, help=f"pruning method (default: {RAKP.name})"
    )
    p.add_argument(
        "--sparsity",
        type=sparsity_arg,
        default="0.875",
        help="a fraction (0.875) or N:M (2:4) (default: 0.875)",
    )
    p.add_argument(
        "--out", help="write the pruned model here (safetensors + config + tokenizer + robustprune.json)"
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="safetensors",
        help="weights in --out: safetensors (dense) or compressed-tensors (sparse-bitmask, 2:4 for 2:4)",
    )
    p.add_argument("--force", action="store_true", help="run every stage even if DVC says it is up to date")
    a = sub.add_parser(
        "attack",
        help="attack MODEL as it is (no pruning); per-example outcomes in reports/attacks/",
        description="Attack MODEL (a fine-tuned sequence classifier) on the seeded test rows: the attack stage "
        f"of the pipeline, the model named {FINETUNED_NAME!r}.",
    )
    _add_model_options(a, "attack.recipes of the base params")
    a.add_argument("--force", action="store_true", help=argparse.SUPPRESS)
    r = sub.add_parser("report", help="rebuild and print a run's report (python -m flows.report)")
    r.add_argument(
        "--root", default=".", help="the run's project root (default: .; a --workdir of prune/attack)"
    )
    r.add_argument("--params", help="params file (default: ROOT/params.yaml)")
    u = sub.add_parser("run", help="the whole pipeline (python -m flows.pipeline)")
    u.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    u.add_argument("--root", default=".", help="project root (default: .)")
    u.add_argument(
        "--force", action="store_true", help="re-run every stage even if DVC says it is up to date"
    )
    return ap


# ----------------------------------------------------------------------------------- params overlay
def base_params(path: str | None, default: str) -> tuple[dict[str, Any], str]:
    """The base params as a mapping and where they came from."""
    if path is None and Path(default).is_file():
        path = default
    if path is None:
        return {}, "the code's defaults"
    p = Path(path)
    return yaml_mapping(read_params_text(p), p), str(p)


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def _absolute_tracking(raw: dict[str, Any], cwd: Path) -> None:
    """A relative sqlite store of the base params stays the caller's (``./mlruns.db``), not the workdir's."""
    uri = str((raw.get("runtime") or {}).get("mlflow_uri", "sqlite:///mlruns.db"))
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        _set(raw, "runtime.mlflow_uri", f"sqlite:///{(cwd / uri.removeprefix('sqlite:///')).resolve()}")


def classifier_overlay(args: argparse.Namespace, raw: dict[str, Any], command: str) -> dict[str, Any]:
    """The base params with the command's values: the given classifier as the dense reference."""
    _set(raw, "model.finetuned", args.model)
    _set(raw, "soup.ingredients", [])
    if args.data:
        _set(raw, "data.source", args.data)
    if args.text_column:
        _set(raw, "data.text_column", args.text_column)
    if args.label_column:
        _set(raw, "data.label_column", args.label_column)
    if command == "prune":
        _set(raw, "prune.methods", [args.method])
        _set(raw, "prune.sparsities", [args.sparsity])
    attacked = [FINETUNED_NAME] + ([combo_label(args.method, args.sparsity)] if command == "prune" else [])
    _set(raw, "attack.models", attacked)
    _set(raw, "attack.more.models", [])
    if args.recipes is not None:
        _set(raw, "attack.recipes", args.recipes)
    if args.examples is not None:
        _set(raw, "attack.num_examples", args.examples)
    # the stages that prune other models (SDS, CAP) do not run: their sections name no models
    _set(raw, "sds.methods", [])
    _set(raw, "sds.sparsities", [])
    for key, value in (
        ("cap.sparsities", []),
        ("cap.ablations", []),
        ("cap.ramp_steps", 0),
        ("cap.hold_steps", 0),
        ("cap.structured.sparsities", []),
    ):
        _set(raw, key, value)
    return raw


def lm_overlay(args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    """params-lm.yaml (or the base params) with the causal LM, one method and one sparsity, no SDS."""
    _set(raw, "lm.model", args.model)
    _set(raw, "lm.methods", [args.method])
    _set(raw, "lm.sparsities", [args.sparsity])
    _set(raw, "lm.sds.methods", [])
    if args.data:
        _set(raw, "lm.text", args.data)
    return raw


OVERLAY_MARK = "# written by `robustprune "


def workdir_for(args: argparse.Namespace) -> Path:
    """``--workdir``, or ``.robustprune/<model>-<digest of model and data>``; never a directory whose
    params.yaml someone else wrote (a project's own would be overwritten)."""
    if args.workdir:
        root = Path(args.workdir).expanduser().resolve()
        own = root / "params.yaml"
        if own.is_file() and not own.read_text(errors="replace").startswith(OVERLAY_MARK):
            print(
                f"robustprune {args.command}: error: argument --workdir: {str(root)!r} holds a params.yaml that "
                "robustprune did not write (a project's own?); choose another directory",
                file=sys.stderr,
            )
            raise SystemExit(2)
        return root
    digest = hashlib.sha256(json.dumps([args.model, args.data]).encode()).hexdigest()[:8]
    name = Path(args.model.rstrip("/")).name or "model"
    return (Path.cwd() / ".robustprune" / f"{name}-{digest}").resolve()


def is_causal_lm(model: str) -> bool:
    """Whether MODEL is a causal LM (its config's architectures; a hub name asks transformers' cache/hub)."""
    if model in BUILTIN_LMS:
        return True
    path = Path(model)
    if path.is_dir():
        try:
            archs = json.loads((path / "config.json").read_text()).get("architectures") or []
        except (OSError, ValueError):
            return False  # preflight says what is wrong with it
    else:
        try:
            from transformers import AutoConfig

            archs = AutoConfig.from_pretrained(model).architectures or []
        except (OSError, ValueError):
            return False  # preflight / the finetune stage say it cannot be read
    return any(str(a).endswith("ForCausalLM") for a in archs)


def validate(raw: dict[str, Any], source: str, root: Path, stage: str) -> Params:
    """params (in memory) and the inputs they name, as ``python -m flows.<stage>`` checks them; exit 2."""
    with exit_2_when_invalid():
        params = parse_params(raw, source)
        problems = scaleout_problems(params, str(root / "params.yaml"), str(root), False)
        try:
            preflight(params, root, stage)
        except PreflightError as e:
            problems.append(str(e))
        raise_problems(problems)
    return params


def write_overlay(root: Path, raw: dict[str, Any], base_from: str, command: str) -> Path:
    import yaml

    from robustprune.checkpoints import write_text

    header = (
        f"{OVERLAY_MARK}{command}` ({' '.join(sys.argv[1:])}); base: {base_from}\n"
        "# the pipeline's params with the command's values: rerun with `robustprune report --root "
        f"{root}` or `python -m flows.pipeline --params {root / 'params.yaml'} --root {root}`\n"
    )
    return write_text(root / "params.yaml", header + yaml.safe_dump(raw, sort_keys=False))


def _shared_caches() -> None:
    """Runs in a work directory reuse the checkout's downloaded wheels and unpacked resources."""
    os.environ.setdefault("ROBUSTPRUNE_WHEELS", str(REPO / ".cache" / "wheels"))
    os.environ.setdefault("ROBUSTPRUNE_RESOURCES", str(REPO / ".cache" / "resources"))


# ----------------------------------------------------------------------------------------- commands
def cmd_model(args: argparse.Namespace, command: str) -> int:
    if command == "prune" and args.format == "compressed-tensors":
        import importlib.util

        if importlib.util.find_spec("compressed_tensors") is None:
            print(
                "robustprune prune: error: argument --format: the compressed-tensors package is not installed "
                "(pip install compressed-tensors==0.14.0.1, as requirements.txt pins it)",
                file=sys.stderr,
            )
            return 2
    lm = command == "prune" and is_causal_lm(args.model)
    if command == "attack" and is_causal_lm(args.model):
        print(
            "robustprune attack: error: argument MODEL: a causal LM; the attacks need a sequence classifier",
            file=sys.stderr,
        )
        return 2
    if lm and (args.recipes or args.examples):
        print(
            "robustprune prune: error: argument --recipes/--examples: a causal LM is not attacked",
            file=sys.stderr,
        )
        return 2
    raw, base_from = base_params(args.params, "params-lm.yaml" if lm else "params.yaml")
    raw = lm_overlay(args, raw) if lm else classifier_overlay(args, raw, command)
    _absolute_tracking(raw, Path.cwd())
    root = workdir_for(args)
    stage = "lm" if lm else "pipeline"
    params = validate(raw, f"robustprune {command}", root, stage)
    params_path = write_overlay(root, raw, base_from, command)
    _shared_caches()
    from plumbing.runners import runner_settings, task_runner

    kwargs: dict[str, Any] = {"params_path": str(params_path), "root": str(root)}
    if lm:
        from flows.lm import lm_flow

        flow_fn = lm_flow
    else:
        from flows.pipeline import pipeline

        flow_fn = pipeline
        kwargs |= {"force": args.force, "stages": list(PRUNE_STAGES if command == "prune" else ATTACK_STAGES)}
    flow_fn = flow_fn.with_options(task_runner=task_runner(runner_settings(params)))
    run_stoppable(stage, flow_fn, kwargs, str(params_path), str(root))
    print(summary(params, root, command, args, lm))
    if command == "prune" and args.out:
        record = ship(params, root, args, lm)
        w = record["weights"]
        print(
            f"shipped {args.out}: {w['format']} weights {w['bytes']:,} bytes "
            f"({100 * w['ratio']:.1f}% of the dense safetensors' {w['dense_bytes']:,}); record in "
            f"{Path(args.out) / 'robustprune.json'}"
        )
    return 0


def ship(params: Params, root: Path, args: argparse.Namespace, lm: bool) -> dict:
    from tasks.common import Layout
    from tasks.export import ship_classifier, ship_lm

    fn = ship_lm if lm else ship_classifier
    return fn(
        params, Layout(root), args.method, args.sparsity, Path(args.out).expanduser().resolve(), args.format
    )


def summary(params: Params, root: Path, command: str, args: argparse.Namespace, lm: bool) -> str:
    """What the run measured, with its intervals (from the reports the stages wrote)."""
    from robustprune.checkpoints import read_json
    from robustprune.stats import rate

    reports = root / "reports"
    lines = [f"robustprune {command}: run in {root} (params {root / 'params.yaml'})"]
    if lm:
        for row in read_json(reports / "lm.json"):
            lines.append(f"  {row['name']}: perplexity {row['ppl']:.2f}")
        return "\n".join(lines)
    if command == "prune" and (reports / "metrics.json").is_file():
        metrics = read_json(reports / "metrics.json")
        for name, m in metrics["models"].items():
            a = m["accuracy"]
            lines.append(
                f"  {name}: clean accuracy {rate(a['k'], a['n']).pct(1)} % on {a['n']} test examples"
            )
        for key, entry in metrics.get("attack", {}).items():
            r = entry.get("accuracy_under_attack")
            if r:
                lines.append(f"  {key}: accuracy under attack {rate(r['k'], r['n']).pct(1)} % on {r['n']}")
        lines.append(f"  report: {reports / 'summary.md'}")
    elif (reports / "attack.json").is_file():
        for row in read_json(reports / "attack.json"):
            r = rate(row["num_failed"], row["num_examples"])
            lines.append(
                f"  {row['model']} / {row['recipe']}: accuracy under attack {r.pct(1)} % on {row['num_examples']}"
                f" (per example: {reports / 'attacks' / row['model'] / (row['recipe'] + '.csv')})"
            )
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    from flows.report import report_flow

    params = args.params or str(Path(args.root) / "params.yaml")
    run_stage("report", report_flow, ["--params", params, "--root", args.root])
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flows.pipeline import pipeline

    run_stage(
        "pipeline",
        pipeline,
        ["--params", args.params, "--root", args.root, *(["--force"] if args.force else [])],
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("prune", "attack"):
        return cmd_model(args, args.command)
    if args.command == "report":
        return cmd_report(args)
    return cmd_run(args)


def entry() -> None:
    """The ``robustprune`` console script."""
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
