"""Tests of the validity audit (robustprune.attacks.validity) and the polarity constraint (issue #28).

Tiny hand-made lexicons (values copied from VADER's and AFINN's files) and the toy WordNet of
test_attack_resources (good ! bad, satellites great/neat of good, awful of bad, love ! hate,
``better`` -> ``good``). Only the last tests import textattack.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType

import pytest

from robustprune.attacks import validity as v
from robustprune.attacks.wordnet import Lexicon, load_lexicon
from robustprune.verdicts import compare
from tests.unit.test_attack_resources import _write_wordnet

VADER = {"good": 1.9, "fine": 0.8, "bad": -2.5, "great": 3.1, "dull": -1.7, "meh": -0.3, "okay": 0.9}
VADER |= {"edge": 0.5, "dark": -0.5, "mild": 0.49, "love": 3.2, "hate": -2.7}
AFINN = {"good": 3, "fine": 2, "bad": -3, "great": 3, "dull": -2, "love": 3, "hate": -3, "dark": -1}
LEXICON = Lexicon(
    synonyms=MappingProxyType({}),
    antonyms=MappingProxyType(
        {"good": frozenset({"bad"}), "bad": frozenset({"good"}), "up": frozenset({"down"})}
    ),
    pos=MappingProxyType({"good": frozenset({"adj"}), "bad": frozenset({"adj"}), "up": frozenset({"adv"})}),
    exceptions={"adj": {"better": frozenset({"good"}), "worse": frozenset({"bad"})}},
)
POLARITY = v.Polarity(VADER, AFINN, LEXICON)
RULE = v.ValidityRule()


def words(text: str) -> list[str]:
    """A stand-in for textattack's words_from_text on plain ASCII text."""
    return re.findall(r"[A-Za-z0-9'-]+", text)


def fake_compound(text: str) -> float:
    """Sum of VADER values, squashed as VADER's normalisation (no rules)."""
    s = sum(VADER.get(w.lower(), 0.0) for w in words(text))
    return s / (s * s + 15) ** 0.5


# --------------------------------------------------------------------------- lexicons


def test_read_lexicon_files(tmp_path: Path) -> None:
    (tmp_path / "vader.txt").write_text("good\t1.9\t0.9\t[2, 1]\n:)\t2.0\t0.6\t[2]\nBad\t-2.5\t0.7\t[-2]\n")
    (tmp_path / "afinn.txt").write_text("abandon\t-2\ncan't stand\t-3\ngood\t3\n")
    assert v.read_vader(tmp_path / "vader.txt") == {"good": 1.9, ":)": 2.0, "bad": -2.5}
    assert v.read_afinn(tmp_path / "afinn.txt") == {"abandon": -2, "good": 3}  # phrases left out


def test_antonym_lexicon_keeps_indirect_antonyms_and_lemmas(tmp_path: Path) -> None:
    full = load_lexicon(_write_wordnet(tmp_path / "wn"))
    small = v.antonym_lexicon(full)
    assert not small.synonyms and set(small.pos) == set(full.antonyms)
    assert v.wordnet_antonyms("great", "bad", small)  # satellite of good <-> good's antonym
    assert v.wordnet_antonyms("awful", "good", small) and v.wordnet_antonyms("Better", "bad", small)
    assert v.wordnet_antonyms("loved", "hate", small)  # verb morphology: loved -> love
    assert not v.wordnet_antonyms("great", "good", small) and not v.wordnet_antonyms("movie", "film", small)


def test_save_and_load_polarity_round_trip(tmp_path: Path) -> None:
    (tmp_path / "vader.txt").write_text("good\t1.9\t0.9\t[2]\nbad\t-2.5\t0.7\t[-2]\n")
    (tmp_path / "afinn.txt").write_text("good\t3\nbad\t-3\n")
    full = load_lexicon(_write_wordnet(tmp_path / "wn"))
    v.save_polarity(tmp_path / "out", tmp_path / "vader.txt", tmp_path / "afinn.txt", full)
    back = v.load_polarity(tmp_path / "out")
    assert back.vader == {"good": 1.9, "bad": -2.5} and back.afinn == {"good": 3, "bad": -3}
    assert back.wordnet.antonyms == full.antonyms
    assert v.wordnet_antonyms("better", "awful", back.wordnet)  # exceptions survive: better -> good


# --------------------------------------------------------------------------- word checks


def test_vader_flip_thresholds_and_direction() -> None:
    assert v.vader_flip("good", "bad", VADER) and v.vader_flip("Bad", "GOOD", VADER)
    assert v.vader_flip("edge", "dark", VADER)  # exactly +0.5 / -0.5 count
    assert not v.vader_flip("mild", "dark", VADER)  # 0.49 does not
    assert not v.vader_flip("good", "fine", VADER) and not v.vader_flip("good", "meh", VADER)
    assert not v.vader_flip("good", "unknown", VADER)
    assert not v.vader_flip("good", "bad", VADER, threshold=2.0)  # 1.9 < 2


def test_afinn_flip_needs_opposite_signs_of_size_threshold() -> None:
    assert v.afinn_flip("good", "dark", AFINN) and v.afinn_flip("hate", "love", AFINN)
    assert not v.afinn_flip("good", "dark", AFINN, threshold=2)
    assert not v.afinn_flip("good", "fine", AFINN) and not v.afinn_flip("good", "meh", AFINN)


def test_word_checks_and_rule_validation() -> None:
    assert v.word_checks("good", "bad", POLARITY, RULE) == {"vader": True, "afinn": True, "wordnet": True}
    assert v.word_checks("good", "fine", POLARITY, RULE) == {"vader": False, "afinn": False, "wordnet": False}
    assert v.word_checks("up", "down", POLARITY, RULE, ("wordnet",)) == {"wordnet": True}
    with pytest.raises(ValueError, match="unknown word check"):
        v.word_checks("a", "b", POLARITY, RULE, ("compound",))
    with pytest.raises(ValueError, match="subset"):
        v.ValidityRule(rule=("vader", "sentiwordnet"))


# --------------------------------------------------------------------------- alignment and judging


def test_swapped_pairs_positional_and_split_words() -> None:
    assert v.swapped_pairs("a good film, a good cast", "a bad film, a good crew", words) == (
        ("good", "bad"),
        ("cast", "crew"),
    )
    # TextBugger's space: one word becomes two, the rest stays aligned
    assert v.swapped_pairs("a terrible and dull film", "a terr ible and dull movie", words) == (
        ("terrible", "terr ible"),
        ("film", "movie"),
    )
    assert v.swapped_pairs("same text", "same text", words) == ()


def test_judge_flags_each_check_and_the_rule() -> None:
    f = v.judge(7, "A good and great film", "A bad and great film", POLARITY, RULE, fake_compound, words)
    assert f.test_row == 7 and f.pairs == (("good", "bad"),)
    assert f.flagged["vader"] == (("good", "bad"),) and f.checks["wordnet"] and f.label_changing
    assert not f.checks["compound"]  # great keeps the text positive
    g = v.judge(8, "love meh", "hate meh", POLARITY, RULE, fake_compound, words)
    assert g.checks == {"vader": True, "afinn": True, "wordnet": False, "compound": True}
    assert g.compound[0] > 0.5 and g.compound[1] < -0.5
    only_wordnet = v.ValidityRule(rule=("wordnet",))
    assert not v.judge(
        8, "good fine", "dull fine", POLARITY, only_wordnet, fake_compound, words
    ).label_changing
    h = v.judge(9, "a good film", "a fine film", POLARITY, RULE, fake_compound, words)
    assert not any(h.checks.values()) and not h.label_changing


def test_vader_compound_is_the_package_score_over_our_lexicon() -> None:
    pytest.importorskip("vaderSentiment")
    score = v.compound_scorer({"good": 1.9, "bad": -2.5})
    assert score("A good film.") > 0.4 and score("A bad film.") < -0.4
    assert score("A great film.") == 0.0  # only our lexicon counts: "great" is not in it
    assert score("Not a good film.") < 0  # VADER's negation rule
    # VADER's normalisation: x / sqrt(x^2 + 15) of the single valence 1.9
    assert score("good") == pytest.approx(round(1.9 / (1.9**2 + 15) ** 0.5, 4))


RECORDS = [
    {"test_row": "0", "outcome": "succeeded", "original_text": "a good film", "perturbed_text": "a bad film"},
    {
        "test_row": "1",
        "outcome": "succeeded",
        "original_text": "a good film",
        "perturbed_text": "a fine film",
    },
    {"test_row": "2", "outcome": "failed", "original_text": "a good film", "perturbed_text": "a good film"},
    {"test_row": "3", "outcome": "succeeded", "original_text": "love it", "perturbed_text": "hate it"},
    {"test_row": "4", "outcome": "skipped", "original_text": "bad", "perturbed_text": "bad"},
    {"test_row": "5", "outcome": "skipped", "original_text": "", "perturbed_text": ""},
]
OUTCOMES = {0: "succeeded", 1: "succeeded", 2: "failed", 3: "succeeded", 4: "skipped", 5: "no words"}


def _flags(model: str = "m", recipe: str = "textfooler"):
    records = [{**r, "model": model, "recipe": recipe} for r in RECORDS]
    return v.judge_records(records, POLARITY, RULE, fake_compound, words)


def test_judge_records_only_successes() -> None:
    flags = _flags()
    assert set(flags) == {("m", "textfooler")}
    assert sorted(flags[("m", "textfooler")]) == [0, 1, 3]
    assert [flags[("m", "textfooler")][r].label_changing for r in (0, 1, 3)] == [True, False, True]


def test_valid_outcomes_turn_label_changing_successes_into_failures() -> None:
    flags = _flags()[("m", "textfooler")]
    valid = v.valid_outcomes(OUTCOMES, flags)
    assert valid == {0: "failed", 1: "succeeded", 2: "failed", 3: "failed", 4: "skipped", 5: "no words"}
    assert v.valid_outcomes(OUTCOMES, flags, ("wordnet",))[3] == "succeeded"  # love/hate: not in LEXICON
    assert v.valid_outcomes(OUTCOMES, {}) == OUTCOMES


def test_audit_shares_intervals_examples_and_accuracies() -> None:
    flags = _flags()
    (a,) = v.audit_all({("m", "textfooler"): OUTCOMES}, flags, RULE, examples=1)
    assert (a.model, a.recipe, a.successes) == ("m", "textfooler", 3)
    assert (a.shares["vader"].k, a.shares["vader"].n) == (2, 3) and a.shares["wordnet"].k == 1
    assert a.shares[v.RULE].k == 2 and 0 < a.shares[v.RULE].low < 2 / 3 < a.shares[v.RULE].high < 1
    assert a.examples["vader"] == ("good→bad",)  # the first one, in the attack's order
    assert a.examples["compound"][0].startswith("+")
    # 5 rows with words: 1 failed -> 20%; valid: rows 0 and 3 become failed -> 60%
    assert (a.accuracy_under_attack.k, a.accuracy_under_attack.n) == (1, 5)
    assert (a.accuracy_under_valid_attack.k, a.accuracy_under_valid_attack.n) == (3, 5)
    assert a.valid_by_check["wordnet"].k == 2
    d = a.to_dict()
    assert (
        d["shares"]["rule"]["k"] == 2
        and d["examples"]["vader"] == ["good→bad"]
        and d["rule"] == list(v.CHECKS)
    )


def test_valid_metric_feeds_the_paired_verdicts() -> None:
    outcomes = {("dense", "textfooler"): OUTCOMES, ("pruned", "textfooler"): {**OUTCOMES, 2: "succeeded"}}
    flags = _flags("dense") | _flags("pruned")
    valid = v.valid_attack_outcomes(outcomes, flags)
    assert set(valid) == {("dense", "valid:textfooler"), ("pruned", "valid:textfooler")}
    assert valid[("dense", "valid:textfooler")][0] == "failed"
    models = [
        {"name": "dense", "kind": "dense", "method": None, "sparsity": None},
        {"name": "pruned", "kind": "pruned", "method": "rakp", "sparsity": "0.5"},
    ]
    (c,) = compare(models, {**outcomes, **valid}, ["valid:textfooler"], "dense")
    assert (c.a, c.b, c.metric) == ("pruned", "dense", "valid:textfooler")
    assert (c.a_rate.k, c.b_rate.k, c.b_rate.n) == (2, 3, 5)


# --------------------------------------------------------------------------- the constraint (textattack)


@pytest.fixture(scope="module")
def ta(tmp_path_factory):
    from robustprune.attacks.textattack_env import import_textattack

    return import_textattack(tmp_path_factory.mktemp("nltk_data"))


def _swap(ta, text: str, index: int, word: str):
    original = ta.shared.AttackedText(text)
    swapped = original.replace_word_at_index(index, word)
    swapped.attack_attrs["last_transformation"] = ta.transformations.WordSwapRandomCharacterDeletion()
    return original, swapped


def test_polarity_constraint_rejects_good_to_bad_accepts_good_to_fine(ta) -> None:
    from robustprune.attacks.components import PolarityConstraint

    c = PolarityConstraint(POLARITY)
    for new, kept in (("bad", False), ("fine", True), ("Worse", False), ("okay", True), ("film", True)):
        original, swapped = _swap(ta, "a good film", 1, new)
        assert c._check_constraint(swapped, original) is kept, new
    original, swapped = _swap(ta, "a good film", 1, "bad")
    assert c.call_many([swapped], original) == []
    wordnet_only = PolarityConstraint(POLARITY, checks=("wordnet",))
    assert not wordnet_only._check_constraint(*reversed(_swap(ta, "go up now", 1, "down")))
    assert wordnet_only._check_constraint(*reversed(_swap(ta, "so good", 1, "dull")))  # vader off
    with pytest.raises(ValueError, match="subset"):
        PolarityConstraint(POLARITY, checks=("compound",))


def test_polarity_constraint_reads_split_words(ta) -> None:
    from robustprune.attacks.components import PolarityConstraint

    c = PolarityConstraint(v.Polarity({"terrible": -2.1, "ible": 1.0, "nice": 1.8}, {}, LEXICON))
    original, split = _swap(ta, "a terrible film", 1, "terr ible")
    assert len(split.words) == 4 and c._check_constraint(split, original)  # "terr ible" is no lexicon word
    original, swapped = _swap(ta, "a terrible film", 1, "nice")
    assert not c._check_constraint(swapped, original)


def test_report_stage_audits_with_the_bundled_lexicons(ta, tmp_path: Path) -> None:
    from tasks.common import Layout
    from tasks.report import validity_audit

    (tmp_path / "vader.txt").write_text("good\t1.9\t0.9\t[2]\nbad\t-2.5\t0.7\t[-2]\nfine\t0.8\t0.5\t[1]\n")
    (tmp_path / "afinn.txt").write_text("good\t3\nbad\t-3\n")
    bundle = tmp_path / "project" / "models" / "attack" / "polarity"
    v.save_polarity(
        bundle, tmp_path / "vader.txt", tmp_path / "afinn.txt", load_lexicon(_write_wordnet(tmp_path / "wn"))
    )
    records = [{**r, "model": "m", "recipe": "textfooler"} for r in RECORDS]
    valid, audits = validity_audit(
        Layout(tmp_path / "project"), {("m", "textfooler"): OUTCOMES}, records, None
    )
    # good/bad: VADER, AFINN and WordNet; love/hate: the toy WordNet's antonyms only
    assert valid[("m", "valid:textfooler")] == {**OUTCOMES, 0: "failed", 3: "failed"}
    (a,) = audits
    assert a.successes == 3 and a.shares["vader"].k == 1 and a.shares["wordnet"].k == 2
    assert a.examples["vader"] == ("good→bad",)
    only_compound = validity_audit(
        Layout(tmp_path / "project"), {("m", "textfooler"): OUTCOMES}, records, {"rule": ["compound"]}
    )
    assert only_compound[1][0].rule == ("compound",)
    assert validity_audit(Layout(tmp_path / "project"), {}, [], None) == ({}, [])


def test_recipe_options_carry_the_constraint_only_when_on() -> None:
    from robustprune.config import ConfigError, parse_params
    from tasks.attack import recipe_options

    off = parse_params({})
    assert (
        "polarity_constraint" not in recipe_options(off, "bert-attack")
        and recipe_options(off, "textbugger") == {}
    )
    assert recipe_options(off, "textfooler")["adjusted"] is False
    on = parse_params({"attack": {"validity": {"constraint": True, "constraint_checks": ["wordnet"]}}})
    for recipe in ("textfooler", "bert-attack", "textbugger"):
        assert recipe_options(on, recipe)["polarity_constraint"] == {
            "checks": ["wordnet"],
            "vader_threshold": 0.5,
            "afinn_threshold": 1,
        }
    with pytest.raises(ConfigError, match="attack.validity.rule"):
        parse_params({"attack": {"validity": {"rule": ["sentiwordnet"]}}})
