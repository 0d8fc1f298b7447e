"""Is a successful adversarial example still an example of its original label? A lexical audit.

An adversarial example counts only if a reader would still give it the original label (Morris et al.,
"Reevaluating Adversarial Examples in Natural Language", Findings of EMNLP 2020, Sec. 3: a valid
perturbation preserves the semantics, here the sentiment). A word swap such as ``interesting`` →
``boring`` changes the label instead of fooling the model. Every succeeded attack is aligned into its
swapped word pairs (:func:`swapped_pairs`, textattack's ``words_from_text`` tokenisation, as the attack
itself) and judged by four independent checks (issue #28):

* ``vader``: a swapped pair has opposite polarity in VADER's lexicon (Hutto & Gilbert, ICWSM 2014; mean
  human valence on -4..+4): one word >= +t and the other <= -t, either direction (t = 0.5);
* ``afinn``: the same in AFINN-165 (Nielsen 2011; integers -5..+5): opposite signs, |score| >= t each (1);
* ``wordnet``: a swapped pair is a WordNet antonym pair: the lexical ``!`` pointers between the words'
  lemmas (morphy base forms), and the indirect antonyms of adjective satellites (``similar_to`` a head
  that has a direct antonym; :func:`robustprune.attacks.wordnet.load_lexicon`);
* ``compound``: VADER's whole-text compound score (its rules: negation, boosters, "but", capitals,
  punctuation; normalised x / sqrt(x^2 + 15), Hutto & Gilbert Sec. 3.2) is clearly polar on both texts
  (|compound| >= t, 0.5) and of opposite sign.

A success is *label-changing* when any check of ``rule`` flags it (default: all four). "Accuracy under
valid attacks" (:func:`valid_outcomes`) counts those successes as failed attacks, keyed by the metric
``valid:<recipe>`` so the report's paired verdicts (:func:`robustprune.verdicts.compare`) apply unchanged.

The same word checks reject label-changing swaps during the search
(:class:`robustprune.attacks.components.PolarityConstraint`). Lexicons are read from the ``vader`` and
``afinn`` resources (:mod:`robustprune.resources`) and WordNet; :func:`save_polarity` /
:func:`load_polarity` keep them in the attack bundle's ``polarity/`` directory.
"""

from __future__ import annotations

import difflib
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from robustprune.attacks.wordnet import POS_FILES, Lexicon, base_forms
from robustprune.stats import Rate, rate
from robustprune.verdicts import attack_flags

WORD_CHECKS = ("vader", "afinn", "wordnet")
CHECKS = (*WORD_CHECKS, "compound")
RULE = "rule"  # the key of "any check of the rule" in ValidityAudit.shares
VALID_PREFIX = "valid:"
VADER_FILE, AFINN_FILE, ANTONYMS_FILE = "vader_lexicon.txt", "AFINN-en-165.txt", "antonyms.json"

Pair = tuple[str, str]


@dataclass(frozen=True)
class Polarity:
    """The offline lexicons: VADER token -> mean valence, AFINN word -> valence, WordNet antonyms.

    ``wordnet`` needs ``antonyms`` plus ``pos`` and ``exceptions`` for the words that have antonyms
    (what :func:`antonym_lexicon` keeps), so that inflected forms find their lemmas.
    """

    vader: Mapping[str, float]
    afinn: Mapping[str, int]
    wordnet: Lexicon


@dataclass(frozen=True)
class ValidityRule:
    """Thresholds of the checks and which checks make a success label-changing (``attack.validity``)."""

    vader_threshold: float = 0.5
    afinn_threshold: int = 1
    compound_threshold: float = 0.5
    rule: tuple[str, ...] = CHECKS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rule) - set(CHECKS))
        if unknown or not self.rule:
            raise ValueError(
                f"validity rule {list(self.rule)!r}: checks must be a non-empty subset of {CHECKS}"
            )


@dataclass(frozen=True)
class RecordFlags:
    """One succeeded attack judged: its swapped pairs, the pairs each word check flags, the compound
    scores of the original and perturbed text, each check's verdict and the rule's."""

    test_row: int
    pairs: tuple[Pair, ...]
    flagged: Mapping[str, tuple[Pair, ...]]
    compound: tuple[float, float]
    checks: Mapping[str, bool]
    label_changing: bool


@dataclass(frozen=True)
class ValidityAudit:
    """Per (model, recipe): the share of successes each check (and the rule) judges label-changing, with
    Wilson intervals; up to a few examples per check; accuracy under attack and under valid attacks."""

    model: str
    recipe: str
    successes: int
    shares: Mapping[str, Rate]
    examples: Mapping[str, tuple[str, ...]]
    accuracy_under_attack: Rate
    accuracy_under_valid_attack: Rate
    rule: tuple[str, ...] = CHECKS
    valid_by_check: Mapping[str, Rate] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain dict (metrics.json / MLflow)."""
        return {
            "model": self.model,
            "recipe": self.recipe,
            "successes": self.successes,
            "rule": list(self.rule),
            "shares": {k: v.to_dict() for k, v in self.shares.items()},
            "examples": {k: list(v) for k, v in self.examples.items()},
            "accuracy_under_attack": self.accuracy_under_attack.to_dict(),
            "accuracy_under_valid_attack": self.accuracy_under_valid_attack.to_dict(),
            "accuracy_under_valid_attack_by_check": {k: v.to_dict() for k, v in self.valid_by_check.items()},
        }


# --- lexicons -------------------------------------------------------------------------------------------


def read_vader(path: Path) -> dict[str, float]:
    """VADER's ``vader_lexicon.txt``: ``token<TAB>mean<TAB>sd<TAB>[ratings]`` -> token -> mean valence."""
    table = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0]:
            table[parts[0].lower()] = float(parts[1])
    return table


def read_afinn(path: Path) -> dict[str, int]:
    """AFINN's ``word<TAB>score`` list -> single word -> valence (multi-word phrases left out)."""
    table = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        word, _, score = line.rpartition("\t")
        if word and " " not in word.strip():
            table[word.strip().lower()] = int(score)
    return table


def antonym_lexicon(lexicon: Lexicon) -> Lexicon:
    """``lexicon`` reduced to what the antonym check reads: antonyms, and the parts of speech and
    irregular forms that lead to a word with antonyms (synonyms dropped)."""
    keep = set(lexicon.antonyms)
    exceptions = {
        pos: MappingProxyType({form: bases & keep for form, bases in table.items() if bases & keep})
        for pos, table in lexicon.exceptions.items()
    }
    return Lexicon(
        synonyms=MappingProxyType({}),
        antonyms=lexicon.antonyms,
        pos=MappingProxyType({w: p for w, p in lexicon.pos.items() if w in keep}),
        exceptions=MappingProxyType(exceptions),
    )


def save_polarity(directory: Path, vader_file: Path, afinn_file: Path, lexicon: Lexicon) -> Path:
    """Write the lexicons into ``directory``: the two files as shipped and ``antonyms.json``."""
    from robustprune.checkpoints import write_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vader_file, directory / VADER_FILE)
    shutil.copyfile(afinn_file, directory / AFINN_FILE)
    small = antonym_lexicon(lexicon)
    write_json(
        directory / ANTONYMS_FILE,
        {
            "antonyms": {w: sorted(a) for w, a in sorted(small.antonyms.items())},
            "pos": {w: sorted(p) for w, p in sorted(small.pos.items())},
            "exceptions": {
                pos: {f: sorted(b) for f, b in sorted(t.items())}
                for pos, t in sorted(small.exceptions.items())
            },
        },
    )
    return directory


def load_polarity(directory: Path) -> Polarity:
    """Read a directory written by :func:`save_polarity`."""
    from robustprune.checkpoints import read_json

    directory = Path(directory)
    data = read_json(directory / ANTONYMS_FILE)
    lexicon = Lexicon(
        synonyms=MappingProxyType({}),
        antonyms=MappingProxyType({w: frozenset(a) for w, a in data["antonyms"].items()}),
        pos=MappingProxyType({w: frozenset(p) for w, p in data["pos"].items()}),
        exceptions={
            pos: {f: frozenset(b) for f, b in t.items()} for pos, t in data.get("exceptions", {}).items()
        },
    )
    return Polarity(read_vader(directory / VADER_FILE), read_afinn(directory / AFINN_FILE), lexicon)


# --- word-level checks ----------------------------------------------------------------------------------


def opposite(a: float, b: float, threshold: float) -> bool:
    """One value >= +threshold and the other <= -threshold (either order)."""
    return (a >= threshold and b <= -threshold) or (a <= -threshold and b >= threshold)


def vader_flip(a: str, b: str, vader: Mapping[str, float], threshold: float = 0.5) -> bool:
    """Opposite polarity in VADER's lexicon (words it lacks score 0)."""
    return opposite(vader.get(a.lower(), 0.0), vader.get(b.lower(), 0.0), threshold)


def afinn_flip(a: str, b: str, afinn: Mapping[str, int], threshold: int = 1) -> bool:
    """Opposite signs in AFINN, |score| >= ``threshold`` each (words it lacks score 0)."""
    return opposite(afinn.get(a.lower(), 0), afinn.get(b.lower(), 0), threshold)


def lemmas(word: str, lexicon: Lexicon) -> frozenset[str]:
    """``word`` (lowercased) and its WordNet base forms in any part of speech (morphy)."""
    word = word.lower()
    return frozenset({word}.union(*(base_forms(word, pos, lexicon) for pos in POS_FILES)))


def wordnet_antonyms(a: str, b: str, lexicon: Lexicon) -> bool:
    """A lemma of ``b`` is a (direct or indirect) WordNet antonym of a lemma of ``a``."""
    lb = lemmas(b, lexicon)
    return any(lb & lexicon.antonyms.get(la, frozenset()) for la in lemmas(a, lexicon))


def word_checks(
    a: str, b: str, polarity: Polarity, rule: ValidityRule, checks: Iterable[str] = WORD_CHECKS
) -> dict[str, bool]:
    """The word-level ``checks`` of one swap ``a`` -> ``b``: check -> flags it as label-changing."""
    out = {}
    for check in checks:
        if check == "vader":
            out[check] = vader_flip(a, b, polarity.vader, rule.vader_threshold)
        elif check == "afinn":
            out[check] = afinn_flip(a, b, polarity.afinn, rule.afinn_threshold)
        elif check == "wordnet":
            out[check] = wordnet_antonyms(a, b, polarity.wordnet)
        else:
            raise ValueError(f"unknown word check {check!r}; known: {WORD_CHECKS}")
    return out


# --- alignment and whole-text score ---------------------------------------------------------------------


def _words_from_text(text: str) -> list[str]:
    from robustprune.attacks.textattack_env import import_textattack

    return import_textattack().shared.utils.words_from_text(text)


def swapped_pairs(
    original: str, perturbed: str, words: Callable[[str], Sequence[str]] | None = None
) -> tuple[Pair, ...]:
    """The (original word, perturbed word) pairs that differ between the two texts, in text order.

    Tokenised by ``words`` (default: textattack's ``words_from_text``, as the attack). Equal word counts
    (word swaps) are compared position by position, as textattack's ``all_words_diff``; otherwise (a
    TextBugger space inserted inside a word) the word lists are aligned by ``difflib`` and each replaced
    span becomes one pair of space-joined words.
    """
    words = words or _words_from_text
    x, y = list(words(original)), list(words(perturbed))
    if len(x) == len(y):
        return tuple((a, b) for a, b in zip(x, y, strict=True) if a != b)
    pairs = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=x, b=y, autojunk=False).get_opcodes():
        if op != "equal":
            pairs.append((" ".join(x[i1:i2]), " ".join(y[j1:j2])))
    return tuple(pairs)


def compound_scorer(vader: Mapping[str, float]) -> Callable[[str], float]:
    """VADER's whole-text compound score (``vaderSentiment==3.3.2``'s rules) over the lexicon ``vader``."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    analyzer.lexicon = dict(vader)  # the sha256-checked resource, not the package's own copy
    return lambda text: float(analyzer.polarity_scores(text)["compound"])


# --- per record and per (model, recipe) -----------------------------------------------------------------


def judge(
    test_row: int,
    original: str,
    perturbed: str,
    polarity: Polarity,
    rule: ValidityRule,
    compound: Callable[[str], float],
    words: Callable[[str], Sequence[str]] | None = None,
) -> RecordFlags:
    """Every check on one (original, perturbed) pair of texts."""
    pairs = swapped_pairs(original, perturbed, words)
    flagged: dict[str, list[Pair]] = {c: [] for c in WORD_CHECKS}
    for a, b in pairs:
        for check, hit in word_checks(a, b, polarity, rule).items():
            if hit:
                flagged[check].append((a, b))
    scores = (compound(original), compound(perturbed))
    checks = {c: bool(flagged[c]) for c in WORD_CHECKS}
    checks["compound"] = opposite(scores[0], scores[1], rule.compound_threshold)
    return RecordFlags(
        test_row=int(test_row),
        pairs=pairs,
        flagged=MappingProxyType({c: tuple(v) for c, v in flagged.items()}),
        compound=scores,
        checks=MappingProxyType(checks),
        label_changing=any(checks[c] for c in rule.rule),
    )


def judge_records(
    records: Iterable[Mapping],
    polarity: Polarity,
    rule: ValidityRule,
    compound: Callable[[str], float] | None = None,
    words: Callable[[str], Sequence[str]] | None = None,
) -> dict[tuple[str, str], dict[int, RecordFlags]]:
    """(model, recipe) -> test row -> :class:`RecordFlags` for every succeeded record.

    ``records``: rows of ``reports/attacks/<model>/<recipe>.csv`` with ``model`` and ``recipe`` keys.
    """
    compound = compound or compound_scorer(polarity.vader)
    out: dict[tuple[str, str], dict[int, RecordFlags]] = {}
    for r in records:
        if r["outcome"] != "succeeded":
            continue
        flags = judge(
            int(r["test_row"]), r["original_text"], r["perturbed_text"], polarity, rule, compound, words
        )
        out.setdefault((r["model"], r["recipe"]), {})[flags.test_row] = flags
    return out


def valid_outcomes(
    outcomes: Mapping[int, str], flags: Mapping[int, RecordFlags], checks: Sequence[str] | None = None
) -> dict[int, str]:
    """``outcomes`` with every success judged label-changing turned into a failed attack.

    ``checks``: which checks count (default: each record's rule verdict, ``label_changing``).
    """

    def invalid(f: RecordFlags) -> bool:
        return f.label_changing if checks is None else any(f.checks[c] for c in checks)

    return {
        row: "failed" if o == "succeeded" and row in flags and invalid(flags[row]) else o
        for row, o in outcomes.items()
    }


def valid_attack_outcomes(
    outcomes: Mapping[tuple[str, str], Mapping[int, str]],
    flags: Mapping[tuple[str, str], Mapping[int, RecordFlags]],
) -> dict[tuple[str, str], dict[int, str]]:
    """(model, ``valid:<recipe>``) -> test row -> outcome under valid attacks, for every (model, recipe)
    of ``outcomes``: the mapping :func:`robustprune.verdicts.compare` reads."""
    return {
        (model, VALID_PREFIX + recipe): valid_outcomes(o, flags.get((model, recipe), {}))
        for (model, recipe), o in outcomes.items()
        if not recipe.startswith(VALID_PREFIX)
    }


def _accuracy(outcomes: Mapping[int, str]) -> Rate:
    f = attack_flags(outcomes)
    return rate(sum(f.values()), len(f))


def _example(check: str, f: RecordFlags) -> str:
    if check in WORD_CHECKS:
        return ", ".join(f"{a}→{b}" for a, b in f.flagged[check])
    swaps = ", ".join(f"{a}→{b}" for a, b in f.pairs[:4])
    return f"{f.compound[0]:+.2f}→{f.compound[1]:+.2f} ({swaps})"


def audit(
    model: str,
    recipe: str,
    outcomes: Mapping[int, str],
    flags: Mapping[int, RecordFlags],
    rule: ValidityRule,
    examples: int = 3,
) -> ValidityAudit:
    """The audit of one (model, recipe): shares of successes per check and by the rule (Wilson), the
    first ``examples`` flagged successes per check (in the attack's order), and the two accuracies."""
    succeeded = [flags[row] for row, o in outcomes.items() if o == "succeeded" and row in flags]
    n = len(succeeded)
    shares = {c: rate(sum(f.checks[c] for f in succeeded), n) for c in CHECKS}
    shares[RULE] = rate(sum(f.label_changing for f in succeeded), n)
    picked = {c: tuple(_example(c, f) for f in succeeded if f.checks[c])[:examples] for c in CHECKS}
    return ValidityAudit(
        model=model,
        recipe=recipe,
        successes=n,
        shares=MappingProxyType(shares),
        examples=MappingProxyType(picked),
        accuracy_under_attack=_accuracy(outcomes),
        accuracy_under_valid_attack=_accuracy(valid_outcomes(outcomes, flags)),
        rule=tuple(rule.rule),
        valid_by_check=MappingProxyType(
            {c: _accuracy(valid_outcomes(outcomes, flags, (c,))) for c in CHECKS}
        ),
    )


def audit_all(
    outcomes: Mapping[tuple[str, str], Mapping[int, str]],
    flags: Mapping[tuple[str, str], Mapping[int, RecordFlags]],
    rule: ValidityRule,
    examples: int = 3,
) -> list[ValidityAudit]:
    """:func:`audit` for every (model, recipe) of ``outcomes`` (``valid:`` keys skipped), in its order."""
    return [
        audit(model, recipe, o, flags.get((model, recipe), {}), rule, examples)
        for (model, recipe), o in outcomes.items()
        if not recipe.startswith(VALID_PREFIX)
    ]
