"""params.yaml sections become the solvers' option dataclasses key by key: no setting stops short of its solver."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from robustprune.config import PruneConfig, RakpConfig, SdsConfig
from robustprune.options import prune_options, sds_options, section_options

SDS = {
    "l1": 0.7,
    "regularizer": "group",
    "group_size": 8,
    "steps": 3,
    "lr": 0.5,
    "optimizer": "ista",
    "init": "dense",
    "final_adjust_steps": 2,
    "adjust_lr": 0.4,
}


def test_every_sds_key_reaches_the_sds_options():
    assert set(SDS) == set(SdsConfig.model_fields) - {"methods", "sparsities"}  # a new key joins this test
    opts = sds_options(SdsConfig(**SDS))
    assert {k: getattr(opts, k) for k in SDS} == SDS


def test_every_rakp_key_reaches_the_rakp_options():
    rk = RakpConfig(
        alpha="depth",
        alpha_depth=(0.2, 0.9),
        alpha_grid=[0.1, 0.3],
        holdout_fraction=0.4,
        alpha_criterion="model",
        output_stride=3,
        ridge=0.01,
        refit_head=False,
        next_input="dense",
    )
    got = prune_options(PruneConfig(rakp=rk), "rakp", "0.5").rakp
    assert (got.alpha, got.alpha_depth, got.alpha_grid) == (None, (0.2, 0.9), (0.1, 0.3))
    same = ("holdout_fraction", "alpha_criterion", "output_stride", "ridge", "refit_head", "next_input")
    assert {k: getattr(got, k) for k in same} == {k: getattr(rk, k) for k in same}
    assert prune_options(PruneConfig(rakp=RakpConfig(alpha=0.25)), "rakp", "0.5").rakp.alpha == 0.25


def test_a_section_key_without_an_options_field_is_an_error():
    @dataclass
    class Narrow:
        l1: float = 0.0

    with pytest.raises(ValueError, match=r"SdsConfig keys \['regularizer'.*no field of Narrow"):
        section_options(Narrow, SdsConfig(), not_options=("methods", "sparsities"))
    others = set(SdsConfig.model_fields) - {"l1"}
    assert section_options(Narrow, SdsConfig(l1=0.5), not_options=others).l1 == 0.5
