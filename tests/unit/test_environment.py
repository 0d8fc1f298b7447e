"""The offline environment defaults (plumbing.environment): one table, set by flows, tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from plumbing.environment import offline_defaults, set_defaults

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_offline_and_keep_what_the_caller_chose(monkeypatch, tmp_path):
    table = offline_defaults(tmp_path)
    assert {table[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")} == {"1"}
    assert table["NLTK_DATA"] == str(tmp_path / "nltk_data")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("DVC_NO_ANALYTICS", raising=False)
    monkeypatch.delenv("ROBUSTPRUNE_TEST_EXTRA", raising=False)
    set_defaults(tmp_path, {"ROBUSTPRUNE_TEST_EXTRA": "x"})
    assert os.environ["HF_HUB_OFFLINE"] == "0"  # the caller's choice stands
    assert os.environ["DVC_NO_ANALYTICS"] == "1" and os.environ["ROBUSTPRUNE_TEST_EXTRA"] == "x"


def test_importing_flows_and_benchmarks_sets_the_same_table():
    """Both entry points set every key of the one table (a fresh interpreter with none of them set)."""
    env = {k: v for k, v in os.environ.items() if k not in offline_defaults(ROOT) and k != "PREFECT_HOME"}
    code = (
        "import os, sys; sys.path[:0] = ['benchmarks', '.', 'src']; import {mod}; "
        "from plumbing.environment import offline_defaults; from pathlib import Path; "
        "want = offline_defaults(Path('.').resolve()); "
        "print(sorted(k for k, v in want.items() if os.environ.get(k) != v))"
    )
    for mod in ("flows", "_common"):
        out = subprocess.run(
            [sys.executable, "-c", code.format(mod=mod)], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]", (mod, out.stdout)
