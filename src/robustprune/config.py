"""params.yaml, validated once.

Every hyper-parameter of the pipeline lives in ``params.yaml``; this module turns it into frozen pydantic
objects (one model per top-level section) and turns every validation failure into one readable line
that names the key, the value and what is allowed. It imports nothing heavy so that bad input fails in
well under a second, before torch or the orchestration stack is imported.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robustprune import registry

DEFAULT_PARAMS = Path("params.yaml")
BUILTIN_DATA = ("rotten_tomatoes",)
BUILTIN_MODELS = ("minilm",)
PRUNE_METHODS = tuple(registry.METHODS)  # robustprune.registry declares each method and recipe once
ATTACK_RECIPES = tuple(registry.RECIPES)
#: the types of a method / recipe name in the params (pydantic lists the allowed values in its errors)
PruneMethodName = Literal[PRUNE_METHODS]  # type: ignore[valid-type]
AttackRecipeName = Literal[ATTACK_RECIPES]  # type: ignore[valid-type]
SoupRecipeName = Literal[(*ATTACK_RECIPES, registry.PROXY.name)]  # type: ignore[valid-type]
ATTACK_MODEL_GROUPS = ("all", "soups", "variants", "pruned", "sds", "cap", "best-ingredient")
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


class ConfigError(ValueError):
    """params.yaml is malformed; the message lists every problem, one per line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where the text-classification data comes from and how it is split."""

    source: str = "rotten_tomatoes"
    hub_config: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    validation_size: Annotated[int, Field(gt=0)] | Annotated[float, Field(gt=0, lt=1)] = 500
    test_size: Annotated[int, Field(gt=0)] | Annotated[float, Field(gt=0, lt=1)] = 500
    max_train_examples: Annotated[int, Field(gt=0)] | None = 6000
    max_length: Annotated[int, Field(ge=8, le=4096)] = 64

    @property
    def kind(self) -> Literal["builtin", "file", "hub"]:
        if self.source in BUILTIN_DATA:
            return "builtin"
        if (
            Path(self.source).suffix.lower() in _TABLE_SUFFIXES
            or "/" in self.source
            and Path(self.source).exists()
        ):
            return "file"
        return "hub"

    @model_validator(mode="after")
    def _file_exists(self) -> DataConfig:
        if self.kind == "file" and not Path(self.source).is_file():
            raise ValueError(
                f"data file {self.source!r} does not exist (data.source must be one of {list(BUILTIN_DATA)}, "
                f"an existing {'/'.join(_TABLE_SUFFIXES)} file, or a hub dataset name)"
            )
        return self


#: the name of the dense reference when ``model.finetuned`` is set (models/finetuned/<it>, reports, attack.models)
FINETUNED_NAME = "finetuned"


def _looks_local(v: str) -> bool:
    """A value meant as a local path (it exists, or starts like one) rather than a hub name."""
    return v.startswith((".", "/", "~")) or Path(v).expanduser().exists()


def _saved_dir_problem(v: str) -> str | None:
    """Why a value that looks like a local directory cannot be a saved Hugging Face model (cheap checks)."""
    p = Path(v).expanduser()
    if not p.exists():
        return f"no such directory {v!r} (a hub name, or a directory saved by save_pretrained)"
    if not (p / "config.json").is_file():
        return f"directory {v!r} has no config.json (use a directory saved by save_pretrained)"
    return None


class ModelConfig(_Section):
    """The pre-trained encoder (the embedded offline default, a hub name or a local directory), or a
    classifier fine-tuned elsewhere (``finetuned``) that is pruned as it is."""

    name: str = "minilm"
    # a sequence classifier you already fine-tuned (local directory or hub name): the dense reference that is
    # pruned, evaluated and attacked; no fine-tuning, no soup (docs/own-model.md)
    finetuned: str | None = None

    @property
    def kind(self) -> Literal["builtin", "local", "hub"]:
        if self.name in BUILTIN_MODELS:
            return "builtin"
        return "local" if Path(self.name).exists() else "hub"

    @field_validator("name")
    @classmethod
    def _local_dir(cls, v: str) -> str:
        p = Path(v)
        if (v.startswith((".", "/")) or p.exists()) and not (p / "config.json").is_file():
            raise ValueError(
                f"model directory {v!r} has no config.json (use {list(BUILTIN_MODELS)}, a hub name "
                "or a directory saved by save_pretrained)"
            )
        return v

    @field_validator("finetuned")
    @classmethod
    def _finetuned_dir(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("an empty name; use null to fine-tune model.name into the soup's ingredients")
        if v is not None and _looks_local(v) and (problem := _saved_dir_problem(v)):
            raise ValueError(problem)
        return v


class FreeLBConfig(_Section):
    """FreeLB adversarial training (Zhu et al. 2020): K ascent steps on the input word embeddings."""

    steps: Annotated[int, Field(ge=0, le=100)] = 2  # K (0 = plain training)
    step_size: Annotated[float, Field(gt=0, le=100)] = 0.1  # adv-lr
    # L2 bound of the perturbation per example; 0 = unbounded (the reference's adv_max_norm 0)
    max_norm: Annotated[float, Field(ge=0, le=1000)] = 0.6
    init_mag: Annotated[float, Field(ge=0, le=1000)] = 0.2  # magnitude of the random start
    share_dropout: bool = False  # one dropout mask per batch for the K steps (the reference's dp_masks)


class AugmentMix(_Section):
    """Weights of the candidate spaces a copy is drawn from (robustprune.augment): TextFooler's counter-fitted
    neighbours, BERT-Attack's masked-LM words, TextBugger's character bugs."""

    embedding: Annotated[float, Field(ge=0)] = 1.0
    mlm: Annotated[float, Field(ge=0)] = 1.0
    char: Annotated[float, Field(ge=0)] = 1.0

    @model_validator(mode="after")
    def _some(self) -> AugmentMix:
        if self.embedding + self.mlm + self.char <= 0:
            raise ValueError("augment.mix: at least one weight must be positive")
        return self


class AugmentConfig(_Section):
    """Input-space augmentation (robustprune.augment): perturbed copies from the attacks' candidate spaces,
    drawn anew every epoch, no victim queries."""

    copies: Annotated[int, Field(ge=1, le=20)] = 1  # perturbed copies of every training text per epoch
    fraction: Annotated[float, Field(gt=0, le=1)] = 0.2  # share of a text's words replaced (at least one)
    mix: AugmentMix = AugmentMix()
    neighbours: Annotated[int, Field(ge=1, le=200)] = 50  # TextFooler's N
    min_cos_sim: Annotated[float, Field(ge=-1, le=1)] = 0.5  # TextFooler's word-embedding cosine
    mlm_candidates: Annotated[int, Field(ge=1, le=1000)] = 48  # BERT-Attack's K
    seed: int = 0


class A2TConfig(_Section):
    """Attack-in-the-loop adversarial training (A2T, Yoo & Qi 2021) through textattack's Trainer
    (robustprune.a2t): after num_clean_epochs, every attack_epoch_interval epochs the model being trained is
    attacked with A2T's cheap recipe and its successful adversarial texts join the training set."""

    num_train_adv_examples: Annotated[int, Field(ge=-1)] | Annotated[float, Field(gt=0, le=1)] = 0.2
    attack_epoch_interval: Annotated[int, Field(ge=1)] = 1
    query_budget_train: Annotated[int, Field(gt=0)] | None = None
    num_clean_epochs: Annotated[int, Field(ge=0)] = 1
    alpha: Annotated[float, Field(ge=0)] = 1.0  # weight of the adversarial examples' loss

    @field_validator("num_train_adv_examples")
    @classmethod
    def _count(cls, v: int | float) -> int | float:
        if isinstance(v, int) and v == 0:
            raise ValueError("num_train_adv_examples: a count > 0, -1 (every training example) or a fraction")
        return v


class Variant(_Section):
    """One fine-tuned ingredient of the soup (RAKP's recipe table: lr, optimiser, epochs, decay, adversary)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    learning_rate: Annotated[float, Field(gt=0, lt=1)]
    epochs: Annotated[float, Field(gt=0, le=100)] = 1
    seed: int = 0
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9  # sgd only
    weight_decay: Annotated[float, Field(ge=0, le=1)] | None = None  # None: finetune.weight_decay
    adversarial: FreeLBConfig | None = None  # FreeLB settings; null = plain training
    augment: AugmentConfig | None = (
        None  # input-space copies from the attacks' candidate spaces (combines with FreeLB)
    )
    a2t: A2TConfig | None = (
        None  # attack-in-the-loop through textattack's Trainer (alone: no FreeLB, no augment)
    )

    @model_validator(mode="after")
    def _a2t_alone(self) -> Variant:
        if self.a2t is not None:
            if self.adversarial is not None or self.augment is not None:
                raise ValueError(
                    f"variant {self.name!r}: a2t trains through textattack's Trainer; it cannot be "
                    "combined with adversarial (FreeLB) or augment"
                )
            if self.optimizer != "adamw" or self.epochs != int(self.epochs):
                raise ValueError(
                    f"variant {self.name!r}: a2t runs textattack's Trainer (AdamW, whole epochs); "
                    f"got optimizer {self.optimizer!r}, epochs {self.epochs}"
                )
            if self.a2t.num_clean_epochs > self.epochs:
                raise ValueError(
                    f"variant {self.name!r}: a2t.num_clean_epochs {self.a2t.num_clean_epochs} > "
                    f"epochs {self.epochs}"
                )
        return self

    def uses_attack_resources(self) -> bool:
        """Whether training this ingredient reads the attack_resources stage's bundle (models/attack)."""
        return self.augment is not None or self.a2t is not None


class FinetuneConfig(_Section):
    batch_size: Annotated[int, Field(gt=0, le=4096)] = 32
    head_seed: int = 0
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.06
    # params.yaml's five half-epoch ingredients (RAKP Sec. 4.1: learning rate, optimiser, decay, adversary)
    variants: Annotated[list[Variant], Field(min_length=1)] = [
        Variant(name="lr5e-5-s0", learning_rate=5e-5, epochs=0.5, seed=0),
        Variant(name="lr3e-5-s1", learning_rate=3e-5, epochs=0.5, seed=1),
        Variant(name="lr8e-5-s2", learning_rate=8e-5, epochs=0.5, seed=2),
        Variant(
            name="adam-lr5e-5-s3", learning_rate=5e-5, epochs=0.5, seed=3, optimizer="adam", weight_decay=1e-3
        ),
        Variant(name="freelb-lr5e-5-s4", learning_rate=5e-5, epochs=0.5, seed=4, adversarial=FreeLBConfig()),
    ]

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, v: list[Variant]) -> list[Variant]:
        names = [x.name for x in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"variant names must be unique, repeated: {dup}")
        return v


class SoupAttackConfig(_Section):
    """The validation attack that ranks ingredients and judges candidate soups (soup.criterion = robustness);
    a2t: A2T's cheap attack (robustprune.a2t) as a proxy for TextFooler (benchmarks/robust_training.py measures
    how their rankings agree)."""

    recipe: SoupRecipeName = registry.TEXTFOOLER.name
    num_examples: Annotated[int, Field(gt=0, le=100_000)] = 25
    seed: int = 0
    query_budget: Annotated[int, Field(gt=0)] | None = None


_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class SoupIngredient(_Section):
    """A checkpoint you already have, as a soup ingredient: its name in reports and where it is."""

    name: Annotated[str, Field(pattern=_NAME_PATTERN)]
    path: str


def ingredient_name(path: str, index: int) -> str:
    """The report name of an ingredient given by path: its last path component, made file-name safe."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path.rstrip("/")).name).strip("-.")
    return base or f"ingredient-{index}"


class SoupConfig(_Section):
    """Greedy soup (RAKP Sec. 4.1): rank ingredients by the criterion, keep one only if the soup's criterion
    does not drop; with robustness, an ingredient or soup more than max_accuracy_drop below the best
    ingredient's clean validation accuracy is never a member.

    ``ingredients``: checkpoints you already fine-tuned (directories or hub names, or ``{name, path}``) are
    the ingredients instead of ``finetune.variants`` (nothing is fine-tuned)."""

    prune_source: Literal["greedy", "uniform", "best"] = "greedy"
    criterion: Literal["accuracy", "robustness"] = "robustness"
    max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] = 0.02
    attack: SoupAttackConfig = SoupAttackConfig()
    ingredients: list[str | SoupIngredient] = []

    @field_validator("ingredients")
    @classmethod
    def _ingredients(cls, v: list[str | SoupIngredient]) -> list[str | SoupIngredient]:
        problems = []
        for i, entry in enumerate(v):
            path = entry if isinstance(entry, str) else entry.path
            if not path.strip():
                problems.append(f"entry {i} is an empty path")
            elif _looks_local(path) and (problem := _saved_dir_problem(path)):
                problems.append(f"entry {i}: {problem}")
        names = [ingredient_name(e, i) if isinstance(e, str) else e.name for i, e in enumerate(v)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(
                f"ingredient names repeated: {dup} (a name is the directory's last component; give "
                "{name: ..., path: ...} entries to tell them apart)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @property
    def ingredient_entries(self) -> list[tuple[str, str]]:
        """(name, path) of every given ingredient, in params order."""
        return [
            (ingredient_name(e, i), e) if isinstance(e, str) else (e.name, e.path)
            for i, e in enumerate(self.ingredients)
        ]


class CalibrateConfig(_Section):
    num_samples: Annotated[int, Field(gt=0, le=100_000)] = 128
    seed: int = 0
    batch_size: Annotated[int, Field(gt=0)] = 32


class RakpConfig(_Section):
    alpha: Annotated[float, Field(ge=0, le=1)] | Literal["adaptive", "depth"] = 1.0
    # alpha = depth: (first block's alpha, last block's alpha), linear in between
    alpha_depth: tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]] = (0.0, 0.5)
    alpha_grid: Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=1)] = [
        0.0,
        0.25,
        0.5,
        0.75,
        1.0,
    ]
    holdout_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.25
    alpha_criterion: Literal["block", "model", "output"] = "block"
    # alpha_criterion = output: judge every k-th token position of a causal LM (ignored for classifiers)
    output_stride: Annotated[int, Field(ge=1)] = 8
    ridge: Annotated[float, Field(ge=0)] = 1e-4
    # also rectify the classifier head (BERT's pooler + classifier, RoBERTa-style dense + out_proj) after
    # the last block, with the last block's alpha: the paper's "pooler and classifier refit"; classifiers only
    refit_head: bool = True
    next_input: Literal["pruned", "dense"] = "pruned"


_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_sparsity(value: float | str) -> tuple[float, int | None, int | None]:
    """Return (sparsity, n, m) for 0.5-style or "2:4"-style values; ValueError otherwise."""
    if isinstance(value, str):
        match = _NM.match(value)
        if match:
            n, m = int(match.group(1)), int(match.group(2))
            if not 0 < n < m:
                raise ValueError(f"N:M pattern {value!r} needs 0 < N < M (e.g. '2:4', '4:8')")
            return 1 - n / m, n, m
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"sparsity {value!r} is neither a fraction in [0, 1) nor an N:M pattern like '2:4'"
            ) from None
    if isinstance(value, bool) or not 0 <= float(value) < 1:
        raise ValueError(f"sparsity {value!r} is outside [0, 1) (use e.g. 0.5, 0.875 or '2:4')")
    return float(value), None, None


def combo_label(method: str, sparsity: float | str) -> str:
    """Name of a pruned model: ``sparsegpt_0.5``, ``sparsegpt_2-4`` (also its directory name)."""
    return f"{method}_{sparsity_label(sparsity).replace(':', '-')}"


def sparsity_label(value: float | str) -> str:
    """Canonical name of a sparsity for file names and tables: '0.5', '0.875', '2:4'."""
    s, n, m = parse_sparsity(value)
    return f"{n}:{m}" if n is not None else f"{s:g}"


def _no_repeats(v: list, what: str) -> list:
    """``v`` unchanged, or a ValueError naming the ``what`` given more than once."""
    dup = sorted({x for x in v if v.count(x) > 1})
    if dup:
        raise ValueError(f"{what} repeated: {dup}")
    return v


def _parsed_sparsities(v: list[float | str]) -> list[float | str]:
    """``v`` unchanged when every entry is a sparsity (a fraction or an N:M pattern), else its ValueError."""
    for x in v:
        parse_sparsity(x)
    return v


class PruneConfig(_Section):
    methods: Annotated[list[PruneMethodName], Field(min_length=1)] = list(PRUNE_METHODS)
    sparsities: Annotated[list[float | str], Field(min_length=1)] = [0.75, 0.875, "2:4"]
    block_size: Annotated[int, Field(gt=0, le=4096)] = 128
    dampening: Annotated[float, Field(gt=0, le=10)] = 0.01
    modules: str | None = None
    track_dense: bool = True
    rakp: RakpConfig = RakpConfig()

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, v: list[float | str]) -> list[float | str]:
        _no_repeats([sparsity_label(x) for x in _parsed_sparsities(v)], "sparsities")
        return v

    @field_validator("modules")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"modules {v!r} is not a valid regular expression: {e}") from None
        return v

    @property
    def combos(self) -> list[tuple[str, str]]:
        """(method, sparsity label) for every requested combination, in params order."""
        return [(m, sparsity_label(s)) for m in self.methods for s in self.sparsities]


# SDS's solvers and the largest step factor each converges with: ISTA for a step < 2/L, FISTA for <= 1/L
# (Beck & Teboulle 2009, Thm. 3.1 / 4.4; L = λ_max(H), overestimated by 5 %); Adam's step is lr · RMS(row)
SDS_LR_LIMITS = {"ista": (2.0, False), "fista": (1.0, True), "adam": (1.0, True)}  # (limit, limit allowed)


def sds_lr_problem(optimizer: str, lr: float) -> str | None:
    """Why SDS's ``lr`` cannot work with ``optimizer`` (one line), or None when it can."""
    limit, inclusive = SDS_LR_LIMITS.get(optimizer, (float("inf"), True))
    if lr > 0 and (lr <= limit if inclusive else lr < limit):
        return None
    why = {
        "ista": "ISTA's step is lr / lambda_max(H); proximal gradient diverges for a step >= 2 / lambda_max",
        "fista": "FISTA's step is lr / lambda_max(H); its momentum needs a step <= 1 / lambda_max to converge",
        "adam": "Adam's step is lr x RMS of the row's weights; beyond 1 every step overshoots their scale",
    }.get(optimizer, "")
    return f"{lr!r} with optimizer {optimizer!r}: need 0 < lr {'<=' if inclusive else '<'} {limit:g} ({why})"


class SdsConfig(_Section):
    """Sparse-dense-sparse on top of some of the prune stage's models (each must be a prune combination)."""

    methods: list[PruneMethodName] = [registry.SPARSEGPT.name, registry.RAKP.name]
    sparsities: list[float | str] = [0.75]
    l1: Annotated[float, Field(ge=0)] = 0.1  # penalty on the previously pruned positions (see sds.py)
    regularizer: Literal["l1", "group"] = "l1"
    group_size: Annotated[int, Field(ge=1, le=4096)] = 4
    steps: Annotated[int, Field(ge=0, le=100_000)] = 20
    lr: Annotated[float, Field(gt=0)] = 1.0  # ista < 2, fista <= 1, adam <= 1 (SDS_LR_LIMITS)
    optimizer: Literal["ista", "fista", "adam"] = "fista"  # only ista / fista make exact zeros
    init: Literal["pruned", "dense"] = "pruned"
    final_adjust_steps: Annotated[int, Field(ge=0, le=100_000)] = 0
    adjust_lr: Annotated[float, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _lr_fits_optimizer(self) -> SdsConfig:
        problems = [
            f"{k} = {p}"
            for k in ("lr", "adjust_lr")
            if (p := sds_lr_problem(self.optimizer, getattr(self, k)))
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, v: list[float | str]) -> list[float | str]:
        return _parsed_sparsities(v)

    @property
    def combos(self) -> list[tuple[str, str]]:
        return [(m, sparsity_label(s)) for m in self.methods for s in self.sparsities]


CAP_MODULES = ("prc", "fic", "snc")
_Fraction = Annotated[float, Field(gt=0, lt=1)]
_Steps = Annotated[int, Field(ge=0, le=1_000_000)]


def _increasing(v: list[float]) -> list[float]:
    if any(b <= a for a, b in zip(v, v[1:], strict=False)):
        raise ValueError(f"must increase strictly (each stage starts from the previous one), got {v}")
    return v


def _unique_modules(v: list[str]) -> list[str]:
    return _no_repeats(v, "modules")


class _StagedModules(_Section):
    """CAP's sections with staged ``sparsities`` (strictly increasing) and ``modules`` (each named once)."""

    @field_validator("sparsities", check_fields=False)
    @classmethod
    def _sparsities(cls, v: list[float]) -> list[float]:
        return _increasing(v)

    @field_validator("modules", check_fields=False)
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        return _unique_modules(v)


class CapWeights(_Section):
    """CAP's loss weights: ce·CE + kd·KL·T² + Σ_banks (unsup·L_unsup + sup·L_sup)."""

    ce: Annotated[float, Field(ge=0)] = 0.1
    kd: Annotated[float, Field(ge=0)] = 0.9
    unsup: Annotated[float, Field(ge=0)] = 0.1
    sup: Annotated[float, Field(ge=0)] = 10.0


class CapStructuredConfig(_StagedModules):
    """CAP-f: heads and FFN neurons removed in steps, retrained with CAP's loss after each."""

    sparsities: Annotated[list[_Fraction], Field(max_length=20)] = [0.25, 0.5]  # [] = no structured run
    retrain_steps: Annotated[int, Field(ge=0, le=1_000_000)] = 25
    importance_batches: Annotated[int, Field(ge=1, le=100_000)] = 8
    lr: Annotated[float, Field(gt=0, lt=1)] = 1.0e-4
    min_heads: Annotated[int, Field(ge=1)] = 1
    modules: list[Literal["prc", "fic", "snc"]] = ["prc", "fic", "snc"]
    weights: CapWeights = CapWeights(unsup=0.3, sup=3.0)  # the reference's CAP-f script
    kd_temperature: Annotated[float, Field(gt=0)] = 1.0


class CapLatencyConfig(_Section):
    """CPU latency of the structured model against the dense soup (torch.utils.benchmark, median)."""

    threads: Annotated[int, Field(ge=1, le=256)] = 2
    batch_sizes: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(max_length=8)] = [1, 32]
    min_run_time: Annotated[float, Field(gt=0, le=600)] = 1.0
    rounds: Annotated[int, Field(ge=1, le=100)] = 3


class CapAblationSettings(_Section):
    """Optimisation settings of the ablation runs (``cap.ablations``) where they differ from the main run's;
    null: the main run's value. The reference's no-contrastive setting keeps CE + KD with the same weights."""

    lr: Annotated[float, Field(gt=0, lt=1)] | None = None
    # 0.3: without the contrastive terms the default staged run collapses to one class at 50% with the main
    # run's 10% warm-up (benchmarks/results/cap_ablation_settings.json, benchmarks/bench_cap_settings.py)
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] | None = 0.3
    weights: CapWeights | None = None  # its ce / kd (unsup / sup only matter for module ablations)


class CapConfig(_StagedModules):
    """CAP (contrastive pruning during fine-tuning): one staged unstructured run per module set, CAP-f."""

    # the student's start: the dense soup (cheap) | the pre-trained encoder with a fresh seeded head, the
    # soup staying the KD teacher and the FiC bank (the reference: student from bert-base, teacher fine-tuned)
    start: Literal["finetuned", "pretrained"] = "finetuned"
    # staged: one run walks 0 -> s1 -> s2 ... (a model per stage) | separate: one run per sparsity from the
    # start point, each with the dense warm-up, ramp and hold (the reference: one run per target)
    path: Literal["staged", "separate"] = "staged"
    # SnC: one snapshot at the end of every stage, eval mode | one at the start of every epoch after the first,
    # train mode, dense warm-up epochs included (the reference, masked_run_glue.py lines 251-286)
    snapshots: Literal["stage", "epoch"] = "stage"
    # warmup_steps / ramp_steps / hold_steps count optimiser steps | epochs of the training examples
    length_unit: Literal["steps", "epochs"] = "steps"
    criterion: Literal["magnitude", "movement", "soft"] = "magnitude"
    sparsities: Annotated[list[_Fraction], Field(max_length=20)] = [0.5, 0.75, 0.875, 0.9]
    train_examples: Annotated[int, Field(gt=0)] | None = (
        2000  # seeded subset of the training split (null: all)
    )
    batch_size: Annotated[int, Field(gt=0, le=4096)] = 32
    warmup_steps: Annotated[int, Field(ge=0, le=1_000_000)] = 0  # dense, before the first stage's ramp
    # cubic ramp / hold at the stage's sparsity: one count for every stage, or one per stage
    ramp_steps: _Steps | list[_Steps] = [5, 5, 5, 5]
    hold_steps: _Steps | list[_Steps] = [10, 10, 25, 15]
    lr: Annotated[float, Field(gt=0, lt=1)] = 3.0e-4
    score_lr: Annotated[float, Field(gt=0, le=100)] = 1.0e-2  # movement / soft scores
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1  # learning-rate warm-up share of each stage
    temperature: Annotated[float, Field(gt=0)] = 0.1
    kd_temperature: Annotated[float, Field(gt=0)] = 2.0
    extra_negatives: Annotated[int, Field(ge=0, le=10_000_000)] = 256
    representation: Literal["mean", "cls"] = "mean"
    modules: list[Literal["prc", "fic", "snc"]] = ["prc", "fic", "snc"]
    ablations: list[list[Literal["prc", "fic", "snc"]]] = [[]]  # more runs, same schedule ([] -> cap-nocl)
    weights: CapWeights = CapWeights()
    soft_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.1
    soft_lambda: Annotated[float, Field(ge=0)] = 100.0
    mask_interval: Annotated[int, Field(ge=1, le=100_000)] = 2  # steps between mask recomputations
    bank_batch_size: Annotated[int, Field(gt=0, le=65536)] = 128
    seed: int = 0
    ablation_settings: CapAblationSettings = CapAblationSettings()
    structured: CapStructuredConfig = CapStructuredConfig()
    latency: CapLatencyConfig = CapLatencyConfig()

    @field_validator("ablations")
    @classmethod
    def _ablations(cls, v: list[list[str]]) -> list[list[str]]:
        for mods in v:
            _unique_modules(mods)
        keys = [tuple(sorted(m)) for m in v]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"ablation module sets repeated: {[list(k) for k in dup]}")
        return v

    @model_validator(mode="after")
    def _checks(self) -> CapConfig:
        snc = "snc" in self.modules or any("snc" in m for m in self.ablations)
        if self.path == "separate" and self.snapshots == "stage" and snc:
            raise ValueError(
                "cap.path separate with cap.snapshots stage gives SnC nothing (a separate run has no earlier "
                "stage): use cap.snapshots epoch, or drop snc from cap.modules / cap.ablations"
            )
        if any(sorted(m) == sorted(self.modules) for m in self.ablations):
            raise ValueError(f"cap.ablations repeats the main run's modules {self.modules}")
        n = len(self.sparsities)
        for key in ("ramp_steps", "hold_steps"):
            v = getattr(self, key)
            if isinstance(v, list) and len(v) != n:
                raise ValueError(f"cap.{key} has {len(v)} entries but cap.sparsities has {n} stages")
        ramps = self.ramp_steps if isinstance(self.ramp_steps, list) else [self.ramp_steps] * n
        holds = self.hold_steps if isinstance(self.hold_steps, list) else [self.hold_steps] * n
        empty = [s for s, r, h in zip(self.sparsities, ramps, holds, strict=True) if r + h == 0]
        if empty:
            raise ValueError(
                f"cap: the stages at {empty} have no steps (ramp_steps + hold_steps must be > 0)"
            )
        return self

    def run_name(self, modules: list[str]) -> str:
        """``cap`` (the main module set), ``cap-nocl`` ([]), else ``cap-<module>-<module>``."""
        if sorted(modules) == sorted(self.modules):
            return "cap"
        if not modules:
            return "cap-nocl"
        return "cap-" + "-".join(m for m in CAP_MODULES if m in modules)

    @property
    def runs(self) -> list[tuple[str, list[str]]]:
        """(run name, modules) of every unstructured staged run, the main one first."""
        return [(self.run_name(m), list(m)) for m in [self.modules, *self.ablations]]

    def model_names(self) -> list[str]:
        names = [f"{run}_{sparsity_label(s)}" for run, _ in self.runs for s in self.sparsities]
        if self.structured.sparsities:
            names.append(f"cap-f_{sparsity_label(self.structured.sparsities[-1])}")
        return names


class AttackResourcesConfig(_Section):
    """How the offline attack resources are built (counter-fitted vectors, masked-LM head)."""

    vocab_size: Annotated[int, Field(ge=1000, le=400_000)] = 40_000
    neighbours: Annotated[int, Field(ge=1, le=200)] = 50
    counterfit_epochs: Annotated[int, Field(ge=0, le=1000)] = 20
    max_senses: Annotated[int, Field(ge=1)] | None = 3  # synonym pairs only via each word's top senses
    mlm: str = (
        "train"  # "train": a masked-LM head on the frozen MiniLM | a hub MLM (bert-base-uncased) | local dir
    )
    mlm_steps: Annotated[int, Field(ge=0, le=100_000)] = 250
    mlm_batch_size: Annotated[int, Field(gt=0, le=65536)] = 256
    # contextual part-of-speech tagger put in the bundle (a robustprune.resources name); null = none, and
    # TextFooler falls back to WordNet's lexical categories
    pos_tagger: Literal["spacy_en_sm"] | None = "spacy_en_sm"
    seed: int = 0


class TextFoolerConfig(_Section):
    """TextFooler's fidelity options (robustprune.attacks.textfooler; docs/attacks.md measures them)."""

    pos: Literal["tagger", "lexical"] = "tagger"  # contextual tagger (falls back to lexical without one)
    short_text: Literal["released", "strict", "skip"] = "released"  # texts shorter than the 15-word window
    sim_threshold: Annotated[float, Field(gt=0, le=1)] = 0.840845057  # angular, 1 - 0.5/pi (released)
    # Morris et al. 2020's adjusted thresholds (word cosine 0.9, encoder cosine 0.98, short texts strict;
    # their LanguageTool check needs a server and is left out); off: the papers' recipe
    adjusted: bool = False


VALIDITY_CHECKS = ("vader", "afinn", "wordnet", "compound")


class AttackValidityConfig(_Section):
    """Which successful attacks change the label (robustprune.attacks.validity) and the search constraint
    that rejects such swaps (robustprune.attacks.components.PolarityConstraint); docs/attacks.md."""

    vader_threshold: Annotated[float, Field(gt=0, le=4)] = 0.5  # a swap: one word >= +t, the other <= -t
    afinn_threshold: Annotated[int, Field(ge=1, le=5)] = 1  # opposite signs, |score| >= t each
    compound_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5  # |VADER compound| >= t on both texts
    rule: Annotated[list[Literal["vader", "afinn", "wordnet", "compound"]], Field(min_length=1)] = list(
        VALIDITY_CHECKS
    )
    examples: Annotated[int, Field(ge=0, le=20)] = 3  # examples per check in the report
    # reject swaps that any of constraint_checks flags, during the search of every recipe (off: the papers')
    constraint: bool = False
    constraint_checks: Annotated[list[Literal["vader", "afinn", "wordnet"]], Field(min_length=1)] = [
        "vader",
        "afinn",
        "wordnet",
    ]


class MoreAttackedConfig(_Section):
    """Models attacked on fewer examples than attack.models (the first num_examples of the same rows)."""

    models: list[str] = []
    num_examples: Annotated[int, Field(gt=0, le=1_000_000)] = 100


class AttackConfig(_Section):
    """Which models are attacked, with which recipes, on how many seeded test examples."""

    recipes: Annotated[list[AttackRecipeName], Field(min_length=0)] = list(ATTACK_RECIPES)
    models: list[str] = ["soup-greedy", "best-ingredient", "sparsegpt_0.875", "rakp_0.875"]
    num_examples: Annotated[int, Field(gt=0, le=1_000_000)] = 100
    seed: int = 0
    shard_size: Annotated[int, Field(gt=0, le=100_000)] = 10
    query_budget: Annotated[int, Field(gt=0)] | None = None
    batch_size: Annotated[int, Field(gt=0, le=4096)] = 32
    textfooler: TextFoolerConfig = TextFoolerConfig()
    validity: AttackValidityConfig = AttackValidityConfig()
    more: MoreAttackedConfig = MoreAttackedConfig()
    resources: AttackResourcesConfig = AttackResourcesConfig()

    @field_validator("recipes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return _no_repeats(v, "recipes")


BUILTIN_LMS = ("smollm2",)
BUILTIN_TEXTS = ("political_speeches",)


# lm.rakp keys a params file leaves out: the partial step measured on SmolLM2 (docs/lm.md), no head refit
LM_RAKP_DEFAULTS: dict[str, Any] = {"alpha": 0.25, "ridge": 0.1, "refit_head": False}


class LMConfig(_Section):
    """The causal-LM track (``params-lm.yaml``, ``python -m flows.lm``): perplexity before/after pruning."""

    model: str = "smollm2"  # offline default (GGUF, converted once) | hub name | local HF directory
    text: str = "political_speeches"  # offline default | a .txt file (documents separated by blank lines)
    eval_tokens: Annotated[int, Field(gt=0)] = 16384
    window: Annotated[int, Field(ge=2, le=32768)] = 512
    calib_chunks: Annotated[int, Field(gt=0, le=100_000)] = 64
    calib_len: Annotated[int, Field(ge=2, le=32768)] = 512
    # calibration chunks per forward while pruning / reconstructing: 8 makes the Hessian GEMMs larger and
    # fewer (SmolLM2 2:4 on 2 cores: sparsegpt 193.5 -> 161.9 s, rakp 383.9 -> 310.9 s in
    # benchmarks/results/smollm2.json); only the float summation order changes
    calib_batch_size: Annotated[int, Field(ge=1, le=4096)] = 1
    calib_seeds: Annotated[list[int], Field(min_length=1)] = [0]
    methods: Annotated[list[PruneMethodName], Field(min_length=0)] = list(PRUNE_METHODS)
    sparsities: list[float | str] = [0.5, "2:4"]
    block_size: Annotated[int, Field(gt=0, le=4096)] = 128
    dampening: Annotated[float, Field(gt=0, le=10)] = 0.01
    track_dense: bool = False
    # the causal-LM default: a partial step (alpha 0.25, ridge 0.1; docs/lm.md) and no head refit (tied lm_head)
    rakp: RakpConfig = RakpConfig(**LM_RAKP_DEFAULTS)
    # params-lm.yaml's SDS (issue #5's SmolLM2 protocol), not the encoder's sds section
    sds: SdsConfig = SdsConfig(
        methods=[registry.WANDA.name, registry.SPARSEGPT.name, registry.RAKP.name],
        sparsities=[0.5, "2:4"],
        l1=0.3,
        steps=60,
    )
    eval_batch_size: Annotated[int, Field(gt=0, le=1024)] = 4

    @field_validator("rakp", mode="before")
    @classmethod
    def _lm_rakp_defaults(cls, v: object) -> object:
        """Keys lm.rakp leaves out take the causal-LM defaults, not the encoder's (prune.rakp)."""
        return {**LM_RAKP_DEFAULTS, **v} if isinstance(v, dict) else v

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, v: list[float | str]) -> list[float | str]:
        return _parsed_sparsities(v)

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        if v not in BUILTIN_TEXTS and not Path(v).is_file():
            raise ValueError(f"lm.text {v!r} is neither {list(BUILTIN_TEXTS)} nor an existing text file")
        return v

    @model_validator(mode="after")
    def _checks(self) -> LMConfig:
        if self.eval_tokens % self.window:
            raise ValueError(f"eval_tokens={self.eval_tokens} must be a multiple of window={self.window}")
        combos = set(self.combos)
        missing = [f"{m}@{s}" for m, s in self.sds.combos if (m, s) not in combos]
        if missing:
            raise ValueError(f"lm.sds: {missing} are not lm.methods x lm.sparsities combinations")
        if self.rakp.refit_head:
            raise ValueError(
                "lm.rakp.refit_head = true: the head refit is for sequence classifiers (a causal LM's lm_head "
                "is tied to its input embeddings, which are never changed); set it to false"
            )
        return self

    @property
    def combos(self) -> list[tuple[str, str]]:
        return [(m, sparsity_label(s)) for m in self.methods for s in self.sparsities]


class EvaluateConfig(_Section):
    batch_size: Annotated[int, Field(gt=0)] = 64


class ReportConfig(_Section):
    """How the report judges (src/robustprune/degeneracy.py, verdicts.py, report.py)."""

    # a model whose recall on any class is below this is near-constant: no robustness verdict
    near_constant_recall: Annotated[float, Field(ge=0, lt=1)] = 0.1
    # the fidelity-vs-robustness rank correlation needs at least this many non-degenerate models
    min_correlation_models: Annotated[int, Field(ge=3, le=1000)] = 6


# MLflow 3.x tracking stores by URI scheme (mlflow.tracking._tracking_service.utils): SQLAlchemy databases
# (a "+driver" suffix allowed), a tracking server, Databricks; "file" (or a bare path) is the file store,
# which MLflow 3 refuses unless MLFLOW_ALLOW_FILE_STORE=true (checked in preflight)
MLFLOW_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc")


def mlflow_uri_kind(uri: str) -> str:
    """The store a tracking URI selects: a scheme of MLFLOW_SCHEMES (driver dropped), "file", or "" (unknown)."""
    if uri in ("databricks", "databricks-uc"):
        return uri
    if "://" not in uri and ":" not in uri.split("/", 1)[0]:
        return "file"  # a bare path
    scheme = uri.split(":", 1)[0].lower()
    if scheme == "file":
        return "file"
    base = scheme.split("+", 1)[0]
    return base if base in MLFLOW_SCHEMES else ""


_DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")


class RuntimeConfig(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    work_pool: str | None = None
    mlflow_uri: str = "sqlite:///mlruns.db"
    experiment: str = "robustprune"
    progress: bool = True
    # how a flow runs its independent tasks (variants, prune combinations, SDS combinations, attack shards,
    # evaluations): thread | process (Prefect's pools on this host), dask (prefect-dask: a LocalCluster of
    # max_workers single-threaded workers, or the scheduler at dask_address), ray (prefect-ray, optional)
    task_runner: Literal["thread", "process", "dask", "ray"] = "thread"
    max_workers: Annotated[int, Field(ge=1, le=1024)] = 1
    dask_address: str | None = None  # e.g. tcp://10.0.0.5:8786; null: a LocalCluster on this host
    ray_address: str | None = None  # e.g. ray://10.0.0.5:10001 or auto; null: a local Ray instance
    # where a worker on runtime.work_pool finds the stage's inputs and leaves its outputs: shared (one file
    # system) | dvc (its own checkout, synchronised through the default DVC remote: plumbing/dvc_sync.py)
    storage: Literal["shared", "dvc"] = "shared"

    @field_validator("dask_address")
    @classmethod
    def _dask_address(cls, v: str | None) -> str | None:
        if v is not None and (
            "://" not in v or v.split("://", 1)[0] not in _DASK_SCHEMES or not v.split("://", 1)[1]
        ):
            raise ValueError(
                "not a Dask scheduler address: use <scheme>://host:port with a scheme of "
                f"{list(_DASK_SCHEMES)} (e.g. tcp://10.0.0.5:8786), or null for a LocalCluster"
            )
        return v

    @model_validator(mode="after")
    def _runner_addresses(self) -> RuntimeConfig:
        if self.dask_address is not None and self.task_runner != "dask":
            raise ValueError(
                f"runtime.dask_address = {self.dask_address!r} needs runtime.task_runner: dask "
                f"(it is {self.task_runner!r}), or set dask_address: null"
            )
        if self.ray_address is not None and self.task_runner != "ray":
            raise ValueError(
                f"runtime.ray_address = {self.ray_address!r} needs runtime.task_runner: ray "
                f"(it is {self.task_runner!r}), or set ray_address: null"
            )
        if self.storage == "dvc" and self.work_pool is None:
            raise ValueError(
                "runtime.storage = 'dvc' needs runtime.work_pool (the pool whose workers have their own "
                "checkout); set work_pool, or storage: shared"
            )
        return self

    @field_validator("mlflow_uri")
    @classmethod
    def _tracking_uri(cls, v: str) -> str:
        if not v.strip() or not mlflow_uri_kind(v):
            raise ValueError(
                f"not an MLflow tracking URI: the scheme must be one of {list(MLFLOW_SCHEMES)} "
                "(e.g. sqlite:///mlruns.db, http://host:5000), or file:/a path (the file store)"
            )
        return v

    @field_validator("work_pool")
    @classmethod
    def _pool(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("an empty work pool name; use null to run every stage in-process")
        return v


class Params(_Section):
    """The whole params.yaml."""

    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    soup: SoupConfig = SoupConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    prune: PruneConfig = PruneConfig()
    sds: SdsConfig = SdsConfig()
    cap: CapConfig = CapConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    attack: AttackConfig = AttackConfig()
    report: ReportConfig = ReportConfig()
    lm: LMConfig = LMConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        problems = []
        combos = set(self.prune.combos)
        missing = [f"{m}@{s}" for m, s in self.sds.combos if (m, s) not in combos]
        if missing:
            problems.append(
                f"sds: {missing} are not prune combinations (SDS starts from the prune stage's models; "
                f"prune.methods x prune.sparsities gives {[f'{m}@{s}' for m, s in self.prune.combos]}; "
                "sds.methods: [] skips SDS)"
            )
        if self.model.finetuned is not None and self.soup.ingredients:
            problems.append(
                f"model.finetuned = {self.model.finetuned!r} and soup.ingredients (a list of "
                f"{len(self.soup.ingredients)}) exclude each other: prune the one model, or build a soup from "
                "the ingredients; set the other to null / []"
            )
        known = set(self.model_names())
        if "models" not in self.attack.model_fields_set:
            # the default list names SparseGPT and RAKP at 87.5%: a file that prunes to other sparsities and
            # leaves attack.models out attacks the default models it builds (an explicit list must all exist);
            # with model.finetuned the dense reference is that model, not the greedy soup
            wanted = self.attack.models
            if self.model.finetuned is not None:
                wanted = [FINETUNED_NAME if m == "soup-greedy" else m for m in wanted]
            kept = [m for m in wanted if m in known or m in ATTACK_MODEL_GROUPS]
            object.__setattr__(self, "attack", self.attack.model_copy(update={"models": kept}))
        unknown = [
            m
            for m in [*self.attack.models, *self.attack.more.models]
            if m not in known and m not in ATTACK_MODEL_GROUPS
        ]
        if unknown:
            problems.append(
                f"attack.models: unknown model(s) {unknown}; allowed: groups {list(ATTACK_MODEL_GROUPS)} "
                f"or names {sorted(known)}"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def dense_source(self) -> Literal["finetune", "finetuned", "ingredients"]:
        """Where the dense models come from: fine-tuned here from ``model.name`` (``finetune.variants``), one
        classifier you give (``model.finetuned``), or checkpoints you give as soup ingredients."""
        if self.model.finetuned is not None:
            return "finetuned"
        return "ingredients" if self.soup.ingredients else "finetune"

    def ingredient_names(self) -> list[str]:
        """The soup's ingredients by name: ``finetune.variants``, or ``soup.ingredients``; none with
        ``model.finetuned`` (nothing is fine-tuned and there is no soup)."""
        source = self.dense_source
        if source == "finetuned":
            return []
        if source == "ingredients":
            return [name for name, _ in self.soup.ingredient_entries]
        return [v.name for v in self.finetune.variants]

    def soup_names(self) -> list[str]:
        return [] if self.dense_source == "finetuned" else ["soup-greedy", "soup-uniform"]

    def model_names(self) -> list[str]:
        """Every model the pipeline produces, by the name the report and the attack stage use."""
        names = [FINETUNED_NAME] if self.dense_source == "finetuned" else []
        names += self.ingredient_names() + self.soup_names()
        names += [combo_label(m, s) for m, s in self.prune.combos]
        names += [f"sds-{combo_label(m, s)}" for m, s in self.sds.combos]
        names += self.cap.model_names()
        return names

    def more_attacked_models(self, best_ingredient: str | None = None) -> list[str]:
        """attack.more.models expanded like attack.models, without the models attack.models already has."""
        first = self.attacked_models(best_ingredient)
        more = self.model_copy(
            update={"attack": self.attack.model_copy(update={"models": self.attack.more.models})}
        )
        return [n for n in more.attacked_models(best_ingredient) if n not in first]

    def attacked_models(self, best_ingredient: str | None = None) -> list[str]:
        """attack.models with the groups expanded, in pipeline order, without repeats.

        ``best-ingredient`` names the soup's top-ranked ingredient (by ``soup.criterion``), known once the soup
        stage ran (``reports/soup.json``); without it the entry expands to nothing.
        """
        names = self.model_names()
        groups = {
            "best-ingredient": [best_ingredient] if best_ingredient else [],
            "all": names,
            "variants": self.ingredient_names(),
            "soups": self.soup_names(),
            "pruned": [combo_label(m, s) for m, s in self.prune.combos],
            "sds": [f"sds-{combo_label(m, s)}" for m, s in self.sds.combos],
            "cap": self.cap.model_names(),
        }
        wanted: list[str] = []
        for entry in self.attack.models:
            for name in groups.get(entry, [entry]):
                if name not in wanted:
                    wanted.append(name)
        return [n for n in names if n in wanted]


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] | None = Params
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None and str(part) == "variants":
            model = Variant
    return sorted(model.model_fields) if model is not None else []


def format_errors(err: ValidationError, source: str = "params.yaml") -> str:
    """One line per problem: where, what was given, what is allowed."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            lines.append(f"{source}: unknown key {key!r}; allowed keys here: {allowed}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:  # cross-section checks: each line already names its keys
            lines += [f"{source}: {line}" for line in msg.splitlines()]
            continue
        given = e.get("input")
        given_s = repr(given) if not isinstance(given, dict) else "{...}"
        lines.append(f"{source}: {key} = {given_s}: {msg}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate params.yaml (plus dotted-key overrides such as {"prune.sparsities": [0.5]})."""
    path = Path(path)
    raw = yaml_mapping(read_params_text(path), path)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return parse_params(raw, str(path))


def read_params_text(path: Path) -> str:
    """The text of a params file; ConfigError (one line) when missing, a directory, binary or empty.

    An empty file (or one of comments and blank lines only) is refused: it would run everything with the
    code's defaults, which is almost always a mistake (a truncated copy, the wrong path). Write ``{}`` to
    mean "all defaults".
    """
    if path.is_dir():
        raise ConfigError(f"params file {str(path)!r} is a directory; pass a YAML file (e.g. params.yaml)")
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} not found")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"params file {str(path)!r} cannot be read: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not a text file (byte {data[e.start]:#04x} at offset {e.start} is not UTF-8); "
            "a params file is YAML text"
        ) from None
    if "\x00" in text:
        at = text.index("\x00")
        raise ConfigError(f"{path}: not a text file (NUL byte at offset {at}); a params file is YAML text")
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
        raise ConfigError(
            f"{path}: the file is empty (no keys); an empty params file would run everything with the code's "
            "defaults: pass the right file, or write {} to mean that"
        )
    return text


def yaml_mapping(text: str, path: Path) -> dict[str, Any]:
    """Parse params YAML; a syntax error is one line naming where."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}: not valid YAML{where}: {what}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty (no keys); write {{}} to run with the code's defaults")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw
