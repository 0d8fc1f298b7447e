"""Stage manifests: what each pipeline stage reads, writes and depends on, declared once (issue #27).

Each :class:`Stage` names its inputs and outputs as :class:`~robustprune.layout.Layout` paths, the
params.yaml keys it reads and the flow module it runs (``python -m flows.<stage>``). ``dvc.yaml`` (and
``lm/dvc.yaml``) are generated from these manifests (``python -m plumbing.dvc_stages --write``; ``--check``
says whether they are current): a stage's ``deps`` are the code its flow imports, transitively (the modules
in :data:`NOT_COMPUTING` excepted), then its inputs; its ``params`` are :attr:`Stage.params`; its ``outs``,
``metrics`` and ``plots`` its outputs. ``tests/unit/test_dvc_deps.py`` fails when a stage reads a params key,
touches a path or imports a module its manifest does not name, or when dvc.yaml is not the generated one.

Adding a stage or a dependency: edit :func:`manifests`, run ``python -m plumbing.dvc_stages --write``
(CONTRIBUTING.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from robustprune.layout import Layout

#: project modules that decide how results are written, logged, resumed or shipped, never what they are: a
#: stage's dvc.yaml deps leave them out (module -> why; ``package.*``: every module of the package)
NOT_COMPUTING: dict[str, str] = {
    "flows": "package init: offline environment variables",
    "flows.pipeline": "composes the stage flows; each stage lists its own code",
    "plumbing.*": "run-time plumbing: argument parsing, service preflight, signals, "
    "the detached Prefect server, task runners, remote deployments, DVC status and sync",
    "robustprune": "package init",
    "robustprune.config": "validation: the values a stage reads are its dvc.yaml params",
    "robustprune.checkpoints": "atomic writes of what the stage computed",
    "robustprune.interrupt": "the stop flag (a stopped stage writes nothing partial)",
    "robustprune.layout": "where things are: a stage's paths are its deps and outs",
    "robustprune.preflight": "input checks before a stage starts",
    "robustprune.stages": "these manifests: dvc.yaml itself",
    "tasks": "package init",
    "tasks.common": "paths, cache keys, MLflow run scaffolding",
    "tasks.tracking": "MLflow logging",
}

#: functions that import modules of their package by name (importlib): a stage that imports one depends on
#: every module of the package (function -> why)
DYNAMIC_IMPORTS: dict[str, str] = {
    "robustprune.attacks.build_attack": "imports the recipe module robustprune.registry names for a recipe",
}

#: params.yaml sections no stage's dvc.yaml lists (why): they choose how a stage runs, never what it computes
NOT_COMPUTING_PARAMS: dict[str, str] = {
    "runtime": "device, task runner, work pool, MLflow experiment, progress bars: where and how a stage runs",
}

#: top-level directories a stage may touch that DVC does not track (why)
SCRATCH: dict[str, str] = {
    ".cache": "resumable work state (prune-work, sds-work, soup-work, lm-work), the unpacked offline resources "
    "(or $ROBUSTPRUNE_RESOURCES) and build records: caches keyed by content, rebuilt on demand",
}


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: ``python -m <entry>`` reads ``inputs`` and ``params``, writes ``outs``, ``metrics``
    and ``plots``. Paths are Layout paths (absolute under ``layout.root``); an out under ``reports/`` is small
    and uncached (``cache: false``), any other is a persistent DVC-cached directory (``persist: true``: every
    stage writes atomically and resumes from its own checkpoints, DVC must not delete them first)."""

    name: str
    inputs: tuple[Path, ...] = ()
    outs: tuple[Path, ...] = ()
    metrics: tuple[Path, ...] = ()
    plots: Mapping[Path, Mapping[str, str]] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    #: the module ``python -m`` runs (default ``flows.<name>``)
    entry: str = ""
    #: extra command-line arguments, e.g. ``--params params-lm.yaml``
    args: str = ""
    #: the params file ``params`` are keys of (``params.yaml``: dvc.yaml's default)
    params_file: str = "params.yaml"
    #: the dvc.yaml that holds the stage, relative to the root, and the stage's ``wdir`` relative to it
    dvc_file: str = "dvc.yaml"
    wdir: str = ""
    #: paths the stage's code may touch that dvc.yaml leaves out on purpose (path -> why; a comment in dvc.yaml)
    unlisted: Mapping[Path, str] = field(default_factory=dict)
    #: params keys a function the stage reaches reads on a path the stage never takes (key -> why)
    unread: Mapping[str, str] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.entry or f"flows.{self.name}"

    @property
    def cmd(self) -> str:
        return f"python -m {self.module}" + (f" {self.args}" if self.args else "")

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every path the stage writes: outs, metrics and plots."""
        return (*self.outs, *self.metrics, *self.plots)


def manifests(layout: Layout) -> dict[str, Stage]:
    """Every stage, in dvc.yaml's order (then the LM track's lm/dvc.yaml); ``flows.pipeline`` runs
    attack_resources first and attack before evaluate."""
    lay, rep = layout, layout.reports
    models = (lay.finetuned, lay.soup, lay.pruned, lay.sds, lay.cap)  # every model evaluate and attack read
    combos = ("prune.methods", "prune.sparsities", "sds.methods", "sds.sparsities")
    cap_models = ("cap.sparsities", "cap.modules", "cap.ablations", "cap.structured.sparsities")
    dense = ("finetune.variants", "model.finetuned", "soup.ingredients")  # which dense models there are
    plots = (
        "accuracy_vs_sparsity",
        "attack_vs_sparsity",
        "transfer_vs_sparsity",
        "fidelity_vs_robustness",
        "robustness_frontier",
    )
    stages = (
        Stage(
            "prepare",
            params=("seed", "data", "model", "soup.ingredients"),  # given ingredients: the first is the base
            outs=(lay.data, lay.base_model),
            metrics=(rep / "prepare.json",),
        ),
        Stage(
            "finetune",
            unlisted={
                lay.attack: "read by augment / a2t variants only (none in params.yaml; built first: "
                "flows/pipeline.py); their task cache key hashes it. A profile that uses them should list it too."
            },
            inputs=(lay.data, lay.base_model),
            params=(
                "finetune",
                "model.finetuned",
                "soup.ingredients",
                "data.max_length",
                "evaluate.batch_size",
            ),
            outs=(lay.finetuned,),
            metrics=(rep / "finetune.json",),
        ),
        Stage(
            "soup",
            inputs=(lay.data, lay.finetuned, lay.attack),
            params=(
                "finetune.variants",
                "model.finetuned",
                "soup",
                "attack.shard_size",
                "attack.batch_size",
                "attack.textfooler",
                "attack.validity",
                "data.max_length",
                "evaluate.batch_size",
            ),
            unread={
                "attack.query_budget": "the shared attack-shard task reads it for the attack stage only "
                "(query_budget='attack'); the soup passes soup.attack.query_budget"
            },
            outs=(lay.soup,),
            metrics=(rep / "soup.json",),
        ),
        Stage(
            "calibrate",
            inputs=(lay.data, lay.base_model),
            params=("calibrate.num_samples", "calibrate.seed", "data.max_length"),
            outs=(lay.calibration,),
            metrics=(rep / "calibrate.json",),
        ),
        Stage(
            "prune",
            inputs=(lay.soup, lay.finetuned, lay.calibration, lay.data),
            params=("prune", "soup.prune_source", *dense, "calibrate.batch_size"),
            outs=(lay.pruned, rep / "prune.json"),
        ),
        Stage(
            "sds",
            inputs=(lay.soup, lay.finetuned, lay.pruned, lay.calibration, lay.data),
            params=(
                "sds",
                "soup.prune_source",
                *dense,
                "prune",
                "calibrate.batch_size",
                "evaluate.batch_size",
                "data.max_length",
            ),
            outs=(lay.sds, rep / "sds.json"),
        ),
        Stage(
            "cap",
            inputs=(lay.base_model, lay.soup, lay.finetuned, lay.data),
            params=("cap", "soup.prune_source", *dense, "data.max_length", "evaluate.batch_size"),
            outs=(lay.cap, rep / "cap.json"),
        ),
        Stage(
            "evaluate",
            inputs=(lay.data, rep / "attacks", *models),
            params=(
                "evaluate",
                "data.max_length",
                "soup.prune_source",
                *dense,
                "attack.recipes",
                "prune.modules",
                *combos,
                *cap_models,
            ),
            outs=(rep / "eval.json",),
        ),
        Stage(
            "attack_resources",
            inputs=(lay.data,),
            params=("attack.resources", "data.max_length"),
            outs=(lay.attack,),
        ),
        Stage(
            "attack",
            inputs=(lay.attack, lay.data, *models, rep / "soup.json"),
            params=(
                "attack.recipes",
                "attack.models",
                "attack.num_examples",
                "attack.more",
                "attack.seed",
                "attack.query_budget",
                "attack.batch_size",
                "attack.shard_size",
                "attack.textfooler",
                "attack.validity",
                "data.max_length",
                *dense,
                *combos,
                *cap_models,
            ),
            outs=(rep / "attack.json", rep / "attacks"),
        ),
        Stage(
            "report",
            inputs=(
                lay.attack,  # the polarity lexicons of the validity judgements
                rep / "attacks",
                *(
                    rep / f"{s}.json"
                    for s in ("cap", "prepare", "finetune", "soup", "prune", "sds", "eval", "attack")
                ),
            ),
            unlisted={
                m: "registered as MLflow models (tasks.tracking), not what the report says" for m in models
            },
            params=(
                "report",
                "attack.recipes",
                "attack.models",
                "attack.more",
                "attack.num_examples",
                "attack.seed",
                "attack.validity",
                *dense,
                *combos,
                *cap_models,
            ),
            outs=(rep / "summary.md", *(rep / "plots" / f"{p}.png" for p in plots)),
            metrics=(rep / "metrics.json",),
            plots={
                rep / "plots" / "accuracy_vs_sparsity.csv": {
                    "x": "sparsity",
                    "y": "accuracy",
                    "template": "linear",
                    "title": "Test accuracy vs sparsity (per method)",
                }
            },
        ),
        Stage(
            "lm",
            dvc_file="lm/dvc.yaml",
            wdir="..",
            args="--params params-lm.yaml",
            params_file="params-lm.yaml",
            # llm-compressor's perplexities (flows/lm.py LLMC_REFERENCE): a column of reports/lm.md
            inputs=(lay.root / "benchmarks" / "results" / "smollm2_vs_llmc.json",),
            unlisted={
                lay.root / "models" / "lm": "the converted causal LM, a cache keyed by lm.model (gitignored)",
                lay.root
                / "data"
                / "lm": "the tokenized text of the perplexity protocol, a cache (gitignored)",
            },
            params=("seed", "lm"),
            outs=(rep / "lm.md", rep / "plots" / "lm_perplexity.png"),
            metrics=(rep / "lm.json",),
        ),
    )
    return {s.name: s for s in stages}
