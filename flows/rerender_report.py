"""Re-render a committed report with today's report code, from the files it was made from
(``python -m flows.rerender_report reports/evidence``; ``make report-evidence``).

A committed run directory such as ``reports/evidence/`` holds the outputs its profile changed (``eval.json``,
``attack.json``, ``attacks/<model>/<recipe>.csv``, and since the evidence profile trains its own dense start,
its own ``finetune.json``, ``soup.json``, ``prune.json``, ... as ``make run-evidence`` copies them); a stage
output it does not hold (``prepare.json``, ``finetune.json``, ``soup.json``, ``prune.json``, ``sds.json``,
``cap.json``) is the default run's, from ``reports/``. The report task runs on a temporary copy of both and its ``summary.md``, ``metrics.json`` and
plots replace the directory's (atomically, one file at a time). No model is loaded; nothing else changes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

SHARED = ("prepare.json", "finetune.json", "soup.json", "prune.json", "sds.json", "cap.json")
OWN = ("eval.json", "attack.json")
RENDERED = ("summary.md", "metrics.json")


def shared_inputs(run_dir: Path, base: Path) -> dict[str, Path]:
    """Where each stage output the report reads comes from: the run directory's own copy, else ``base``'s."""
    return {f: run_dir / f if (run_dir / f).is_file() else base / f for f in SHARED}


def rerender(run_dir: Path, base: Path, params_path: Path) -> Path:
    """Render ``run_dir``'s report again; returns its summary path."""
    from robustprune.checkpoints import write_text
    from robustprune.config import load_params

    params = load_params(params_path)
    missing = [str(run_dir / f) for f in OWN if not (run_dir / f).is_file()]
    shared = shared_inputs(run_dir, base)
    missing += [str(p) for f, p in shared.items() if not p.is_file() and f not in ("sds.json", "cap.json")]
    if missing or not (run_dir / "attacks").is_dir():
        raise SystemExit(
            f"error: cannot re-render {run_dir}: missing {missing or [str(run_dir / 'attacks')]}"
        )
    from tasks.common import Layout
    from tasks.report import build_report

    with tempfile.TemporaryDirectory(prefix="rerender-") as tmp:
        reports = Path(tmp) / "reports"
        reports.mkdir()
        for f, path in shared.items():
            if path.is_file():
                shutil.copy(path, reports / f)
        for f in OWN:
            shutil.copy(run_dir / f, reports / f)
        shutil.copytree(run_dir / "attacks", reports / "attacks")
        note = f"Re-rendered from the committed `{run_dir}` files by `python -m flows.rerender_report {run_dir}`."
        build_report.fn(
            Layout(Path(tmp)),
            list(params.attack.recipes),
            note,
            params.attack.seed,
            params.report.near_constant_recall,
            params.report.min_correlation_models,
        )
        for f in RENDERED:
            write_text(run_dir / f, (reports / f).read_text(encoding="utf-8"))
        (run_dir / "plots").mkdir(exist_ok=True)
        for png in sorted((reports / "plots").glob("*.png")):
            tmp_png = run_dir / "plots" / f".{png.name}.tmp"
            shutil.copy(png, tmp_png)
            tmp_png.replace(run_dir / "plots" / png.name)
    return run_dir / "summary.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.rerender_report", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a committed run directory, e.g. reports/evidence")
    p.add_argument(
        "--base", type=Path, default=Path("reports"), help="the default run's reports (%(default)s)"
    )
    p.add_argument(
        "--params", type=Path, default=Path("params-evidence.yaml"), help="its profile (%(default)s)"
    )
    args = p.parse_args(argv)
    print(rerender(args.run_dir, args.base, args.params))
    return 0


if __name__ == "__main__":
    import flows  # noqa: F401  (offline environment)

    sys.exit(main())
