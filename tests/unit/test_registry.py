"""Each pruning method and attack recipe is declared once, in ``robustprune.registry`` (issue #27).

The params schema, the kernel dispatch, the recipe builders, the report's titles and order and the attack
task's wiring derive from it; a method or recipe name spelled as a string anywhere else in the library,
``tasks/``, ``flows/`` or ``plumbing/`` fails :func:`test_no_stray_method_or_recipe_name` (docstrings,
tests, docs, benchmarks and the params files may name them). The allowed exceptions are the same words in
another namespace, counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from robustprune import registry

ROOT = Path(__file__).resolve().parents[2]
SCANNED = (ROOT / "src" / "robustprune", ROOT / "tasks", ROOT / "flows", ROOT / "plumbing")
NAMES = {*registry.METHODS, *registry.RECIPES, registry.PROXY.name}

#: (file, word) -> (how many times, why it is not a method or recipe name there)
ALLOWED = {
    ("src/robustprune/attacks/bert_attack.py", "bert-attack"): (
        1,
        "textattack's WordSwapMaskedLM(method=...)",
    ),
    ("src/robustprune/cap/masks.py", "magnitude"): (4, "CAP's mask criterion (cap.criterion)"),
    ("src/robustprune/cap/report.py", "magnitude"): (2, "CAP's mask criterion (cap.criterion)"),
    ("src/robustprune/config.py", "magnitude"): (2, "CAP's mask criterion (cap.criterion)"),
    ("src/robustprune/config.py", "rakp"): (1, "the lm.rakp params section (a field name)"),
    ("src/robustprune/report.py", "a2t"): (
        1,
        "an A2T ingredient's settings in its metrics (finetune.variants), not the proxy recipe",
    ),
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def name_literals(path: Path, names: set[str] = NAMES) -> list[tuple[int, str]]:
    """(line, name) of every string constant in ``path`` equal to a method or recipe name, docstrings aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docs = _docstrings(tree)
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in docs
    )


def stray_literals(roots=SCANNED, allowed=ALLOWED, base: Path = ROOT) -> list[str]:
    found: dict[tuple[str, str], list[int]] = {}
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            if f == base / "src" / "robustprune" / "registry.py":
                continue
            for line, name in name_literals(f):
                found.setdefault((f.relative_to(base).as_posix(), name), []).append(line)
    out = []
    for (file, name), lines in sorted(found.items()):
        limit = allowed.get((file, name), (0, ""))[0]
        if len(lines) != limit:
            out.append(f"{file}: {name!r} on lines {lines} ({len(lines)} found, {limit} allowed)")
    out += [
        f"{f}: {n!r} allowed {c} time(s), not found"
        for (f, n), (c, _) in allowed.items()
        if (f, n) not in found
    ]
    return out


def test_no_stray_method_or_recipe_name():
    bad = stray_literals()
    assert not bad, (
        "method / recipe names spelled outside robustprune/registry.py (use its entries):\n" + "\n".join(bad)
    )


def test_the_scan_sees_a_planted_name(tmp_path: Path):
    """A title table and a recipe comparison written by hand are found; a docstring and a name are not."""
    f = tmp_path / "pkg" / "m.py"
    f.parent.mkdir()
    f.write_text(
        '"""Mentions rakp and textfooler."""\n'
        'TITLES = {"textfooler": "TextFooler"}\n'
        "def g(recipe):\n"
        '    """bert-attack"""\n'
        '    return recipe == "bert-attack" or rakp\n'
    )
    assert name_literals(f) == [(2, "textfooler"), (5, "bert-attack")]
    assert stray_literals([tmp_path / "pkg"], {}, tmp_path) == [
        "pkg/m.py: 'bert-attack' on lines [5] (1 found, 0 allowed)",
        "pkg/m.py: 'textfooler' on lines [2] (1 found, 0 allowed)",
    ]


def test_everything_derives_from_the_registry():
    from robustprune import attacks, config, pruning, readme_table, report, verdicts

    assert config.PRUNE_METHODS == pruning.METHODS == tuple(registry.METHODS)
    assert config.ATTACK_RECIPES == tuple(attacks.RECIPES) == tuple(registry.RECIPES)
    assert {r.name: r.title for r in registry.RECIPES.values()} == report.RECIPE_TITLES
    assert readme_table.METHOD_ORDER[1 : 1 + len(registry.METHODS)] == tuple(registry.METHODS)
    assert set(verdicts.BASELINES) == {m.name for m in registry.METHODS.values() if m.baseline}
    assert registry.REFERENCE_METHOD.baseline
    for m in registry.METHODS.values():  # one kernel a file
        assert (ROOT / "src" / "robustprune" / "pruning" / f"{m.name}.py").is_file(), m.name
    for r in [*registry.RECIPES.values(), registry.PROXY]:
        module = (
            ROOT / "src" / "robustprune" / ("attacks" if r is not registry.PROXY else "") / f"{r.module}.py"
        )
        assert module.is_file(), r.name
        assert r.options is None or r.options in config.AttackConfig.model_fields, r.name
        assert set(r.loads) <= {"tagger", "masked_lm", "encoder"}, r.name
    p = config.parse_params({})  # the schema takes every registered name, and only those
    assert p.prune.methods == list(registry.METHODS) and p.attack.recipes == list(registry.RECIPES)


def test_every_registered_method_dispatches_with_the_statistics_it_declares():
    """prune_weight runs each method with what ``statistics`` says it needs; the driver collects that much."""
    from robustprune.pruning import parse_pattern, prune_weight
    from robustprune.pruning.layerwise import PruneOptions, stats_plan

    torch.manual_seed(0)
    W, X = torch.randn(8, 16), torch.randn(64, 16)
    H = 2 / len(X) * X.T @ X
    for m in registry.METHODS.values():
        result = prune_weight(m.name, W, parse_pattern(0.5), None if m.statistics == "none" else H)
        assert int((~result.mask).sum()) == W.numel() // 2, m.name
        plan = stats_plan(PruneOptions(method=m.name, pattern=parse_pattern(0.5), track_dense=False))
        assert plan.hessian == m.statistics and plan.dense == m.dense_stream, (m.name, plan)
