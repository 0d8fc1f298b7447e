"""dvc.yaml is generated from the stage manifests, and the manifests name what each stage's code touches.

`make run` asks `dvc status` whether a stage must run again; a module, a params key or an input a stage uses
but dvc.yaml does not list would leave it "up to date" after a change (issue #27: a FreeLB-only change left
`finetune` skipped), and an output it does not list is neither cached nor checked. Three checks, read from
the source (nothing runs):

- dvc.yaml and lm/dvc.yaml are what ``python -m plumbing.dvc_stages --write`` generates from
  ``src/robustprune/stages.py`` (so their ``deps`` cover the closure of the stage flow's project imports);
- every params key a stage's code reads (``params.a.b`` in a function the flow reaches, through aliases,
  derived properties such as ``params.dense_source`` and ``model_dump()[...]``) is one of its manifest's keys;
- every Layout path a stage's code builds (``layout.data``, ``layout.reports / "x.json"``, ...) is one of its
  manifest's inputs or outputs (or declared scratch, or deliberately unlisted).
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from plumbing import dvc_stages
from plumbing.imports import import_closure, imported_names, module_file
from robustprune import registry
from robustprune.config import Params
from robustprune.layout import Layout
from robustprune.stages import DYNAMIC_IMPORTS, NOT_COMPUTING_PARAMS, SCRATCH, Stage, manifests

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = Layout(Path("."))
STAGES = manifests(LAYOUT)
#: helpers that build a stage's paths from its name: (module, function) -> paths given the constant name
NAMED_PATHS = {("tasks.common", "publish_models"): ("models/{}", "reports/{}.json")}
#: functions whose params reads only label MLflow runs (why)
LOGGING_ONLY = {
    "tasks.common.stage_run": "tags the stage's MLflow run (seed) and logs its params section",
    "tasks.common.mlflow_setup": "opens the MLflow experiment",
    "tasks.tracking": "MLflow logging and model registration (every function)",
}
#: ``getattr(params.<section>, name)``: the sub-sections ``name`` can be
DYNAMIC_SECTIONS = {("attack",): sorted({r.options for r in registry.RECIPES.values() if r.options})}


# ------------------------------------------------------------------------- the source, function by function
class Module:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        self.defs = {
            n.name: n for n in self.tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        self.imports: dict[str, str] = {}  # local name -> dotted name
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                self.imports |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                self.imports |= {
                    a.asname or a.name.split(".")[0]: (a.name if a.asname else a.name.split(".")[0])
                    for a in node.names
                }


@functools.cache
def _module(name: str) -> Module:
    return Module(name, module_file(ROOT, name))


@functools.cache
def _closure(entry: str) -> dict[str, Module]:
    return {m: _module(m) for m in import_closure(ROOT, entry, {"plumbing.*": ""}, DYNAMIC_IMPORTS)}


def _target(mod: Module, node: ast.AST, modules: dict[str, Module]) -> tuple[str, str] | None:
    """The project function a Name or ``module.attr`` refers to, as (module, function)."""
    if isinstance(node, ast.Name):
        if node.id in mod.defs:
            return mod.name, node.id
        dotted = mod.imports.get(node.id)
    elif (
        isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in mod.imports
    ):
        dotted = f"{mod.imports[node.value.id]}.{node.attr}"
    else:
        return None
    if dotted:
        owner, _, fn = dotted.rpartition(".")
        if owner in modules and fn in modules[owner].defs:
            return owner, fn
    return None


def reached(module: str) -> Iterator[tuple[Module, ast.AST]]:
    """Every function ``python -m flows.<stage>`` can call (any reference to a project function counts, also in
    a decorator: ``cache_key_fn=...``), with its module; the flow module's top level too."""
    modules = _closure(module)
    entry = modules[module]
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[Module, ast.AST]] = [(entry, entry.tree)]
    while todo:
        mod, fn = todo.pop()
        yield mod, fn
        for node in ast.walk(fn):
            t = _target(mod, node, modules)
            if t and t not in seen:
                seen.add(t)
                todo.append((modules[t[0]], modules[t[0]].defs[t[1]]))


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


# ----------------------------------------------------------------------------------------- params read
def _model_of(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 and typing.get_origin(annotation) is not list else None


@functools.cache
def _self_reads(cls: type, name: str) -> set[tuple[str, ...]]:
    """The attribute chains of ``self`` a property or method of ``cls`` reads."""
    member = inspect.getattr_static(cls, name)
    func = member.fget if isinstance(member, property) else member
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    return set(_chains(tree, {"self": ()}))


def normalize(chain: tuple[str, ...], cls: type[BaseModel] = Params, depth: int = 0) -> set[str]:
    """The params.yaml keys (dotted) an attribute chain on a config model reads."""
    out: list[str] = []
    for part in chain:
        if part in cls.model_fields:
            out.append(part)
            sub = _model_of(cls.model_fields[part].annotation)
            if sub is None:  # a leaf (a number, a list): whatever follows is not a key
                break
            cls = sub
        elif part == "model_copy":  # a copy reads nothing (what reads the copy is counted there)
            return set()
        elif hasattr(BaseModel, part) or not hasattr(cls, part) or depth > 5:
            break  # model_dump(): the whole section (a subscript after it was folded into the chain)
        else:  # a derived property or method: the keys it reads
            prefix = ".".join(out)
            keys = {k for c in _self_reads(cls, part) for k in normalize(c, cls, depth + 1)}
            return {".".join(filter(None, (prefix, k))) for k in keys}
    return {".".join(out)}


def _chains(tree: ast.AST, roots: dict[str, tuple[str, ...]]) -> Iterator[tuple[str, ...]]:
    """Maximal attribute chains on the names ``roots`` (name -> the chain it stands for), ``x = params.a``
    aliases followed; ``.model_dump(...)["key"]`` continues the chain with ``key``."""
    roots = dict(roots)
    parents = _parents(tree)
    for node in ast.walk(tree):  # aliases first (ast.walk is breadth first: good enough for flat bodies)
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            chain = _chain(node.value, roots)
            if chain is not None and node.targets[0].id not in roots:
                roots[node.targets[0].id] = chain
    for node in ast.walk(tree):
        parent = parents.get(node)
        if not isinstance(node, ast.Attribute) or isinstance(parent, ast.Attribute | ast.Assign):
            continue  # not maximal, or an alias (counted where it is used)
        chain = _chain(node, roots)
        if chain is None or (
            getattr(getattr(parent, "func", None), "id", None) == "getattr" and chain in DYNAMIC_SECTIONS
        ):
            continue  # getattr(params.attack, name): read below, as the sub-sections name can be
        call, sub = parent, parents.get(parent)
        folded = isinstance(call, ast.Call) and call.func is node and isinstance(sub, ast.Subscript)
        if folded and isinstance(sub.slice, ast.Constant) and isinstance(sub.slice.value, str):
            chain = (*chain[:-1], sub.slice.value)
        yield chain
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    yield from (chain for name, chain in roots.items() if chain and name not in loaded)  # read, never used
    for node in ast.walk(tree):  # an alias used whole (compared, passed on): all it stands for
        parent = parents.get(node)
        bare = (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)
            and not isinstance(parent, ast.Attribute)
        )
        if bare and node.id in roots and roots[node.id]:
            yield roots[node.id]
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) >= 2:
            chain = _chain(node.args[0], roots)
            if chain is not None and chain in DYNAMIC_SECTIONS and not isinstance(node.args[1], ast.Constant):
                yield from ((*chain, section) for section in DYNAMIC_SECTIONS[chain])


def _chain(node: ast.AST, roots: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in roots:
        return (*roots[node.id], *reversed(parts))
    return None


def _logging_only(mod: Module, fn: ast.AST) -> bool:
    return mod.name in LOGGING_ONLY or f"{mod.name}.{getattr(fn, 'name', '')}" in LOGGING_ONLY


@functools.cache
def _params_read(module: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for mod, fn in reached(module):
        if _logging_only(mod, fn):
            continue
        for chain in _chains(fn, {"params": ()}):
            for key in normalize(chain):
                if key and key.split(".")[0] not in NOT_COMPUTING_PARAMS:
                    out.setdefault(
                        key, f"{mod.name}.{getattr(fn, 'name', '<module>')}: params.{'.'.join(chain)}"
                    )
    return out


def params_read(stage: Stage) -> dict[str, str]:
    """params.yaml key -> where: every key a function the stage's flow reaches reads through ``params`` (the
    functions that only label MLflow runs aside)."""
    return _params_read(stage.module)


def _covered(key: str, keys: tuple[str, ...]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def unlisted_params(stage: Stage) -> dict[str, str]:
    read = params_read(stage)
    return {k: w for k, w in read.items() if not _covered(k, stage.params) and k not in stage.unread}


# ------------------------------------------------------------------------------------------ paths touched
def _path(node: ast.AST, roots: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """The relative path a ``layout...`` expression builds, as far as its parts are constants."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        left = _path(node.left, roots)
        if left is None:
            return None
        ok = (
            isinstance(node.right, ast.Constant) and isinstance(node.right.value, str) and left[-1:] != ("*",)
        )
        return (*left, node.right.value) if ok else (*left, "*")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        node = node.func  # layout.pruned_model(m, s): under layout.pruned
    if isinstance(node, ast.Name) and node.id in roots:
        return roots[node.id]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "layout":
        if node.attr == "root":
            return ()
        attr = inspect.getattr_static(Layout, node.attr)
        target = (
            getattr(LAYOUT, node.attr)
            if isinstance(attr, property)
            else getattr(LAYOUT, node.attr)("magnitude", "0.5")
        )
        if not Path(target).is_relative_to(LAYOUT.root):  # $ROBUSTPRUNE_RESOURCES
            return (".cache", "*")
        rel = Path(target).relative_to(LAYOUT.root).parts
        return rel if isinstance(attr, property) else rel[:-1]
    return None


def paths_touched(stage: Stage) -> dict[str, str]:
    """Relative path -> where: every path a reached function builds from ``layout`` (``.cache/`` aside)."""
    return {p: w for p, w in _paths_touched(stage.module).items() if p.split("/")[0] not in SCRATCH}


@functools.cache
def _paths_touched(module: str) -> dict[str, str]:
    out: dict[str, str] = {}
    modules = _closure(module)
    for mod, fn in reached(module):
        where = f"{mod.name}.{getattr(fn, 'name', '<module>')}"
        roots: dict[str, tuple[str, ...]] = {}
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                p = _path(node.value, roots)
                if p is not None:
                    roots[node.targets[0].id] = p
        parents = _parents(fn)
        for node in ast.walk(fn):
            parent = parents.get(node)
            if isinstance(parent, ast.BinOp) and parent.left is node or isinstance(parent, ast.Assign):
                continue  # not maximal, or an alias (counted where it is used)
            p = _path(node, roots)
            if p is not None and not isinstance(node, ast.Name):
                parts = [q for q in p if q != "*"]
                if parts and len(parts) == len(p[: len(parts)]) and p[: len(parts)] == tuple(parts):
                    out.setdefault("/".join(parts), where)
            if isinstance(node, ast.Call) and (t := _target(mod, node.func, modules)) in NAMED_PATHS:
                name = node.args[1] if len(node.args) > 1 else None
                if isinstance(name, ast.Constant):
                    out |= {f.format(name.value): where for f in NAMED_PATHS[t]}
    return out


def untracked_paths(stage: Stage) -> dict[str, str]:
    declared = [
        p.relative_to(LAYOUT.root).as_posix() for p in (*stage.inputs, *stage.outputs, *stage.unlisted)
    ]
    related = lambda p, d: p == d or p.startswith(d + "/") or d.startswith(p + "/")  # noqa: E731
    return {p: w for p, w in paths_touched(stage).items() if not any(related(p, d) for d in declared)}


# ----------------------------------------------------------------------------------------------- tests
def test_dvc_yaml_is_generated_from_the_manifests():
    assert dvc_stages.drift() == [], (
        "dvc.yaml is not the generated one: run python -m plumbing.dvc_stages --write"
    )


def test_the_generated_stages_keep_their_names_and_commands():
    for f in dvc_stages.dvc_files():
        stages = yaml.safe_load((ROOT / f).read_text())["stages"]
        assert {n: s["cmd"] for n, s in stages.items()} == {
            s.name: s.cmd for s in STAGES.values() if s.dvc_file == f
        }
    assert [s.cmd for s in STAGES.values()][:3] == [
        "python -m flows.prepare",
        "python -m flows.finetune",
        "python -m flows.soup",
    ]


def _uncovered(stage: Stage, deps: list[str]) -> list[str]:
    modules = import_closure(ROOT, stage.module, dvc_stages.NOT_COMPUTING, DYNAMIC_IMPORTS)
    files = {module_file(ROOT, m).relative_to(ROOT).as_posix() for m in modules}
    return sorted(f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))


def test_every_stage_lists_the_code_it_imports():
    drift = {}
    for f in dvc_stages.dvc_files():
        for name, spec in yaml.safe_load((ROOT / f).read_text())["stages"].items():
            drift[name] = _uncovered(STAGES[name], spec.get("deps", []))
    drift = {s: files for s, files in drift.items() if files}
    assert not drift, f"dvc.yaml deps miss modules their stage imports: {drift}"


def test_the_check_sees_the_finetune_drift_of_issue_27(tmp_path):
    """Yesterday's dvc.yaml: finetune without adversarial.py and modeling.py must fail both checks."""
    text = (ROOT / "dvc.yaml").read_text()
    stages = yaml.safe_load(text)["stages"]
    gone = ("src/robustprune/adversarial.py", "src/robustprune/modeling.py")
    old = [d for d in stages["finetune"]["deps"] if d not in gone]
    assert set(gone) <= set(_uncovered(STAGES["finetune"], old))
    copy = tmp_path / "dvc.yaml"
    copy.write_text(
        "".join(line for line in text.splitlines(keepends=True) if line.strip("- \n") not in gone)
    )
    assert copy.read_text() != text and copy.read_text() != dvc_stages.render("dvc.yaml", ROOT)


def test_every_param_a_stage_reads_is_in_its_manifest():
    missing = {name: unlisted_params(s) for name, s in STAGES.items()}
    missing = {n: m for n, m in missing.items() if m}
    assert not missing, (
        f"stages read params keys their manifest (src/robustprune/stages.py) misses: {missing}"
    )


def test_every_path_a_stage_touches_is_an_input_or_output_of_its_manifest():
    stray = {name: untracked_paths(s) for name, s in STAGES.items()}
    stray = {n: m for n, m in stray.items() if m}
    assert not stray, f"stages touch paths their manifest (src/robustprune/stages.py) does not name: {stray}"


@pytest.mark.parametrize(
    ("stage", "key"),
    [
        ("sds", "calibrate.batch_size"),
        ("evaluate", "evaluate"),
        ("cap", "cap"),
        ("prune", "soup.prune_source"),
    ],
)
def test_the_params_check_sees_a_key_dropped_from_the_manifest(stage: str, key: str):
    s = STAGES[stage]
    dropped = Stage(**{**s.__dict__, "params": tuple(k for k in s.params if k != key)})
    assert any(k == key or k.startswith(key + ".") for k in unlisted_params(dropped)), key


@pytest.mark.parametrize(
    ("stage", "path"),
    [
        ("calibrate", "reports/calibrate.json"),
        ("prune", "reports/prune.json"),
        ("sds", "models/sds"),
        ("attack", "reports/attacks/index.json"),
    ],
)
def test_the_paths_check_sees_an_output_dropped_from_the_manifest(stage: str, path: str):
    s = STAGES[stage]
    keep = lambda ps: tuple(p for p in ps if not path.startswith(p.relative_to(LAYOUT.root).as_posix()))  # noqa: E731
    dropped = Stage(**{**s.__dict__, "outs": keep(s.outs), "metrics": keep(s.metrics)})
    assert path not in untracked_paths(s)
    assert path in untracked_paths(dropped)


def test_the_generator_writes_a_dropped_param_and_output_into_dvc_yaml(monkeypatch):
    """--check fails when the manifest and dvc.yaml differ in params or outs (the reverse direction)."""

    def dropped(layout: Layout) -> dict[str, Stage]:
        s = manifests(layout)["calibrate"]
        return {
            **manifests(layout),
            "calibrate": Stage(**{**s.__dict__, "params": s.params[:-1], "metrics": ()}),
        }

    monkeypatch.setattr(dvc_stages, "manifests", dropped)
    assert dvc_stages.drift() == ["dvc.yaml"]


def test_imported_names_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from robustprune.adversarial import freelb\n")
    assert "robustprune.adversarial" in imported_names(f, "tasks.m", from_modules=True)


def _cache_key_fns(mod: Module) -> dict[str, str]:
    """task function -> its ``cache_key_fn`` (a function of the same module), from ``@task(cache_key_fn=...)``."""
    out = {}
    for name, fn in mod.defs.items():
        for d in fn.decorator_list:
            for kw in getattr(d, "keywords", []):
                if kw.arg == "cache_key_fn" and isinstance(kw.value, ast.Name):
                    out[name] = kw.value.id
    return out


def test_the_checks_read_the_cache_keys_of_the_tasks_a_stage_runs():
    """A task's Prefect cache key names inputs and params too: the checks above see them (so a key hashing a
    params key or a path its stage's manifest lacks fails them), for every cached task of every stage."""
    seen = 0
    for stage in STAGES.values():
        functions = {(m.name, getattr(f, "name", "")) for m, f in reached(stage.module)}
        for module in _closure(stage.module).values():
            for task, key in _cache_key_fns(module).items():
                if (module.name, task) in functions:
                    assert (module.name, key) in functions, (stage.name, task, key)
                    seen += 1
    assert seen >= 4  # evaluate (model, reference), attack and soup (shard)


def test_the_params_check_reads_a_cache_key_function(monkeypatch):
    """Planted: evaluate's cache key hashes a params key the evaluate manifest does not name."""
    mod = _module("tasks.evaluate")
    fn = mod.defs["_cache_key"]
    extra = ast.parse("params.sds.lr").body[0]
    monkeypatch.setattr(fn, "body", [extra, *fn.body])
    _params_read.cache_clear()
    try:
        assert "sds.lr" in unlisted_params(STAGES["evaluate"])
    finally:
        monkeypatch.undo()
        _params_read.cache_clear()


def test_the_code_a_cache_key_hashes_is_code_dvc_yaml_lists_for_its_stage():
    """``code_digest("robustprune.x", ...)`` in a task of a stage: each module is one of the stage's deps (a
    cache key that hashes code the stage does not import names the wrong inputs)."""
    wrong = {}
    for stage in STAGES.values():
        deps = dvc_stages.code_deps(stage)
        for mod, fn in reached(stage.module):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "code_digest":
                    for arg in node.args:
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                            f = module_file(ROOT, arg.value)
                            rel = f.relative_to(ROOT).as_posix() if f else arg.value
                            if not any(rel == d or rel.startswith(d + "/") for d in deps):
                                wrong.setdefault(stage.name, []).append(f"{mod.name}: {arg.value}")
    assert not wrong, f"cache keys hash code their stage's dvc.yaml deps do not list: {wrong}"


def test_dvc_hashes_a_package_dependency_without_its_byte_code():
    """A package dep (``src/robustprune/attacks``, ``.../pruning``) is hashed as a directory; the ``__pycache__``
    a run writes inside it (unless PYTHONDONTWRITEBYTECODE) must not count, or a clone's first ``make run``
    finds a committed dvc.lock's stages "modified" and re-runs them. Source files must still count."""
    from dvc.repo import Repo

    repo = Repo(str(ROOT))
    dirs = {d for stage in STAGES.values() for d in dvc_stages.code_deps(stage) if (ROOT / d).is_dir()}
    assert "src/robustprune/pruning" in dirs  # the packages the check is about are there
    for d in sorted(dirs):
        pyc = ROOT / d / "__pycache__" / "x.cpython-311.pyc"
        assert repo.dvcignore.is_ignored(repo.fs, str(pyc)), f"{d}: DVC hashes its __pycache__ (.dvcignore)"
        assert not repo.dvcignore.is_ignored(repo.fs, str(ROOT / d / "x.py")), f"{d}: .dvcignore hides source"
