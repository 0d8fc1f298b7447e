"""Tests of the example-perturbation picker for the report (robustprune.attacks.examples)."""

from __future__ import annotations

import pytest

from robustprune.attacks.examples import examples_markdown, mark_changes, select_examples


def _rec(recipe: str, row: int, outcome: str = "succeeded", **kw) -> dict:
    base = {
        "recipe": recipe,
        "model": "soup-greedy",
        "test_row": row,
        "label": 0,
        "original_prediction": 0,
        "perturbed_prediction": 1,
        "outcome": outcome,
        "original_text": f"No way I can believe this load of junk {row}.",
        "perturbed_text": f"No but I can believe this load of tear {row}.",
    }
    return {**base, **kw}


def test_mark_changes_bolds_changed_words_only() -> None:
    original, perturbed, changes = mark_changes(
        "No way I can believe this load of junk.", "No but I can believe this load of tear."
    )
    assert original == "No **way** I can believe this load of **junk**."
    assert perturbed == "No **but** I can believe this load of **tear**."
    assert changes == [("way", "but"), ("junk", "tear")]
    # TextBugger's inserted space splits one word into two: one change; Markdown specials are escaped
    original, perturbed, changes = mark_changes("a *terrible* film", "a *terr ible* film")
    assert changes == [("terrible", "terr ible")]
    assert original == r"a \***terrible**\* film" and perturbed == r"a \***terr** **ible**\* film"
    assert mark_changes("same text", "same text") == ("same text", "same text", [])


def test_select_examples_is_seeded_per_recipe_and_order_free() -> None:
    records = [_rec("textfooler", i) for i in range(30)] + [_rec("textbugger", i) for i in range(5)]
    records += [
        _rec("textfooler", 99, outcome="failed"),
        _rec("textfooler", 98, outcome="skipped"),
        _rec("bert-attack", 1, perturbed_text=_rec("bert-attack", 1)["original_text"]),  # nothing changed
    ]
    picked = select_examples(records, 10, seed=0)
    assert [e["recipe"] for e in picked] == ["textfooler"] * 10 + ["textbugger"] * 5  # package order
    assert all(e["eligible"] == (30 if e["recipe"] == "textfooler" else 5) for e in picked)
    rows = [e["row"] for e in picked if e["recipe"] == "textfooler"]
    assert rows == sorted(rows) and len(set(rows)) == 10 and not {98, 99} & set(rows)
    assert select_examples(list(reversed(records)), 10, seed=0) == picked  # input order does not matter
    assert select_examples(records, 10, seed=1) != picked  # the seed does
    first = picked[0]
    assert first["changes"] == [("way", "but"), ("junk", "tear")] and first["model"] == "soup-greedy"
    assert select_examples(records, 0, seed=0) == []
    with pytest.raises(ValueError, match="k must be"):
        select_examples(records, -1, seed=0)


def test_examples_markdown_lists_each_recipe() -> None:
    picked = select_examples([_rec("textfooler", 3), _rec("textbugger", 4, perturbed_prediction=1)], 5, 0)
    md = examples_markdown(picked, label_names=["rotten", "fresh"])
    assert md.startswith("### TextFooler: 1 of 1 successful\n")
    assert "### TextBugger: 1 of 1 successful" in md
    assert "1. (soup-greedy, row 3, 2 changes; rotten → fresh)" in md
    assert "   - original: No **way** I can believe this load of **junk** 3." in md
    assert "   - perturbed: No **but** I can believe this load of **tear** 3." in md
    assert examples_markdown([]) == ""
    assert examples_markdown(picked, heading_level=4).startswith("#### TextFooler")
