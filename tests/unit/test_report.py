"""The report's verdicts (robustprune.verdicts) and summary (robustprune.report) on synthetic stage outputs."""

from __future__ import annotations

import dataclasses

import pytest

from robustprune.report import ReportInputs, attack_section, markdown_summary
from robustprune.verdicts import (
    CAP_VS_RAKP,
    SDS_VS_ONESHOT,
    SOUP_VS_BEST,
    VS_DENSE,
    VS_SPARSEGPT,
    attack_flags,
    compare,
    comparison_pairs,
)


def _model(name, kind, method, sparsity, correct_bits, transfer_bits=None):
    m = {
        "name": name,
        "kind": kind,
        "method": method,
        "sparsity": sparsity,
        "path": f"models/{name}",
        "correct_bits": correct_bits,
        "correct": correct_bits.count("1"),
        "total": len(correct_bits),
        "accuracy": correct_bits.count("1") / len(correct_bits),
        "measured_sparsity": 0.0 if kind in ("variant", "soup") else 0.875,
    }
    if transfer_bits is not None:
        m["transfer"] = {
            "textfooler": {
                "correct": transfer_bits.count("1"),
                "n": len(transfer_bits),
                "bits": transfer_bits,
            },
            "all": {"correct": transfer_bits.count("1"), "n": len(transfer_bits), "bits": transfer_bits},
        }
        m["fidelity"] = {"per_layer": [1.0, 0.9], "mean": 0.95, "last": 0.9, "n": len(correct_bits)}
    return m


def _models():
    dense = "1" * 20 + "0" * 5
    return [
        _model("v1", "variant", "dense", "0", dense),
        _model("soup-greedy", "soup", "dense", "0", dense, "0" * 10),
        _model("sparsegpt_0.875", "pruned", "sparsegpt", "0.875", "1" * 16 + "0" * 9, "0" * 8 + "11"),
        # differs from sparsegpt on exactly 2 of 25 clean examples, both in rakp's favour
        _model("rakp_0.875", "pruned", "rakp", "0.875", "1" * 18 + "0" * 7, "0" * 6 + "1111"),
        _model("sds-rakp_0.875", "sds", "sds+rakp", "0.875", "1" * 18 + "0" * 7, "0" * 6 + "1111"),
        _model("cap_0.875", "cap", "cap", "0.875", "1" * 17 + "0" * 8, "0" * 7 + "111"),
        _model("cap-f_0.875", "cap", "cap-f", "0.875", "1" * 15 + "0" * 10, "0" * 9 + "1"),
    ]


def test_pairs_cover_the_comparisons_the_report_promises():
    pairs = comparison_pairs(_models(), "soup-greedy", best_ingredient="v1")
    assert pairs[0] == ("soup-greedy", "v1", SOUP_VS_BEST)
    assert ("rakp_0.875", "soup-greedy", VS_DENSE) in pairs
    assert ("rakp_0.875", "sparsegpt_0.875", VS_SPARSEGPT) in pairs
    assert ("sds-rakp_0.875", "rakp_0.875", SDS_VS_ONESHOT) in pairs
    assert ("sparsegpt_0.875", "sparsegpt_0.875", VS_SPARSEGPT) not in pairs
    assert ("cap_0.875", "rakp_0.875", CAP_VS_RAKP) in pairs
    assert not any(a == "cap-f_0.875" and rel == CAP_VS_RAKP for a, _, rel in pairs)  # structured: no pair


def test_attack_flags_count_failed_attacks_and_drop_inputs_without_words():
    flags = attack_flags({0: "failed", 1: "succeeded", 2: "skipped", 3: "no words"})
    assert flags == {0: True, 1: False, 2: False}


def test_two_of_25_is_no_measurable_difference_in_the_report():
    models = _models()
    outcomes = {
        ("soup-greedy", "textfooler"): {i: "failed" if i < 3 else "succeeded" for i in range(25)},
        ("rakp_0.875", "textfooler"): {i: "failed" if i < 5 else "succeeded" for i in range(25)},
        ("sparsegpt_0.875", "textfooler"): {i: "failed" if i < 3 else "succeeded" for i in range(25)},
    }
    comps = compare(models, outcomes, ["clean", "textfooler", "transfer:all"], "soup-greedy", "v1")
    assert not [c for c in comps if c.metric.startswith("transfer:") and "soup-greedy" in (c.a, c.b)]
    assert any(c.metric == "transfer:all" and c.a == "rakp_0.875" for c in comps)
    clean = next(c for c in comps if (c.a, c.b, c.metric) == ("rakp_0.875", "sparsegpt_0.875", "clean"))
    assert clean.diff.diff == pytest.approx(2 / 25)
    assert clean.diff.verdict == "no measurable difference"
    under = next(c for c in comps if (c.a, c.b, c.metric) == ("rakp_0.875", "sparsegpt_0.875", "textfooler"))
    assert (under.diff.a_only, under.diff.b_only) == (2, 0)
    assert under.diff.verdict == "no measurable difference"
    attack_rows = [
        {
            "model": m,
            "recipe": "textfooler",
            "kind": k,
            "method": meth,
            "sparsity": sp,
            "num_examples": 25,
            "num_failed": sum(o == "failed" for o in outcomes[(m, "textfooler")].values()),
            "original_accuracy": 0.8,
            "attack_success_rate": 0.5,
            "avg_queries": 40.0,
            "seconds_per_example": 0.5,
            "wall_seconds": 12.5,
            "floor_seconds": 10.0,
            "wall_over_floor": 1.25,
        }
        for m, k, meth, sp in [
            ("soup-greedy", "soup", "dense", "0"),
            ("sparsegpt_0.875", "pruned", "sparsegpt", "0.875"),
            ("rakp_0.875", "pruned", "rakp", "0.875"),
        ]
    ]
    finetune = {
        "v1": {
            "validation_accuracy": 0.8,
            "test_accuracy": 0.8,
            "learning_rate": 5e-5,
            "epochs": 1,
            "seed": 0,
            "train_seconds": 10.0,
            "seconds_per_step": 1.0,
        }
    }
    inputs = ReportInputs(
        prepare={
            "data": {"train_size": 100, "validation_size": 25, "test_size": 25, "label_names": ["a", "b"]}
        },
        finetune=finetune,
        soup={
            "criterion": "accuracy",
            "best_ingredient": "v1",
            "greedy": {
                "members": ["v1"],
                "history": [],
                "validation_accuracy": 0.8,
                "test_accuracy": 0.8,
            },
        },
        evaluation={"reference": "soup-greedy", "transfer": [], "models": models},
        prune={},
        attack=attack_rows,
        outcomes=outcomes,
        recipes=["textfooler"],
        comparisons=comps,
    )
    text = markdown_summary(inputs)
    row = next(
        line for line in text.splitlines() if line.startswith("| rakp_0.875 | sparsegpt_0.875 | clean |")
    )
    assert "no measurable difference" in row and "better" not in row
    assert "80.0 [60.9, 91.1]" in text  # the dense model's 20/25 with its Wilson interval
    assert "## Accuracy on transferred adversarial examples" in text
    assert "Spearman" in text
    assert "## Verdicts at a glance" in text
    assert "The same 25 seeded test examples for every model and recipe." in text
    # attack.more: models attacked on fewer (the first) rows are named with their count
    fewer = [{**r, "num_examples": 10} if r["model"] == "rakp_0.875" else r for r in attack_rows]
    mixed = "\n".join(attack_section(dataclasses.replace(inputs, attack=fewer)))
    assert "25 for soup-greedy, sparsegpt_0.875; 10 for rakp_0.875." in mixed
    assert "The same" not in mixed


def _balance(names_near: set[str], models) -> dict:
    from robustprune.degeneracy import class_balance

    out = {}
    for m in models:
        labels = [0, 1] * 12 + [0]
        preds = [1] * 25 if m["name"] in names_near else labels
        out[m["name"]] = class_balance(labels, preds, 2)
    return out


def test_a_near_constant_model_gets_no_robustness_verdict_but_keeps_its_clean_one():
    from robustprune.verdicts import NOT_JUDGED

    models = _models()
    outcomes = {
        ("rakp_0.875", "textfooler"): {i: "failed" if i < 2 else "succeeded" for i in range(25)},
        ("sparsegpt_0.875", "textfooler"): {i: "failed" if i < 20 else "succeeded" for i in range(25)},
    }
    comps = compare(
        models,
        outcomes,
        ["clean", "textfooler"],
        "soup-greedy",
        "v1",
        balance=_balance({"sparsegpt_0.875"}, models),
    )
    under = next(c for c in comps if (c.a, c.b, c.metric) == ("rakp_0.875", "sparsegpt_0.875", "textfooler"))
    assert under.diff.verdict == "worse" and under.verdict == NOT_JUDGED  # 18 one-way pairs: excluded anyway
    clean = next(c for c in comps if (c.a, c.b, c.metric) == ("rakp_0.875", "sparsegpt_0.875", "clean"))
    assert clean.verdict == clean.diff.verdict
    # without the guard the same pair is judged
    plain = compare(models, outcomes, ["textfooler"], "soup-greedy", "v1")
    assert next(c for c in plain if c.a == "rakp_0.875" and c.b == "sparsegpt_0.875").verdict == "worse"


def test_matched_accuracy_pairs_a_method_with_the_nearest_non_degenerate_attacked_baseline():
    from robustprune.verdicts import MATCHED

    models = _models() + [
        _model(
            "sparsegpt_0.75", "pruned", "sparsegpt", "0.75", "1" * 18 + "0" * 7
        ),  # = rakp_0.875's accuracy
        _model("magnitude_0.75", "pruned", "magnitude", "0.75", "1" * 19 + "0" * 6),
    ]
    outcomes = {
        (n, "textfooler"): {i: "failed" if i < 3 else "succeeded" for i in range(25)}
        for n in ("rakp_0.875", "sparsegpt_0.75", "sparsegpt_0.875")
    }
    comps = compare(models, outcomes, ["clean", "textfooler"], "soup-greedy", "v1")
    matched = {(c.a, c.b, c.metric) for c in comps if c.relation == MATCHED}
    assert ("rakp_0.875", "sparsegpt_0.75", "textfooler") in matched
    assert ("rakp_0.875", "sparsegpt_0.75", "clean") in matched  # the attacked pair keeps its baseline
    assert not any(
        a.startswith(("sparsegpt", "magnitude")) for a, _, _ in matched
    )  # baselines are not matched
    # the near-constant baseline is never the match, even when it is nearer
    bal = _balance({"sparsegpt_0.75"}, models)
    comps = compare(models, outcomes, ["clean", "textfooler"], "soup-greedy", "v1", balance=bal)
    assert ("rakp_0.875", "sparsegpt_0.875", "textfooler") in {
        (c.a, c.b, c.metric) for c in comps if c.relation == MATCHED
    }


def test_pairings_record_row_counts_and_the_success_rate_on_rows_both_got_right():
    models = _models()
    outcomes = {
        # rakp attacked on 25 rows, sparsegpt on the first 10 only; both right before the attack on rows 0-7
        ("rakp_0.875", "textfooler"): {
            i: ("failed" if i < 4 else "succeeded") if i < 20 else "skipped" for i in range(25)
        },
        ("sparsegpt_0.875", "textfooler"): {i: ("succeeded" if i < 8 else "skipped") for i in range(10)},
    }
    c = next(
        c
        for c in compare(models, outcomes, ["textfooler"], "soup-greedy")
        if (c.a, c.b) == ("rakp_0.875", "sparsegpt_0.875")
    )
    assert (c.n_a, c.n_b, c.diff.n) == (25, 10, 10)
    assert c.both_correct.n == 8 and c.both_correct.diff == pytest.approx(-4 / 8)  # ASR 50% vs 100%


def test_transferred_texts_from_one_row_widen_the_interval():
    models = _models()
    # 10 texts, two per source row: the clustered interval must be wider than the plain one
    transfer = [{"recipe": "textfooler", "test_row": i // 2, "label": 0, "text": "x"} for i in range(10)]
    plain = compare(models, {}, ["transfer:all"], "soup-greedy")
    clustered = compare(models, {}, ["transfer:all"], "soup-greedy", transfer=transfer)
    p = next(c for c in plain if (c.a, c.b) == ("rakp_0.875", "sparsegpt_0.875"))
    q = next(c for c in clustered if (c.a, c.b) == ("rakp_0.875", "sparsegpt_0.875"))
    assert q.diff.deff > 1 and q.diff.high - q.diff.low > p.diff.high - p.diff.low


def test_validity_section_shows_shares_and_both_accuracies():
    from types import MappingProxyType

    from robustprune.attacks.validity import RecordFlags, ValidityRule, audit
    from robustprune.report import metric_title, validity_section

    assert metric_title("valid:bert-attack") == "under BERT-Attack, valid attacks only"
    assert metric_title("bert-attack") == "under BERT-Attack"

    def flags(row, vader):
        checks = {"vader": vader, "afinn": False, "wordnet": False, "compound": False}
        pairs = (("interesting", "boring"),) if vader else (("film", "movie"),)
        flagged = {"vader": pairs if vader else (), "afinn": (), "wordnet": ()}
        return RecordFlags(
            row, pairs, MappingProxyType(flagged), (0.6, -0.6), MappingProxyType(checks), vader
        )

    outcomes = {0: "succeeded", 1: "succeeded", 2: "failed", 3: "succeeded"}
    a = audit(
        "soup-greedy",
        "bert-attack",
        outcomes,
        {0: flags(0, True), 1: flags(1, False), 3: flags(3, True)},
        ValidityRule(),
    )
    x = ReportInputs(
        prepare={},
        finetune={},
        soup={},
        evaluation={"reference": "soup-greedy"},
        prune={},
        validity=[a.to_dict()],
    )
    text = "\n".join(validity_section(x))
    # 2 of 3 successes flip VADER; under attack 1/4 = 25%, under valid attacks 3/4 = 75%
    assert "| soup-greedy | BERT-Attack | 3 | 66.7 [20.8, 93.9] | 0.0 [0.0, 56.1] |" in text
    assert "| 25.0 [4.6, 69.9] | **75.0 [30.1, 95.4]** |" in text
    assert "interesting→boring; interesting→boring" in text
    assert validity_section(dataclasses.replace(x, validity=())) == []
