"""Mutation testing of the numerical core with mutmut 3 (``make mutation``; not part of CI).

Each module group below is mutated in its own scratch copy of the repository (``.cache/mutation/<group>``:
``src/``, ``tests/`` and ``pyproject.toml`` with a ``[tool.mutmut]`` section naming the group's files and its
unit test files), so a mutant is run against the unit tests that are about that module only, and mutmut's
per-function test selection then runs just the tests that call the mutated function. A mutant is

* **killed** when one of those tests fails (or it times out: the change made a loop run away);
* **survived** when they all pass — a behaviour change no test sees, or
* **equivalent** when it survives and ``benchmarks/mutation_equivalent.json`` explains, in one line, why it
  cannot change behaviour (matched on the mutant's name *and* its changed line, so an entry goes stale,
  and the mutant counts as survived again, once the code under it changes);
* **no tests** when no selected test calls the mutated function (counted with the survivors).

Score = (killed + timeout) / (total − equivalent). ``benchmarks/results/mutation.json`` holds, per group
and per file, the counts and every survivor with its location and diff; merged with the groups of earlier
runs, so one group can be re-run alone::

    .venv/bin/python benchmarks/mutation.py                       # every group (≤ 60 min on 2 cores)
    .venv/bin/python benchmarks/mutation.py --groups stats verdicts adversarial
    .venv/bin/python benchmarks/mutation.py --list                # the groups, files and tests
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (paths and offline settings first)
from _common import RESULTS, ROOT, provenance

SDS_LAYER_TESTS = [
    "test_quadratic_stats_objective_matches_token_loss",
    "test_lipschitz_is_an_upper_bound_close_to_lambda_max",
    "test_unregularised_reactivation_converges_to_least_squares",
    "test_unregularised_reactivation_reproduces_dense_outputs_on_dense_inputs",
    "test_adam_decreases_the_objective",
    "test_large_penalty_keeps_pruned_positions_at_zero",
    "test_penalty_is_only_on_previously_pruned_positions",
    "test_dense_init_starts_from_the_dense_weight",
    "test_adjust_layer_keeps_the_mask_and_improves",
    "test_options_are_validated",
    "test_lr_is_validated_per_optimiser",
    "test_only_the_proximal_optimisers_make_exact_zeros",
]
# group -> (files to mutate, unit test files that are about them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "stats": (["src/robustprune/stats.py"], ["tests/unit/test_stats.py"]),
    "verdicts": (["src/robustprune/verdicts.py"], ["tests/unit/test_report.py", "tests/unit/test_stats.py"]),
    "adversarial": (["src/robustprune/adversarial.py"], ["tests/unit/test_adversarial.py"]),
    "soup": (["src/robustprune/soup.py"], ["tests/unit/test_soup.py"]),
    "fidelity": (["src/robustprune/fidelity.py"], ["tests/unit/test_fidelity.py"]),
    # the kernels are judged by the kernel tests; the model-level driver (block streams, the layer-wise
    # engine, α selection, the head refit) by test_sequential.py, whose whole-model runs would make every
    # kernel mutant cost minutes
    "pruning": (
        [
            "src/robustprune/pruning/__init__.py",
            "src/robustprune/pruning/hessian.py",
            "src/robustprune/pruning/magnitude.py",
            "src/robustprune/pruning/masks.py",
            "src/robustprune/pruning/rakp.py",
            "src/robustprune/pruning/result.py",
            "src/robustprune/pruning/sparsegpt.py",
            "src/robustprune/pruning/wanda.py",
        ],
        ["tests/unit/test_pruning_kernels.py", "tests/unit/test_pruning_masks.py"],
    ),
    "pruning_driver": (
        [
            "src/robustprune/pruning/block.py",
            "src/robustprune/pruning/branch.py",
            "src/robustprune/pruning/layerwise.py",
            "src/robustprune/pruning/rakp_alpha.py",
            "src/robustprune/pruning/rakp_head.py",
            "src/robustprune/pruning/sequential.py",
            "src/robustprune/pruning/streams.py",
        ],
        [
            "tests/unit/test_sequential.py",
            "tests/unit/test_branch.py",
            "tests/unit/test_prune_plan.py",
            "tests/unit/test_pruning_masks.py",
        ],
    ),
    "sds_layer": (  # the layer-level tests (test_sds.py's model-level ones exercise the driver, sds.py)
        ["src/robustprune/sds_layer.py"],
        ["tests/unit/test_sds_layer.py"] + [f"tests/unit/test_sds.py::{t}" for t in SDS_LAYER_TESTS],
    ),
    "cap": (
        [
            "src/robustprune/cap/loss.py",
            "src/robustprune/cap/masks.py",
            "src/robustprune/cap/structured.py",
            "src/robustprune/cap/schedule.py",
        ],
        ["tests/unit/test_cap.py", "tests/unit/test_cap_core.py"],
    ),
    "attack_metrics": (
        ["src/robustprune/attacks/metrics.py"],
        [
            "tests/unit/test_attack_metrics.py",
            "tests/unit/test_attacks.py::test_summarize_matches_textattack_definitions",
            "tests/unit/test_attacks.py::test_summarize_edge_cases",
        ],
    ),
}
# lines never mutated: an error's wording and progress display are not the maths (the condition that raises
# the error still is mutated, and so is everything it guards)
NOT_MUTATED = [r"raise \w+\(", r'^\s+f"', r"set_postfix\(", r"tqdm\(", r"logger\.\w+\("]
ALSO_COPY = ("tasks", "flows", "plumbing")
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.json"
KILLED = {"killed", "timeout"}


def _mutmut_config(files: list[str], tests: list[str]) -> str:
    def arr(xs: list[str]) -> str:
        return "[" + ", ".join(json.dumps(x) for x in xs) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src/"]\n'
        f"only_mutate = {arr(files)}\n"
        f"pytest_add_cli_args_test_selection = {arr(tests)}\n"
        "pytest_add_cli_args = "
        + arr(
            ["-p", "no:cacheprovider", "-m", "not slow and not integration and not reliability and not gpu"]
        )
        + "\n"
        f"also_copy = {arr([d + '/' for d in ALSO_COPY])}\n"
        'on_dependency_change = "ignore"\n'
        f"do_not_mutate_patterns = {arr(NOT_MUTATED)}\n"
    )


def _prepare(group: str, files: list[str], tests: list[str]) -> Path:
    """A fresh scratch copy with only what the unit tests import: src/, tests/, tasks/, flows/, pyproject.toml."""
    work = ROOT / ".cache" / "mutation" / group
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    for extra in ("tests", *ALSO_COPY):  # tests import tasks/ (not mutated) here and there
        shutil.copytree(ROOT / extra, work / extra, ignore=ignore)
    text = (ROOT / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(
        re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", text) + _mutmut_config(files, tests)
    )
    return work


def _diffs(work: Path, names: list[str]) -> dict[str, str]:
    """mutmut's own diff of each named mutant (one subprocess for all of them)."""
    if not names:
        return {}
    code = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
        "out = {}\n"
        "for n in json.loads(sys.stdin.read()):\n"
        "    try:\n"
        "        out[n] = get_diff_for_mutant(n)\n"
        "    except Exception as e:  # noqa: BLE001\n"
        "        out[n] = f'(no diff: {e!r})'\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=work, input=json.dumps(names), capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {n: f"(no diff: {proc.stderr.strip()[-300:]})" for n in names}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _changed(diff: str) -> tuple[str, str]:
    """The first removed and first added line of a diff (stripped)."""
    minus = next(
        (ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")), ""
    )
    plus = next(
        (ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")), ""
    )
    return minus, plus


def _line_of(source: str, qualname: str, removed: str) -> int | None:
    """Line number of ``removed`` inside function ``qualname`` of ``source`` (first match), else the def."""
    tree = ast.parse(source)
    parts = qualname.split(".")
    nodes: list[ast.AST] = list(tree.body)
    found: ast.AST | None = None
    for i, part in enumerate(parts):
        match = [n for n in nodes if getattr(n, "name", None) == part]
        if not match:
            return None
        found = match[0]
        if i < len(parts) - 1:
            nodes = list(getattr(found, "body", []))
    if found is None:
        return None
    lines = source.splitlines()
    start, end = found.lineno, getattr(found, "end_lineno", found.lineno)
    for k in range(start - 1, end):
        if removed and lines[k].strip() == removed:
            return k + 1
    if removed:  # a removed line that mutmut reformatted: the first line containing its head
        head = removed[:30]
        for k in range(start - 1, end):
            if head and head in lines[k]:
                return k + 1
    return start


def _qualname(name: str) -> str:
    """``robustprune.cap.loss.x_representation__mutmut_3`` -> ``representation`` (``xǁCǁm`` -> ``C.m``)."""
    func = name.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    if func.startswith("xǁ"):
        return ".".join(func[2:].split("ǁ"))
    return func[2:] if func.startswith("x_") else func


def _collect(group: str, work: Path, equivalent: dict) -> dict:
    from mutmut.stats import status_by_exit_code

    files: dict[str, dict] = {}
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        rel = meta.relative_to(work / "mutants").as_posix()[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = {k: status_by_exit_code[v] for k, v in codes.items()}
        alive = sorted(k for k, s in statuses.items() if s not in KILLED)
        diffs = _diffs(work, alive)
        source = (ROOT / rel).read_text()
        counts = {"total": len(statuses), "killed": 0, "timeout": 0, "survived": 0, "no_tests": 0}
        counts |= {"equivalent": 0, "other": 0}
        survivors, equivalents = [], []
        for k, s in sorted(statuses.items()):
            if s in ("killed", "timeout"):
                counts[s] += 1
                continue
            diff = diffs.get(k, "")
            minus, plus = _changed(diff)
            entry = {
                "mutant": k,
                "status": s,
                "location": f"{rel}:{_line_of(source, _qualname(k), minus)}",
                "function": _qualname(k),
                "diff": diff,
            }
            eq = equivalent.get(k)
            if eq is not None and eq.get("removed") == minus and eq.get("added") == plus:
                counts["equivalent"] += 1
                equivalents.append({**entry, "why": eq["why"]})
                continue
            if eq is not None:
                entry["stale_equivalent_entry"] = eq
            key = {"survived": "survived", "no tests": "no_tests"}.get(s, "other")
            counts[key] += 1
            survivors.append(entry)
        files[rel] = {**counts, "survivors": survivors, "equivalents": equivalents}
    tot = {
        k: sum(f[k] for f in files.values()) for k in ("total", "killed", "timeout", "survived", "no_tests")
    }
    tot |= {k: sum(f[k] for f in files.values()) for k in ("equivalent", "other")}
    denom = tot["total"] - tot["equivalent"]
    tot["score"] = round((tot["killed"] + tot["timeout"]) / denom, 4) if denom else None
    return {**tot, "files": files}


def run_group(group: str, max_children: int, equivalent: dict) -> dict:
    files, tests = GROUPS[group]
    missing = [t for t in tests if not (ROOT / t.split("::")[0]).exists()]
    tests = [t for t in tests if t not in missing]
    work = _prepare(group, files, tests)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": ""}
    mutmut = Path(sys.executable).with_name("mutmut")
    t0 = time.perf_counter()
    log = work / "mutmut.log"
    with log.open("w") as fh:
        proc = subprocess.run(
            [str(mutmut), "run", "--max-children", str(max_children)], cwd=work, env=env, stdout=fh, stderr=fh
        )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"mutmut failed on group {group} (exit {proc.returncode}), log {log}:\n{tail}")
    out = _collect(group, work, equivalent)
    out.update({"seconds": round(seconds, 1), "mutated": files, "tests": tests, "tests_missing": missing})
    return out


def _table(groups: dict) -> str:
    rows = [
        "| group | mutants | killed | survived | no tests | equivalent | score | minutes |",
        "|---" * 8 + "|",
    ]
    for g, r in groups.items():
        score = "–" if r["score"] is None else f"{100 * r['score']:.1f}%"
        rows.append(
            f"| {g} | {r['total']} | {r['killed'] + r['timeout']} | {r['survived'] + r['other']} | "
            f"{r['no_tests']} | {r['equivalent']} | {score} | {r['seconds'] / 60:.1f} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", nargs="+", choices=sorted(GROUPS), default=list(GROUPS))
    ap.add_argument("--max-children", type=int, default=2, help="parallel mutant workers (2 cores: 2)")
    ap.add_argument("--out", type=Path, default=RESULTS / "mutation.json")
    ap.add_argument("--list", action="store_true", help="print the groups, their files and tests, and exit")
    ap.add_argument(
        "--collect-only",
        action="store_true",
        help="re-read the last run's scratch copies (e.g. after editing mutation_equivalent.json); no mutmut",
    )
    args = ap.parse_args()
    if args.list:
        for g, (files, tests) in GROUPS.items():
            print(f"{g}: mutate {' '.join(files)}; tests {' '.join(tests)}")
        return
    equivalent = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    groups = dict(previous.get("groups", {}))
    runs = dict(previous.get("runs", {}))
    prov = provenance()
    for g in args.groups:
        print(f"[mutation] {g}: {' '.join(GROUPS[g][0])}", flush=True)
        if args.collect_only:
            old = groups.get(g, {})
            groups[g] = {
                **_collect(g, ROOT / ".cache" / "mutation" / g, equivalent),
                **{k: old[k] for k in ("seconds", "mutated", "tests", "tests_missing") if k in old},
            }
        else:
            groups[g] = run_group(g, args.max_children, equivalent)
            runs[g] = prov
        r = groups[g]
        print(f"[mutation] {g}: {r['total']} mutants, score {r['score']}, {r['seconds']:.0f} s", flush=True)
        present = [groups[k] for k in GROUPS if k in groups]
        counts = ("total", "killed", "timeout", "survived", "no_tests", "equivalent", "other")
        overall = {c: sum(r[c] for r in present) for c in counts}
        denom = overall["total"] - overall["equivalent"]
        overall["score"] = round((overall["killed"] + overall["timeout"]) / denom, 4) if denom else None
        result = {
            "overall": overall,
            "groups": {k: groups[k] for k in GROUPS if k in groups},
            "runs": {k: runs[k] for k in GROUPS if k in runs},
            "score": "(killed + timeout) / (total - equivalent); no-tests mutants count as survivors",
            "tool": "mutmut 3.8.1",
        }
        from robustprune.checkpoints import write_json

        write_json(args.out, result)
    print(_table({k: groups[k] for k in GROUPS if k in groups}))
    print(f"overall: {result['overall']}")


if __name__ == "__main__":
    main()
