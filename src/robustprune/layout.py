"""Where each stage reads and writes: the project's paths, relative to a root (the repository, or a test's
tmp dir). Tasks get one :class:`Layout`; the stage manifests (:mod:`robustprune.stages`) name their inputs
and outputs as its attributes, and dvc.yaml is generated from them (``python -m plumbing.dvc_stages``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from robustprune.config import combo_label

RESOURCES_ENV = "ROBUSTPRUNE_RESOURCES"


@dataclass(frozen=True)
class Layout:
    """Where each stage reads and writes, relative to a project root (the repo, or a test's tmp dir)."""

    root: Path

    @property
    def resources(self) -> Path:
        """Unpacked offline resources: ``$ROBUSTPRUNE_RESOURCES`` if set (one copy shared by several
        checkouts or test projects; unpacking is atomic), else ``<root>/.cache/resources``."""
        env = os.environ.get(RESOURCES_ENV)
        return Path(env).expanduser() if env else self.root / ".cache" / "resources"

    @property
    def data(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def calibration(self) -> Path:
        return self.root / "data" / "calibration"

    @property
    def base_model(self) -> Path:
        return self.root / "models" / "base"

    @property
    def finetuned(self) -> Path:
        return self.root / "models" / "finetuned"

    @property
    def soup(self) -> Path:
        return self.root / "models" / "soup"

    @property
    def pruned(self) -> Path:
        return self.root / "models" / "pruned"

    @property
    def sds(self) -> Path:
        return self.root / "models" / "sds"

    @property
    def cap(self) -> Path:
        return self.root / "models" / "cap"

    @property
    def attack(self) -> Path:
        """The offline attack resources the ``attack_resources`` stage builds (embeddings, MLM, tagger...)."""
        return self.root / "models" / "attack"

    @property
    def prune_work(self) -> Path:
        return self.root / ".cache" / "prune-work"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def pruned_model(self, method: str, sparsity: str) -> Path:
        return self.pruned / combo_label(method, sparsity)
