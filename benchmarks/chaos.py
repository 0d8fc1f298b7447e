"""Chaos: kill -9 at random points of the stages, resume, count identical outputs; and the bad-input corpus.

    .venv/bin/python benchmarks/chaos.py                 # 20 kill points (prune, sds, cap, attack in turn)
    .venv/bin/python benchmarks/chaos.py --points 40 --seed 1
    .venv/bin/python benchmarks/chaos.py --corpus        # every malformed input as a real command, timed

Kill points: the tiny project of the reliability suite (tests/reliability/conftest.py) is run once to the
end in-process (the reference). For each point a copy of it without the stage's outputs is started with
``python -m flows.<stage>``, killed with SIGKILL at a uniform random time within the stage's duration
(counted from "Beginning flow run"), and started again to the end. A point counts as resumed when the
second run exits 0, its outputs equal the reference (checkpoints byte for byte, JSON without timings),
no temporary file is left and nothing that had finished was rewritten. Writes benchmarks/results/chaos.json.

Corpus: each case of tests/reliability/corpus.py as the real command (interpreter start included):
exit code, the key in the message, the tree unchanged, wall seconds. Writes benchmarks/results/bad_inputs.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401 - paths and offline environment first
from _common import RESULTS, ROOT, provenance

STAGES = ("prune", "sds", "cap", "attack")


def chaos(points: int, seed: int, workdir: Path) -> dict:
    os.environ["PREFECT_HOME"] = str(workdir / "prefect-home")
    import torch
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    import tests.conftest  # noqa: F401 - the test environment (wheels, threads)
    from tests.reliability.conftest import run_project

    # the reference runs in this process, which imported torch before tests.conftest set OMP_NUM_THREADS:
    # the resumed stages (subprocesses) read it, so the reference must use the same thread count to be
    # comparable byte for byte (float reductions depend on it)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from tests.reliability.test_kill import kill_and_resume

    rows = []
    # a configured Prefect API (PREFECT_API_URL) is used as it is; otherwise a temporary one is started
    with (
        contextlib.nullcontext()
        if PREFECT_API_URL.value()
        else prefect_test_harness(server_startup_timeout=600)
    ):
        api = PREFECT_API_URL.value()
        t0 = time.perf_counter()
        project = run_project(workdir / "reference")
        print(f"reference run: {time.perf_counter() - t0:.0f} s; stage seconds {project.seconds}", flush=True)
        stages = [s for s in STAGES if s in project.seconds]
        rng = random.Random(seed)
        for i in range(points):
            stage = stages[i % len(stages)]
            point_seed = rng.randrange(2**31)
            t1 = time.perf_counter()
            rep = kill_and_resume(project, stage, workdir / f"point-{i:02d}", api, seed=point_seed, kills=1)
            ok = not rep["differences"] and not rep["leftovers"] and rep["kept"]
            rows.append(
                {
                    "point": i,
                    "stage": stage,
                    "seed": point_seed,
                    "killed_while_running": bool(rep["killed"]),
                    "resumed_identical": ok,
                    "differences": rep["differences"][:10],
                    "leftovers": rep["leftovers"][:10],
                    "finished_work_kept": rep["kept"],
                    "seconds": round(time.perf_counter() - t1, 1),
                }
            )
            r = rows[-1]
            print(
                f"{i:>3} {stage:<7} killed={r['killed_while_running']!s:<5} identical={ok!s:<5} "
                f"kept={rep['kept']!s:<5} {r['seconds']:>6.1f}s",
                flush=True,
            )
            if not ok:
                print(f"    differences {r['differences']} leftovers {r['leftovers']}", flush=True)
    killed = [r for r in rows if r["killed_while_running"]]
    return {
        "points": points,
        "seed": seed,
        "reference_stage_seconds": project.seconds,
        "killed_while_running": len(killed),
        "resumed_identical": sum(r["resumed_identical"] for r in rows),
        "resumed_identical_of_killed": sum(r["resumed_identical"] for r in killed),
        "rows": rows,
    }


def corpus(workdir: Path) -> dict:
    import tests.conftest  # noqa: F401
    from robustprune.preflight import cuda_visible
    from tests.reliability.corpus import CASES, materialise, root_of, write_base
    from tests.reliability.test_bad_inputs import snapshot

    base = workdir / "base"
    base.mkdir(parents=True)
    write_base(base)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    rows = []
    for case in CASES:
        if case.needs in ("api", "dead-api") or (case.needs == "no-cuda" and cuda_visible()):
            rows.append({"case": case.name, "skipped": f"needs {case.needs or 'no CUDA'}"})
            continue
        case_dir = workdir / case.name
        params = materialise(case, base, case_dir)
        root = root_of(case, case_dir)
        case_env = dict(env)
        for k, v in case.env.items():
            case_env.pop(k, None) if v is None else case_env.__setitem__(k, v)
        before = snapshot(case_dir, base)
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", f"flows.{case.stage}", "--params", str(params), "--root", str(root)],
            cwd=ROOT,  # flows/ is imported from the repository, as the suite runs it
            env=case_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        seconds = time.perf_counter() - t0
        named = any(all(p in line for p in case.expected) for line in res.stderr.splitlines())
        rows.append(
            {
                "case": case.name,
                "stage": case.stage,
                "exit_code": res.returncode,
                "key_named": named,
                "tree_unchanged": snapshot(case_dir, base) == before,
                "seconds": round(seconds, 2),
                "stopped_cleanly": res.returncode == 2 and named and snapshot(case_dir, base) == before,
            }
        )
        r = rows[-1]
        print(f"{case.name:<32} exit={r['exit_code']} named={named!s:<5} {seconds:5.2f}s", flush=True)
    ran = [r for r in rows if "skipped" not in r]
    secs = [r["seconds"] for r in ran]
    return {
        "cases": len(rows),
        "ran": len(ran),
        "stopped_cleanly": sum(r["stopped_cleanly"] for r in ran),
        "seconds_median": statistics.median(secs),
        "seconds_max": max(secs),
        "under_5_seconds": sum(s < 5 for s in secs),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=20, help="kill points (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus", action="store_true", help="time the bad-input corpus instead")
    ap.add_argument("--workdir", default=None, help="where the projects go (default: a temporary directory)")
    args = ap.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="chaos-"))
    if args.corpus:
        out = {**provenance(), **corpus(workdir)}
        path = RESULTS / "bad_inputs.json"
        print(
            f"\n{out['stopped_cleanly']} of {out['ran']} malformed inputs stopped cleanly (exit 2, key named, "
            f"tree unchanged); median {out['seconds_median']:.2f} s, max {out['seconds_max']:.2f} s, "
            f"{out['under_5_seconds']} under 5 s ({out['cases'] - out['ran']} need a Prefect API: in the test suite)"
        )
    else:
        out = {**provenance(), **chaos(args.points, args.seed, workdir)}
        path = RESULTS / "chaos.json"
        print(
            f"\n{out['resumed_identical']} of {out['points']} kill -9 points resumed with identical outputs "
            f"({out['killed_while_running']} landed while the stage ran; of those "
            f"{out['resumed_identical_of_killed']} identical)"
        )
    path.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
