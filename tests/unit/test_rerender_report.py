"""flows.rerender_report: a run directory's own stage outputs win over the default run's (the evidence profile
trains its own dense start, so its finetune.json / soup.json / prune.json are not the default's)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_shared_inputs_prefer_the_run_directorys_own_copies(tmp_path: Path) -> None:
    from flows.rerender_report import SHARED, shared_inputs

    run_dir, base = tmp_path / "evidence", tmp_path / "reports"
    run_dir.mkdir()
    base.mkdir()
    for f in SHARED:
        (base / f).write_text("{}")
    for f in ("finetune.json", "soup.json"):
        (run_dir / f).write_text("{}")
    got = shared_inputs(run_dir, base)
    assert set(got) == set(SHARED)
    assert got["finetune.json"] == run_dir / "finetune.json" and got["soup.json"] == run_dir / "soup.json"
    assert got["prepare.json"] == base / "prepare.json" and got["prune.json"] == base / "prune.json"


def test_rerender_names_what_is_missing_before_rendering(tmp_path: Path) -> None:
    from flows.rerender_report import rerender

    run_dir = tmp_path / "evidence"
    run_dir.mkdir()
    with pytest.raises(SystemExit, match="eval.json"):
        rerender(run_dir, tmp_path / "reports", Path(__file__).parents[2] / "params.yaml")
