"""Example perturbations for the report: a seeded sample of successful attacks, changed words marked.

A reader judges an attack's fidelity fastest by reading what it did.  :func:`select_examples` picks up
to ``k`` succeeded perturbations per recipe (a seeded sample, so the report is reproducible) from
per-example records (the rows of ``reports/attacks/<model>/<recipe>.csv`` or
:class:`~robustprune.attacks.runner.ExampleResult` dicts, each with a ``recipe`` key), and marks the
words that changed; :func:`examples_markdown` renders them as Markdown ("original → perturbed", the
changed words in bold).  Pure functions: no textattack, no file IO.
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Iterable, Mapping, Sequence

from robustprune.registry import RECIPE_TITLES

_TOKEN = re.compile(r"\S+|\s+")
_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


def _escape(text: str) -> str:
    """``text`` with Markdown's inline specials backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _bold(token: str) -> str:
    """A changed token in bold, punctuation around it left outside the marks."""
    lead, core, trail = _CORE.match(token).groups()
    if not core:
        return f"**{_escape(token)}**"
    return f"{_escape(lead)}**{_escape(core)}**{_escape(trail)}"


def mark_changes(original: str, perturbed: str) -> tuple[str, str, list[tuple[str, str]]]:
    """Both texts as Markdown with the differing words in bold, and the ``(old, new)`` changes.

    Words are whitespace-separated tokens, aligned with ``difflib`` (a replaced word, and TextBugger's
    inserted space that splits one word into two, show as one change).
    """
    a_tokens, b_tokens = _TOKEN.findall(original), _TOKEN.findall(perturbed)
    a_words = [i for i, t in enumerate(a_tokens) if not t.isspace()]
    b_words = [i for i, t in enumerate(b_tokens) if not t.isspace()]
    matcher = difflib.SequenceMatcher(
        a=[a_tokens[i] for i in a_words], b=[b_tokens[i] for i in b_words], autojunk=False
    )
    a_changed: set[int] = set()
    b_changed: set[int] = set()
    changes = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        a_changed.update(a_words[i1:i2])
        b_changed.update(b_words[j1:j2])
        changes.append(
            (
                " ".join(_CORE.match(a_tokens[i]).group(2) or a_tokens[i] for i in a_words[i1:i2]),
                " ".join(_CORE.match(b_tokens[j]).group(2) or b_tokens[j] for j in b_words[j1:j2]),
            )
        )

    def render(tokens: list[str], changed: set[int]) -> str:
        return "".join(
            _bold(t) if i in changed else (t if t.isspace() else _escape(t)) for i, t in enumerate(tokens)
        )

    return render(a_tokens, a_changed), render(b_tokens, b_changed), changes


def _recipe_order(recipe: str) -> tuple[int, str]:
    """Recipes in the package's order (TextFooler, BERT-Attack, TextBugger), others after by name."""
    from robustprune.attacks import RECIPES

    names = list(RECIPES)
    return (names.index(recipe) if recipe in names else len(names), recipe)


def _row(record: Mapping) -> int:
    """The record's test-split row (``test_row``, else ``index``; -1 when it has neither)."""
    for key in ("test_row", "index"):
        if record.get(key) not in (None, ""):
            return int(record[key])
    return -1


def select_examples(records: Iterable[Mapping], k: int, seed: int) -> list[dict]:
    """Up to ``k`` succeeded perturbations per recipe, a seeded sample, with the changed words marked.

    ``records``: per-example dicts with at least ``outcome``, ``original_text``, ``perturbed_text``;
    ``recipe`` (default ``""``), ``model``, ``test_row``/``index``, ``label``,
    ``original_prediction``, ``perturbed_prediction``, ``num_queries`` and
    ``words_perturbed_fraction`` are carried over when present.  Only ``outcome == "succeeded"``
    records whose text changed are eligible.  The sample does not depend on the order of
    ``records`` (candidates are sorted first); the result is ordered by recipe (TextFooler,
    BERT-Attack, TextBugger, then others), model and row.
    Returns one dict per example: the carried-over fields plus ``original_md``, ``perturbed_md``
    (Markdown, changed words in bold), ``changes`` (``[(old, new), ...]``) and ``eligible`` (how many
    succeeded perturbations the recipe had).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    by_recipe: dict[str, list[Mapping]] = {}
    for r in records:
        if r.get("outcome") != "succeeded" or r.get("perturbed_text") == r.get("original_text"):
            continue
        by_recipe.setdefault(str(r.get("recipe") or ""), []).append(r)
    out = []
    for recipe in sorted(by_recipe, key=_recipe_order):
        pool = sorted(
            by_recipe[recipe], key=lambda r: (str(r.get("model", "")), _row(r), str(r["original_text"]))
        )
        chosen = random.Random(f"{seed}|{recipe}").sample(pool, min(k, len(pool)))
        chosen.sort(key=lambda r: (str(r.get("model", "")), _row(r), str(r["original_text"])))
        for r in chosen:
            original_md, perturbed_md, changes = mark_changes(
                str(r["original_text"]), str(r["perturbed_text"])
            )
            item = {
                key: r[key]
                for key in (
                    "model",
                    "label",
                    "original_prediction",
                    "perturbed_prediction",
                    "num_queries",
                    "words_perturbed_fraction",
                )
                if key in r
            }
            item.update(
                recipe=recipe,
                row=_row(r),
                original_text=str(r["original_text"]),
                perturbed_text=str(r["perturbed_text"]),
                original_md=original_md,
                perturbed_md=perturbed_md,
                changes=changes,
                eligible=len(pool),
            )
            out.append(item)
    return out


def _label(value: object, names: Sequence[str] | None) -> str:
    """A label id as its name when ``names`` has it."""
    try:
        i = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    return names[i] if names is not None and 0 <= i < len(names) else str(i)


def examples_markdown(
    examples: Sequence[Mapping],
    *,
    label_names: Sequence[str] | None = None,
    heading_level: int = 3,
    recipe_titles: Mapping[str, str] | None = None,
) -> str:
    """Markdown for :func:`select_examples`' output: one section per recipe, one numbered item per
    example ("original → perturbed", changed words in bold, the prediction before and after)."""
    titles = dict(RECIPE_TITLES)
    titles.update(recipe_titles or {})
    hashes = "#" * heading_level
    lines: list[str] = []
    recipes = list(dict.fromkeys(str(e["recipe"]) for e in examples))
    for recipe in recipes:
        items = [e for e in examples if str(e["recipe"]) == recipe]
        eligible = items[0].get("eligible", len(items))
        lines.append(
            f"{hashes} {titles.get(recipe, recipe) or 'attack'}: {len(items)} of {eligible} successful"
        )
        lines.append("")
        for n, e in enumerate(items, 1):
            where = ", ".join(
                x
                for x in (
                    str(e["model"]) if e.get("model") else "",
                    f"row {e['row']}" if e.get("row", -1) >= 0 else "",
                    f"{len(e['changes'])} change{'s' if len(e['changes']) != 1 else ''}",
                )
                if x
            )
            flip = ""
            if "original_prediction" in e and "perturbed_prediction" in e:
                flip = (
                    f"; {_label(e['original_prediction'], label_names)} → "
                    f"{_label(e['perturbed_prediction'], label_names)}"
                )
            lines.append(f"{n}. ({where}{flip})")
            lines.append(f"   - original: {e['original_md']}")
            lines.append(f"   - perturbed: {e['perturbed_md']}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n" if lines else ""
