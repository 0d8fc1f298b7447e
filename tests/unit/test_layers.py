"""The project's import graph: no cycle, no arrow back up a layer, a library that knows no orchestrator.

Layers, lowest first (issue #27): ``src/robustprune`` (the library) ← ``plumbing`` (run-time: signals, the
detached Prefect server, DVC sync, remote deployments, task runners, service preflight) ← ``tasks`` (thin
Prefect tasks) ← ``flows`` (flows that only declare and compose). A module may import its own layer or a
lower one, never a higher one; the library imports neither Prefect, MLflow nor DVC. Every ``import`` counts,
also those inside functions or under ``if __name__ == "__main__":`` (they run too, only later).
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

from plumbing.imports import imported_names

ROOT = Path(__file__).resolve().parents[2]

#: top-level package -> (directory that holds it, layer rank)
LAYERS = {"robustprune": (ROOT / "src", 0), "plumbing": (ROOT, 1), "tasks": (ROOT, 2), "flows": (ROOT, 3)}
#: third-party distributions the library must not import (prefect_dask, dvc_objects... included)
ORCHESTRATION = ("prefect", "mlflow", "dvc")
#: HTTP clients: the library talks to no service (the Prefect API check is plumbing's)
HTTP_CLIENTS = ("urllib.request", "http.client", "httpx", "requests", "aiohttp")


def project_modules(layers: dict[str, tuple[Path, int]] = LAYERS) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the layered packages."""
    out = {}
    for top, (base, _) in layers.items():
        for f in sorted((base / top).rglob("*.py")):
            parts = list(f.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module a dotted import name lands in (its longest prefix that is a module), or None."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def import_graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project module -> project modules it imports, project module -> other dotted names it imports)."""
    graph: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for module, path in modules.items():
        names = imported_names(path, module)
        graph[module] = {t for n in names if (t := resolve(n, modules)) is not None and t != module}
        external[module] = {n for n in names if resolve(n, modules) is None}
    return graph, external


def components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.add(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle (``[a, b, ..., a]``) in every strongly connected component, ties broken by name."""
    return sorted((_shortest_cycle(graph, c) for c in components(graph)), key=lambda c: (len(c), c))


def _shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    best: list[str] | None = None
    for start in sorted(component):
        parent = {start: start}
        queue = deque([start])
        found = None
        while queue and found is None:
            node = queue.popleft()
            for child in sorted(graph[node] & component):
                if child == start:
                    found = node
                    break
                if child not in parent:
                    parent[child] = node
                    queue.append(child)
        if found is None:
            continue
        path = [found]
        while path[-1] != start:
            path.append(parent[path[-1]])
        cycle = [*reversed(path), start]
        if best is None or len(cycle) < len(best):
            best = cycle
    assert best is not None
    return best


def layer_violations(
    graph: dict[str, set[str]], external: dict[str, set[str]], layers: dict[str, tuple[Path, int]] = LAYERS
) -> list[str]:
    """``a -> b`` where b's layer is above a's; library modules importing Prefect, MLflow, DVC or an HTTP
    client."""
    rank = {top: r for top, (_, r) in layers.items()}
    out = []
    for module in sorted(graph):
        mine = rank[module.split(".")[0]]
        for target in sorted(graph[module]):
            if rank[target.split(".")[0]] > mine:
                out.append(f"{module} -> {target} (layer {mine} imports layer {rank[target.split('.')[0]]})")
        if mine == 0:
            tops = {n.split(".")[0] for n in external[module]}
            bad = sorted(n for n in tops if n.split("_")[0] in ORCHESTRATION)
            out += [f"{module} -> {n} (the library imports an orchestrator)" for n in bad]
            http = sorted(
                {c for n in external[module] for c in HTTP_CLIENTS if n == c or n.startswith(c + ".")}
            )
            out += [f"{module} -> {n} (the library talks to a service)" for n in http]
    return out


# ----------------------------------------------------------------------------------------------- tests
def test_no_import_cycle():
    graph, _ = import_graph(project_modules())
    found = [(c, _shortest_cycle(graph, c)) for c in components(graph)]
    assert not found, "import cycles among project modules (a shortest one per strongly connected set):\n" + (
        "\n".join(f"{' -> '.join(cycle)} ({len(c)} modules: {sorted(c)})" for c, cycle in found)
    )


def test_no_import_back_up_a_layer_and_a_library_without_orchestrators():
    graph, external = import_graph(project_modules())
    bad = layer_violations(graph, external)
    assert not bad, "imports against the layers (robustprune < plumbing < tasks < flows):\n" + "\n".join(bad)


def task_definitions(path: Path) -> list[str]:
    """Functions in ``path`` decorated as Prefect tasks (``@task``, ``@task(...)``, ``@prefect.task``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for d in node.decorator_list:
                d = d.func if isinstance(d, ast.Call) else d
                name = d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", "")
                if name == "task":
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    return out


def test_flows_define_no_task():
    """flows/ only declares and composes flows: every ``@task`` lives in tasks/."""
    found = [t for f in sorted((ROOT / "flows").rglob("*.py")) for t in task_definitions(f)]
    assert not found, f"Prefect tasks defined in flows/ (move them to tasks/): {found}"


def test_the_graph_sees_what_it_must(tmp_path: Path):
    """The checks on a planted tree: a cycle through a function-level import and a relative import, an
    arrow up a layer, and the library importing Prefect (each must be reported)."""
    (tmp_path / "lib" / "sub").mkdir(parents=True)
    (tmp_path / "top").mkdir()
    (tmp_path / "lib" / "__init__.py").write_text("")
    (tmp_path / "lib" / "sub" / "__init__.py").write_text("")
    (tmp_path / "lib" / "sub" / "a.py").write_text("def f():\n    from .b import g\n")
    (tmp_path / "lib" / "sub" / "b.py").write_text(
        "import prefect.tasks\nfrom lib.sub import a\nimport urllib.parse\n"
    )
    (tmp_path / "lib" / "sub" / "d.py").write_text("from urllib.request import urlopen\n")
    (tmp_path / "lib" / "c.py").write_text("from top import x\n")
    (tmp_path / "top" / "__init__.py").write_text("")
    (tmp_path / "top" / "x.py").write_text("from lib.sub.a import f\n")
    layers = {"lib": (tmp_path, 0), "top": (tmp_path, 1)}
    graph, external = import_graph(project_modules(layers))
    assert graph["lib.sub.a"] == {"lib.sub.b"} and graph["top.x"] == {"lib.sub.a"}
    assert cycles(graph) == [["lib.sub.a", "lib.sub.b", "lib.sub.a"]]
    assert layer_violations(graph, external, layers) == [
        "lib.c -> top.x (layer 0 imports layer 1)",
        "lib.sub.b -> prefect (the library imports an orchestrator)",
        "lib.sub.d -> urllib.request (the library talks to a service)",
    ]
