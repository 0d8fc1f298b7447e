"""Shared fixtures: tiny random models built from a config, and a tiny self-contained project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from plumbing.environment import set_defaults

ROOT = Path(__file__).resolve().parent.parent
set_defaults(
    ROOT,
    {
        # tiny models: one thread is faster than two, and never stalls when the machine is shared
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        # tiny projects in tmp dirs use the repository's downloaded wheels (GloVe, WordNet, MiniLM)
        "ROBUSTPRUNE_WHEELS": str(ROOT / ".cache" / "wheels"),
        # ...and unpack them once, not into every project copy (218 MB each; CI ran out of disk)
        "ROBUSTPRUNE_RESOURCES": str(ROOT / ".cache" / "resources"),
    },
)

# Prefect reads PREFECT_HOME once, when it is first imported: every test process (each pytest-xdist worker
# of `make test`) gets its own, so persisted task results (cache hits name absolute project paths) never
# cross from one worker's tiny project to the other's. Subprocess flows get theirs from the tests' env.
if "PYTEST_XDIST_WORKER" in os.environ or "PREFECT_HOME" not in os.environ:
    import atexit
    import tempfile

    _home = tempfile.mkdtemp(prefix=f"robustprune-prefect-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
    os.environ["PREFECT_HOME"] = _home
    atexit.register(shutil.rmtree, _home, ignore_errors=True)

POSITIVE = ["good", "great", "fun", "moving", "smart", "warm", "fresh", "bright", "witty", "lovely"]
NEGATIVE = ["bad", "dull", "boring", "flat", "stale", "silly", "weak", "tired", "messy", "awful"]
FILLER = [
    "the",
    "film",
    "movie",
    "is",
    "a",
    "story",
    "plot",
    "and",
    "very",
    "quite",
    "this",
    "cast",
    "script",
]


def tiny_vocab() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return special + POSITIVE + NEGATIVE + FILLER + [".", ","]


#: the tiny models' sizes (BERT and Llama): vocab 99, hidden 32, 2 layers, 4 heads, 64 positions
TINY_SIZES: dict[str, int] = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64
)


def tiny_bert_config(**overrides: Any):
    """The tiny BERT's ``BertConfig``: ``TINY_SIZES`` with an FFN of 40; then ``overrides``."""
    from transformers import BertConfig

    return BertConfig(**{**TINY_SIZES, "intermediate_size": 40, **overrides})


def tiny_bert(num_labels: int = 2, seed: int = 0, intermediate: int = 40):
    """BertForSequenceClassification: vocab ~100, hidden 32, 2 layers, 4 heads."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = tiny_bert_config(intermediate_size=intermediate, num_labels=num_labels)
    return BertForSequenceClassification(cfg).eval()


def tiny_llama(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**TINY_SIZES, intermediate_size=64, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval()


def tiny_tokenizer(directory: Path):
    from transformers import BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n")
    return BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True, model_max_length=64)


def synthetic_reviews(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Learnable sentiment snippets: the label is carried by positive/negative words among filler."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if label else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append((" ".join(words) + " .", label))
    return rows


@pytest.fixture
def bert():
    return tiny_bert()


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture
def calib_batches():
    """Two BERT-style batches with padding (the second shorter)."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 99, (8, 12), generator=g)
    mask = torch.ones(8, 12, dtype=torch.long)
    mask[4:, 9:] = 0
    ids[mask == 0] = 0
    return [
        {"input_ids": ids[:4], "attention_mask": mask[:4]},
        {"input_ids": ids[4:, :9], "attention_mask": mask[4:, :9]},
    ]


def write_tiny_project(root: Path, *, n_rows: int = 240, extra_params: str = "") -> Path:
    """A project root with a local tiny BERT, a CSV data set and a tiny params.yaml; returns params path."""
    import csv

    model_dir = root / "tiny-bert"
    tok = tiny_tokenizer(model_dir)
    tiny_bert().bert.save_pretrained(model_dir)  # a pre-trained encoder without a head, like the default
    tok.save_pretrained(model_dir)
    data = root / "reviews.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "sentiment"])
        for text, label in synthetic_reviews(n_rows):
            w.writerow([text, "pos" if label else "neg"])
    params = root / "params.yaml"
    params.write_text(f"""seed: 0
data: {{source: {data}, text_column: sentence, label_column: sentiment, validation_size: 40, test_size: 40, max_length: 16}}
model: {{name: {model_dir}}}
finetune:
  batch_size: 16
  variants:
    - {{name: a, learning_rate: 3.0e-3, epochs: 5, seed: 0}}
    - {{name: b, learning_rate: 1.0e-3, epochs: 8, seed: 1}}
    - {{name: c, learning_rate: 2.0e-3, epochs: 4, seed: 2, optimizer: adam, adversarial: {{steps: 2}}, augment: {{fraction: 0.3}}}}
soup: {{attack: {{num_examples: 6}}}}
calibrate: {{num_samples: 24, batch_size: 8}}
prune: {{methods: [magnitude, sparsegpt, rakp], sparsities: [0.5, "2:4"], block_size: 16}}
sds: {{methods: [sparsegpt], sparsities: [0.5], steps: 5}}
cap:
  train_examples: 96
  batch_size: 16
  warmup_steps: 2
  ramp_steps: 12
  hold_steps: 4
  lr: 3.0e-3
  extra_negatives: 24
  structured: {{sparsities: [0.25, 0.5], retrain_steps: 6, importance_batches: 2, lr: 3.0e-3}}
  latency: {{batch_sizes: [1, 8], min_run_time: 0.01, rounds: 1}}
evaluate: {{batch_size: 32}}
attack:
  models: [soup-greedy, sds]
  num_examples: 6
  shard_size: 3
  resources: {{vocab_size: 3000, counterfit_epochs: 1, mlm_steps: 4, mlm_batch_size: 8}}
runtime: {{progress: false, device: cpu}}
{extra_params}""")
    return params


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    return write_tiny_project(tmp_path)


# ------------------------------------------------------------------ the session's Prefect API and tiny run
#: what a checkout holds besides params.yaml: the code DVC hashes as stage deps, the stage and deployment files
CODE = ("src", "flows", "tasks", "plumbing")
PROJECT_FILES = ("dvc.yaml", "prefect.yaml")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect API for every in-process flow run of the session."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness) -> str:
    """The harness server's URL, for flows run in subprocesses (saves each one starting its own server)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def make_checkout(root: Path, params: dict) -> Path:
    """``root`` made what ``git clone`` of the repository gives: the code, dvc.yaml, prefect.yaml and
    ``params`` (every key spelled out: DVC reads the keys each stage lists), a git + DVC repository."""
    for d in CODE:
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in PROJECT_FILES:
        shutil.copy(ROOT / f, root / f)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    from dvc.repo import Repo

    Repo.init(str(root)).close()  # `dvc init`, without starting a second interpreter
    return root


def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every pytest-xdist worker of this session sees: the controller's base temp (the parent of
    each worker's own, removed by the controller when the session passes); a plain run's own base temp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, prefect_harness):
    """The real pipeline flow, run once on the tiny project; tests read what it produced.

    The project is a git + DVC checkout (code, dvc.yaml, params.yaml with every key), as `make run` sees
    one: the pipeline records each stage in dvc.lock as it finishes, so the DVC, scale-out and reliability
    tests start from this run's outputs and lock instead of running the stages again. Read it only: a test
    that re-runs a stage or edits a file works on a copy (``copy_project``).

    Once per session, not once per worker: under pytest-xdist the first worker that needs it runs it (on its
    own Prefect API) in a directory every worker sees, under a file lock, and writes the flow's result last;
    the others wait on the lock and read that result. So nothing may depend on the run's Prefect state
    (flow runs, persisted task results): those belong to whichever worker ran it.
    """
    from filelock import FileLock

    shared = shared_dir(tmp_path_factory)
    root, done = shared / "tiny-project", shared / "tiny-project.result.json"
    with FileLock(str(shared / "tiny-project.lock")):
        if not done.exists():
            import flows  # noqa: F401
            from flows.pipeline import pipeline
            from robustprune.config import load_params

            shutil.rmtree(root, ignore_errors=True)  # a run that failed in another worker
            root.mkdir()
            params = write_tiny_project(root)
            make_checkout(root, load_params(params).model_dump(mode="json"))
            result = pipeline(params_path=str(params), root=str(root))
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(done)
    return root, root / "params.yaml", json.loads(done.read_text())


#: what a project copy shares with its source by hard link instead of copying: files nothing writes in place
#: (DVC's content-addressed cache; the attack resources, ~190 MB of MiniLM encoder and MLM head, that no test
#: rebuilds). Every writer of the code replaces a file by renaming a new one over it, never rewrites it.
LINKED = (".dvc/cache/", "models/attack/")


def copy_project(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    """A copy of the project ``src`` at ``dst`` without the paths in ``skip`` (relative to ``src``)."""

    def link_or_copy(a: str, b: str) -> None:
        if Path(a).relative_to(src).as_posix().startswith(LINKED):
            os.link(a, b)
        else:
            shutil.copy2(a, b)

    shutil.copytree(
        src,
        dst,
        ignore=lambda d, names: [n for n in names if (Path(d) / n).relative_to(src).as_posix() in skip],
        copy_function=link_or_copy,
    )
    return dst


#: `make test` runs on two pytest-xdist workers (``-n 2 --dist loadgroup --no-loadscope-reorder``, scheduled
#: by ``pytest_xdist_make_scheduler`` below). A file named in ``GROUP`` is one unit of work (its module
#: fixtures are made once, on one worker); the reliability files that read ``finished`` share one unit, so it
#: is made once; every other test is a unit of its own, handed to whichever worker is free. Units start in
#: collection order, which ``_schedule`` sets: the scale-out file first (its worker makes the shared tiny
#: run) while the other worker runs what needs no tiny run and the first half of the unit tests; then the
#: long files, longest first; the rest of the unit tests fill in at the end. The seconds are each file's share
#: of `make test`'s `--durations` on 2 cores.
FIRST = (
    "tests/integration/test_scaleout.py",  # ~165 s, with the shared tiny run
    "tests/integration/test_lm_flow.py",  # ~30 s, no tiny run
    "tests/reliability/test_interrupt.py",
)
LAST = (  # after the first half of the unit tests, longest first
    "tests/integration/test_dvc.py",  # ~120 s
    "tests/reliability/test_kill.py",  # the `finished` unit: ~180 s in all
    "tests/reliability/test_stop.py",
    "tests/reliability/test_bad_inputs.py",
    "tests/reliability/test_reproducible.py",
    "tests/integration/test_pipeline.py",  # ~90 s
    "tests/integration/test_own_model.py",  # ~75 s
    "tests/integration/test_scaleout_dvc.py",  # ~70 s
    "tests/integration/test_cap.py",  # ~50 s
    "tests/integration/test_scaleout_dask.py",  # ~45 s
)
#: unit-test files whose module fixtures load something sizeable (attack resources, MLM heads): one unit each
FIXTURED = tuple(
    f"tests/unit/test_{n}.py" for n in ("attack_resources", "attack_validity", "attacks", "augment", "lm")
)
GROUP = {f: Path(f).stem for f in (*FIRST, *LAST, *FIXTURED)} | {
    f"tests/reliability/test_{n}.py": "finished" for n in ("kill", "stop", "bad_inputs", "reproducible")
}


def _path(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201
    """``--dist loadgroup`` by ``GROUP``: a file named there is one unit, every other test a unit of its own.

    pytest-xdist's own loadgroup reads ``xdist_group`` marks by renaming node ids, which pytest 9.2's node
    ids no longer allow (every test became a unit of its own and module fixtures ran on both workers)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            f = nodeid.split("::", 1)[0]
            return GROUP.get(f, nodeid)

    return FileGroups(config, log)


def _schedule(items: list[pytest.Item]) -> None:
    """Order ``items`` in place for the two workers (see ``FIRST``)."""
    path = _path
    rank = {f: n for n, f in enumerate(FIRST)}
    rank |= {f: len(FIRST) + 1 + n for n, f in enumerate(LAST)}
    rest = [i for i in items if path(i) not in rank]
    files = list(dict.fromkeys(path(i) for i in rest))
    early = set(files[: len(files) // 2])

    def key(item: pytest.Item) -> int:
        f = path(item)
        if f in rank:
            return rank[f]
        return len(FIRST) if f in early else len(FIRST) + len(LAST) + 1

    items.sort(key=key)  # stable: the order inside a file is kept


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the tests for two xdist workers (``_schedule``); tests marked ``gpu`` run only where
    CUDA is visible (``pytest -m gpu`` on a CUDA host)."""
    _schedule(items)
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: no CUDA device visible")
    for item in gpu_items:
        item.add_marker(skip)
