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


# ------------------------------------------------------------- kill the mutants mutmut left (make mutation)


def _attacked(n_failed: int, rows: int = 25) -> dict[int, str]:
    return {i: "failed" if i < n_failed else "succeeded" for i in range(rows)}


def test_compare_makes_the_soup_and_dense_pairs_from_its_reference_and_best_ingredient():
    """compare() passes its reference and best ingredient on: the soup is compared with v1 and every
    pruned, SDS and CAP model (only those) with the dense reference."""
    models = _models()
    comps = compare(models, {}, ["clean"], "soup-greedy", "v1")
    rel = {(c.a, c.b, c.relation) for c in comps}
    assert ("soup-greedy", "v1", SOUP_VS_BEST) in rel
    dense = {a for a, b, r in rel if r == VS_DENSE and b == "soup-greedy"}
    assert dense == {m["name"] for m in models if m["kind"] in ("pruned", "sds", "cap")}
    assert not any(r == VS_DENSE and b != "soup-greedy" for _, b, r in rel)


def test_comparison_pairs_need_both_soup_models_and_pair_cap_with_its_ablation():
    from robustprune.verdicts import CAP_VS_ABLATION

    models = _models() + [_model("cap-nocl_0.875", "cap", "cap-nocl", "0.875", "1" * 14 + "0" * 11)]
    pairs = comparison_pairs(models, "soup-greedy", best_ingredient="v1")
    assert [p for p in pairs if p[2] == CAP_VS_ABLATION] == [("cap_0.875", "cap-nocl_0.875", CAP_VS_ABLATION)]
    assert None not in pairs
    no_soup = [m for m in models if m["name"] != "soup-greedy"]
    assert not any(r == SOUP_VS_BEST for _, _, r in comparison_pairs(no_soup, "v1", best_ingredient="v1"))
    assert not any(r == SOUP_VS_BEST for _, _, r in comparison_pairs(models, "soup-greedy", "v9"))


def test_confidence_reaches_every_interval_of_a_comparison():
    """A 50% comparison has narrower rates, difference and both-correct intervals than a 95% one, on plain
    and on clustered (transferred) rows alike."""
    models = _models()
    outcomes = {
        ("rakp_0.875", "textfooler"): _attacked(9),
        ("sparsegpt_0.875", "textfooler"): _attacked(5),
    }
    transfer = [{"recipe": "textfooler", "test_row": i // 2, "label": 0, "text": "x"} for i in range(10)]
    metrics = ["clean", "textfooler", "transfer:all"]

    def pick(conf):  # noqa: ANN001, ANN202
        comps = compare(models, outcomes, metrics, "soup-greedy", confidence=conf, transfer=transfer)
        return {c.metric: c for c in comps if (c.a, c.b) == ("rakp_0.875", "sparsegpt_0.875")}

    wide, narrow = pick(0.95), pick(0.5)
    assert set(wide) == set(metrics)
    for metric in metrics:
        w, n = wide[metric], narrow[metric]
        for x, y in ((w.a_rate, n.a_rate), (w.b_rate, n.b_rate), (w.diff, n.diff)):
            assert y.high - y.low < x.high - x.low, metric
    both_w, both_n = wide["textfooler"].both_correct, narrow["textfooler"].both_correct
    assert both_n.high - both_n.low < both_w.high - both_w.low


def test_only_transferred_metrics_are_clustered_by_source_row():
    """With transferred texts present, an attack recipe of the same name is still compared row by row
    (design effect 1); only ``transfer:`` metrics use the source rows as clusters."""
    models = _models()
    outcomes = {(n, "textfooler"): _attacked(k) for n, k in (("rakp_0.875", 9), ("sparsegpt_0.875", 5))}
    transfer = [{"recipe": "textfooler", "test_row": i // 2, "label": 0, "text": "x"} for i in range(10)]
    comps = compare(models, outcomes, ["textfooler", "transfer:textfooler"], "soup-greedy", transfer=transfer)
    pair = {c.metric: c for c in comps if (c.a, c.b) == ("rakp_0.875", "sparsegpt_0.875")}
    assert pair["textfooler"].diff.deff == 1.0 and pair["textfooler"].diff.n == 25
    assert pair["transfer:textfooler"].diff.deff > 1


def test_comparison_to_dict_names_every_field():
    models = _models()
    outcomes = {(n, "textfooler"): _attacked(k) for n, k in (("rakp_0.875", 9), ("sparsegpt_0.875", 5))}
    comps = compare(models, outcomes, ["clean", "textfooler"], "soup-greedy")
    pair = {
        c.metric: c
        for c in comps
        if (c.a, c.b, c.relation) == ("rakp_0.875", "sparsegpt_0.875", VS_SPARSEGPT)
    }
    for metric, c in pair.items():
        d = c.to_dict()
        assert (d["a"], d["b"], d["relation"], d["metric"]) == (
            "rakp_0.875",
            "sparsegpt_0.875",
            VS_SPARSEGPT,
            metric,
        )
        assert d["a_rate"] == c.a_rate.to_dict() and d["b_rate"] == c.b_rate.to_dict()
        assert d["interval_verdict"] == c.diff.verdict and d["verdict"] == c.verdict
        assert (d["n_a"], d["n_b"]) == (25, 25) and d["diff"] == c.diff.diff
    assert pair["clean"].to_dict()["both_correct_asr"] is None
    # a near-constant model: the comparison's verdict (not judged) and the interval's are both kept
    from robustprune.verdicts import NOT_JUDGED

    bal = _balance({"sparsegpt_0.875"}, models)
    judged = compare(models, outcomes, ["textfooler"], "soup-greedy", balance=bal)
    d = next(c for c in judged if (c.a, c.b, c.relation) == ("rakp_0.875", "sparsegpt_0.875", VS_SPARSEGPT))
    d = d.to_dict()
    assert d["verdict"] == NOT_JUDGED and d["interval_verdict"] != NOT_JUDGED
    assert pair["textfooler"].to_dict()["both_correct_asr"] == pair["textfooler"].both_correct.to_dict()


def test_clean_accuracy_and_metric_flags_of_unmeasured_models():
    from robustprune.verdicts import clean_accuracy, metric_flags

    assert clean_accuracy({"correct": 3, "total": 4}) == 0.75
    for empty in ({"correct": 0, "total": 0}, {}):
        v = clean_accuracy(empty)
        assert isinstance(v, float) and v != v
    bare = {"name": "x"}
    assert metric_flags(bare, "clean", {}) is None
    assert metric_flags(bare, "transfer:all", {}) is None
    assert metric_flags({"name": "x", "transfer": {"pwws": {"bits": "10"}}}, "transfer:all", {}) is None
    assert metric_flags({"name": "x", "transfer": {"all": {"bits": "10"}}}, "transfer:all", {}) == {
        0: True,
        1: False,
    }


def test_transfer_clusters_per_recipe_and_all():
    from robustprune.verdicts import transfer_clusters

    rows = [("textfooler", 3), ("textfooler", 3), ("pwws", 1), ("pwws", 4)]
    got = transfer_clusters([{"recipe": r, "test_row": str(i)} for r, i in rows])
    assert got == {"all": [3, 3, 1, 4], "textfooler": [3, 3], "pwws": [1, 4]}


def _matched(comps):  # noqa: ANN001, ANN202
    from robustprune.verdicts import MATCHED

    return {(c.a, c.metric): c.b for c in comps if c.relation == MATCHED}


def test_an_attacked_model_keeps_its_attack_baseline_for_clean_and_transferred_rows():
    """rakp is matched under attack with the only attacked baseline (sparsegpt_0.875); its clean and
    transferred comparisons use that same baseline even though sparsegpt_0.75 (not attacked) is nearer in
    clean accuracy. A model attacked by nothing (SDS) takes the nearest baseline on each metric."""
    models = _models() + [
        _model("sparsegpt_0.75", "pruned", "sparsegpt", "0.75", "1" * 18 + "0" * 7, "0" * 6 + "1111"),
    ]
    outcomes = {(n, "textfooler"): _attacked(4) for n in ("rakp_0.875", "sparsegpt_0.875")}
    comps = compare(models, outcomes, ["clean", "textfooler", "transfer:all"], "soup-greedy")
    m = _matched(comps)
    assert m[("rakp_0.875", "textfooler")] == "sparsegpt_0.875"
    assert m[("rakp_0.875", "clean")] == "sparsegpt_0.875"
    assert m[("rakp_0.875", "transfer:all")] == "sparsegpt_0.875"
    assert m[("sds-rakp_0.875", "clean")] == "sparsegpt_0.75" and ("sds-rakp_0.875", "textfooler") not in m
    assert m[("cap_0.875", "clean")] == "sparsegpt_0.75"  # SDS and CAP models are matched too


def test_two_attacks_each_get_their_own_nearest_baseline():
    models = _models() + [_model("wanda_0.75", "pruned", "wanda", "0.75", "1" * 18 + "0" * 7)]
    outcomes = {
        ("rakp_0.875", "textfooler"): _attacked(4),
        ("rakp_0.875", "pwws"): _attacked(4),
        ("sparsegpt_0.875", "textfooler"): _attacked(4),
        ("sparsegpt_0.875", "pwws"): _attacked(4),
        ("wanda_0.75", "pwws"): _attacked(4),
    }
    m = _matched(compare(models, outcomes, ["textfooler", "pwws"], "soup-greedy"))
    assert m[("rakp_0.875", "textfooler")] == "sparsegpt_0.875" and m[("rakp_0.875", "pwws")] == "wanda_0.75"


def test_matched_baseline_skips_rather_than_stops_and_ties_go_to_the_first():
    """Only pruned one-shot baselines are candidates (never another RAKP model, even at the same accuracy);
    a near-constant, an unmeasured or a disjointly measured baseline is skipped and the search goes on;
    of two equally near baselines the first listed wins."""
    from robustprune.verdicts import matched_baseline

    dense = "1" * 18 + "0" * 7
    models = [
        _model("rakp_0.875", "pruned", "rakp", "0.875", dense),
        _model("rakp_0.75", "pruned", "rakp", "0.75", dense),
        _model("magnitude_0.875", "pruned", "magnitude", "0.875", dense),  # near-constant
        _model("wanda_0.875", "pruned", "wanda", "0.875", dense),  # not attacked
        _model("wanda_0.5", "pruned", "wanda", "0.5", dense),  # attacked on other rows
        _model("sparsegpt_0.875", "pruned", "sparsegpt", "0.875", "1" * 17 + "0" * 8),
        _model("sparsegpt_0.75", "pruned", "sparsegpt", "0.75", "1" * 19 + "0" * 6),
    ]
    attacks = {(m["name"], "textfooler"): _attacked(4, 10) for m in models if m["name"] != "wanda_0.875"}
    attacks[("wanda_0.5", "textfooler")] = {i: "failed" for i in range(10, 20)}
    bal = _balance({"magnitude_0.875"}, models)
    assert matched_baseline(models[0], models, "textfooler", attacks, bal) == "sparsegpt_0.875"
    assert matched_baseline(models[0], models, "clean", attacks, bal) == "wanda_0.875"


def test_ingredient_table_names_each_robust_recipe_and_the_history_carries_intervals():
    """Issue #24: the ingredient table says how each ingredient was made robust (FreeLB unbounded with shared
    dropout, input-space augmentation, A2T), and the greedy history shows each candidate's validation
    robustness with its Wilson interval (a bare 0.00 hides whether 25 or 100 rows were attacked)."""
    from robustprune.report import ingredients_section
    from robustprune.soup import SoupScore as Score

    base = {"validation_accuracy": 0.8, "test_accuracy": 0.8, "learning_rate": 5e-5, "epochs": 2, "seed": 0}
    base |= {"train_seconds": 10.0, "seconds_per_step": 1.0}
    adv = {"steps": 2, "step_size": 0.1, "max_norm": 0.0, "init_mag": 0.6, "share_dropout": True}
    finetune = {
        "plain": base,
        "freelb": {**base, "adversarial": adv},
        "aug": {**base, "augment": {"copies": 1, "fraction": 0.2}, "augment_stats": {"copies": 6000}},
        "a2t": {**base, "a2t": {"num_train_adv_examples": 0.05, "attack_epoch_interval": 1}},
    }
    s1, s2 = Score(0.8, 0.05, 100), Score(0.81, 0.0, 100)
    history = [
        {"candidate": "freelb", "members": ["freelb"], "kept": True, **s1.row()},
        {"candidate": "plain", "members": ["freelb", "plain"], "kept": False, **s2.row()},
    ]
    soup = {
        "criterion": "robustness",
        "attack": {"recipe": "textfooler", "num_examples": 100},
        "best_ingredient": "freelb",
        "ingredients": {n: {"robustness": 0.05} for n in finetune},
        "greedy": {
            "members": ["freelb"],
            "history": history,
            "validation_accuracy": 0.8,
            "test_accuracy": 0.8,
        },
    }
    x = ReportInputs(prepare={}, finetune=finetune, soup=soup, evaluation={"models": []}, prune={})
    lines = ingredients_section(x)
    row = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ")}
    assert "FreeLB K=2 unbounded a=0.1, shared dropout" in row["freelb"]
    assert "augment 1x20% of words" in row["aug"] and "FreeLB" not in row["aug"]
    assert "A2T 5% adversarial every 1 ep" in row["a2t"]
    assert row["plain"].split(" | ")[1] == "adamw lr 5e-05, 2 ep, seed 0"
    assert "| 0 | freelb | freelb | 80.00 | 5.00 [2.15, 11.18] | yes |" in lines  # Wilson 5/100
    assert "| 1 | plain | freelb, plain | 81.00 | 0.00 [0.00, 3.70] | no |" in lines
