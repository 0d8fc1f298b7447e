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

DEFAULT_PARAMS = Path("params.yaml")
BUILTIN_DATA = ("rotten_tomatoes",)
BUILTIN_MODELS = ("minilm",)
PRUNE_METHODS = ("magnitude", "wanda", "sparsegpt", "rakp")
ATTACK_RECIPES = ("textfooler", "bert-attack", "textbugger")
ATTACK_MODEL_GROUPS = ("all", "soups", "variants", "pruned", "sds")
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
    validation_size: Annotated[int, Field(gt=0)] | Annotated[float, Field(gt=0, lt=1)] = 1000
    test_size: Annotated[int, Field(gt=0)] | Annotated[float, Field(gt=0, lt=1)] = 1000
    max_train_examples: Annotated[int, Field(gt=0)] | None = None
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


class ModelConfig(_Section):
    """The pre-trained encoder: the embedded offline default, a hub name or a local directory."""

    name: str = "minilm"

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


class Variant(_Section):
    """One fine-tuned ingredient of the soup."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    learning_rate: Annotated[float, Field(gt=0, lt=1)]
    epochs: Annotated[float, Field(gt=0, le=100)] = 1
    seed: int = 0


class FinetuneConfig(_Section):
    batch_size: Annotated[int, Field(gt=0, le=4096)] = 32
    head_seed: int = 0
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.06
    variants: Annotated[list[Variant], Field(min_length=1)] = [Variant(name="v0", learning_rate=5e-5)]

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, v: list[Variant]) -> list[Variant]:
        names = [x.name for x in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"variant names must be unique, repeated: {dup}")
        return v


class SoupConfig(_Section):
    prune_source: Literal["greedy", "uniform", "best"] = "greedy"


class CalibrateConfig(_Section):
    num_samples: Annotated[int, Field(gt=0, le=100_000)] = 128
    seed: int = 0
    batch_size: Annotated[int, Field(gt=0)] = 32


class RakpConfig(_Section):
    alpha: Annotated[float, Field(ge=0, le=1)] | Literal["adaptive", "depth"] = 0.25
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
    ridge: Annotated[float, Field(ge=0)] = 0.1
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


class PruneConfig(_Section):
    methods: Annotated[list[Literal["magnitude", "wanda", "sparsegpt", "rakp"]], Field(min_length=1)] = [
        "magnitude",
        "sparsegpt",
    ]
    sparsities: Annotated[list[float | str], Field(min_length=1)] = [0.5, "2:4"]
    block_size: Annotated[int, Field(gt=0, le=4096)] = 128
    dampening: Annotated[float, Field(gt=0, le=10)] = 0.01
    modules: str | None = None
    track_dense: bool = True
    rakp: RakpConfig = RakpConfig()

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, v: list[float | str]) -> list[float | str]:
        for x in v:
            parse_sparsity(x)
        labels = [sparsity_label(x) for x in v]
        dup = sorted({s for s in labels if labels.count(s) > 1})
        if dup:
            raise ValueError(f"sparsities repeated: {dup}")
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


class SdsConfig(_Section):
    """Sparse-dense-sparse on top of some of the prune stage's models (each must be a prune combination)."""

    methods: list[Literal["magnitude", "wanda", "sparsegpt", "rakp"]] = []
    sparsities: list[float | str] = []
    l1: Annotated[float, Field(ge=0)] = 0.1  # penalty on the previously pruned positions (see sds.py)
    regularizer: Literal["l1", "group"] = "l1"
    group_size: Annotated[int, Field(ge=1, le=4096)] = 4
    steps: Annotated[int, Field(ge=0, le=100_000)] = 20
    lr: Annotated[float, Field(gt=0, le=100)] = 1.0
    optimizer: Literal["ista", "fista", "adam"] = "fista"
    init: Literal["pruned", "dense"] = "pruned"
    final_adjust_steps: Annotated[int, Field(ge=0, le=100_000)] = 0
    adjust_lr: Annotated[float, Field(gt=0, le=100)] = 1.0

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, v: list[float | str]) -> list[float | str]:
        for x in v:
            parse_sparsity(x)
        return v

    @property
    def combos(self) -> list[tuple[str, str]]:
        return [(m, sparsity_label(s)) for m in self.methods for s in self.sparsities]


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


class AttackConfig(_Section):
    """Which models are attacked, with which recipes, on how many seeded test examples."""

    recipes: Annotated[list[Literal["textfooler", "bert-attack", "textbugger"]], Field(min_length=0)] = list(
        ATTACK_RECIPES
    )
    models: list[str] = ["soup-greedy"]
    num_examples: Annotated[int, Field(gt=0, le=1_000_000)] = 50
    seed: int = 0
    shard_size: Annotated[int, Field(gt=0, le=100_000)] = 25
    query_budget: Annotated[int, Field(gt=0)] | None = None
    batch_size: Annotated[int, Field(gt=0, le=4096)] = 32
    textfooler: TextFoolerConfig = TextFoolerConfig()
    resources: AttackResourcesConfig = AttackResourcesConfig()

    @field_validator("recipes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({r for r in v if v.count(r) > 1})
        if dup:
            raise ValueError(f"recipes repeated: {dup}")
        return v


BUILTIN_LMS = ("smollm2",)
BUILTIN_TEXTS = ("political_speeches",)


class LMConfig(_Section):
    """The causal-LM track (``params-lm.yaml``, ``python -m flows.lm``): perplexity before/after pruning."""

    model: str = "smollm2"  # offline default (GGUF, converted once) | hub name | local HF directory
    text: str = "political_speeches"  # offline default | a .txt file (documents separated by blank lines)
    eval_tokens: Annotated[int, Field(gt=0)] = 16384
    window: Annotated[int, Field(ge=2, le=32768)] = 512
    calib_chunks: Annotated[int, Field(gt=0, le=100_000)] = 64
    calib_len: Annotated[int, Field(ge=2, le=32768)] = 512
    # calibration chunks per forward while pruning / reconstructing: 8 makes the Hessian GEMMs larger and
    # fewer (~18% less time per SmolLM2 block on 2 cores); only the float summation order changes
    calib_batch_size: Annotated[int, Field(ge=1, le=4096)] = 1
    calib_seeds: Annotated[list[int], Field(min_length=1)] = [0]
    methods: Annotated[list[Literal["magnitude", "wanda", "sparsegpt", "rakp"]], Field(min_length=0)] = [
        "magnitude",
        "wanda",
        "sparsegpt",
        "rakp",
    ]
    sparsities: list[float | str] = [0.5, "2:4"]
    block_size: Annotated[int, Field(gt=0, le=4096)] = 128
    dampening: Annotated[float, Field(gt=0, le=10)] = 0.01
    track_dense: bool = False
    rakp: RakpConfig = RakpConfig()
    sds: SdsConfig = SdsConfig()
    eval_batch_size: Annotated[int, Field(gt=0, le=1024)] = 4

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, v: list[float | str]) -> list[float | str]:
        for x in v:
            parse_sparsity(x)
        return v

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
        return self

    @property
    def combos(self) -> list[tuple[str, str]]:
        return [(m, sparsity_label(s)) for m in self.methods for s in self.sparsities]


class EvaluateConfig(_Section):
    batch_size: Annotated[int, Field(gt=0)] = 64


class RuntimeConfig(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    work_pool: str | None = None
    mlflow_uri: str = "sqlite:///mlruns.db"
    experiment: str = "robustprune"
    progress: bool = True


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
    evaluate: EvaluateConfig = EvaluateConfig()
    attack: AttackConfig = AttackConfig()
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
                f"prune.methods x prune.sparsities gives {[f'{m}@{s}' for m, s in self.prune.combos]})"
            )
        known = set(self.model_names())
        unknown = [m for m in self.attack.models if m not in known and m not in ATTACK_MODEL_GROUPS]
        if unknown:
            problems.append(
                f"attack.models: unknown model(s) {unknown}; allowed: groups {list(ATTACK_MODEL_GROUPS)} "
                f"or names {sorted(known)}"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def model_names(self) -> list[str]:
        """Every model the pipeline produces, by the name the report and the attack stage use."""
        names = [v.name for v in self.finetune.variants] + ["soup-greedy", "soup-uniform"]
        names += [combo_label(m, s) for m, s in self.prune.combos]
        names += [f"sds-{combo_label(m, s)}" for m, s in self.sds.combos]
        return names

    def attacked_models(self) -> list[str]:
        """attack.models with the groups expanded, in pipeline order, without repeats."""
        names = self.model_names()
        groups = {
            "all": names,
            "variants": [v.name for v in self.finetune.variants],
            "soups": ["soup-greedy", "soup-uniform"],
            "pruned": [combo_label(m, s) for m, s in self.prune.combos],
            "sds": [f"sds-{combo_label(m, s)}" for m, s in self.sds.combos],
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
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return parse_params(raw, str(path))
