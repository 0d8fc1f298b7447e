"""Every pruning method and attack recipe, declared once: its name and what the rest of the code asks of it.

The params schema (``config.PRUNE_METHODS`` / ``ATTACK_RECIPES`` and the ``Literal`` types), the kernel
dispatch (``robustprune.pruning``), the statistics the layer-wise driver collects, the recipe builders
(``robustprune.attacks``), the options and resources the attack task hands a recipe, the report's titles
and order, and the verdicts' baselines all read these entries; ``tests/unit/test_registry.py`` fails on a
method or recipe name spelled anywhere else in the library, ``tasks/``, ``flows/`` or ``plumbing/``.

Importing this module is cheap (no torch, no textattack): ``robustprune.config`` imports it before any
heavy import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PruneMethod:
    """A one-shot, layer-wise pruning method (the kernel: ``src/robustprune/pruning/<name>.py``)."""

    name: str
    title: str
    #: the calibration statistics its kernel reads: none (magnitude), the Hessian's diagonal, the full Hessian
    statistics: Literal["none", "diag", "full"]
    #: needs the dense model's inputs beside the pruned ones (RAKP's cross term)
    dense_stream: bool = False
    #: a one-shot baseline: other models are matched against it by clean accuracy (robustprune.verdicts)
    baseline: bool = False
    #: the summary's headline lists its robustness comparisons with the reference method, not only clean ones
    headline_robustness: bool = True


MAGNITUDE = PruneMethod("magnitude", "Magnitude", "none", baseline=True, headline_robustness=False)
WANDA = PruneMethod("wanda", "Wanda", "diag", baseline=True, headline_robustness=False)
SPARSEGPT = PruneMethod("sparsegpt", "SparseGPT", "full", baseline=True)
RAKP = PruneMethod("rakp", "RAKP", "full", dense_stream=True)

#: name -> method, in report order
METHODS: dict[str, PruneMethod] = {m.name: m for m in (MAGNITUDE, WANDA, SPARSEGPT, RAKP)}
#: the method every other pruned model is compared with at the same sparsity (verdicts.VS_SPARSEGPT)
REFERENCE_METHOD = SPARSEGPT


@dataclass(frozen=True)
class AttackRecipe:
    """An attack recipe: ``robustprune.attacks.<module>.build(model_wrapper, resources, **options)``."""

    name: str
    title: str
    module: str
    #: the params section under ``attack`` that holds its options (``attack.<options>``), if any
    options: str | None = None
    #: the models from the resource bundle the attack task loads for it: ``tagger`` (part-of-speech),
    #: ``masked_lm`` (BERT-Attack's substitutions), ``encoder`` (sentence similarity)
    loads: tuple[str, ...] = ()


TEXTFOOLER = AttackRecipe("textfooler", "TextFooler", "textfooler", options="textfooler", loads=("tagger",))
BERT_ATTACK = AttackRecipe("bert-attack", "BERT-Attack", "bert_attack", loads=("masked_lm",))
TEXTBUGGER = AttackRecipe("textbugger", "TextBugger", "textbugger")

#: name -> recipe of the attack stage, in report order
RECIPES: dict[str, AttackRecipe] = {r.name: r for r in (TEXTFOOLER, BERT_ATTACK, TEXTBUGGER)}
#: the soup criterion's cheap proxy attack (``soup.attack.recipe: a2t``): A2T's recipe (robustprune.a2t),
#: not an evaluation recipe of the attack stage
PROXY = AttackRecipe("a2t", "A2T", "a2t", loads=("tagger", "encoder"))

#: recipe name -> title, for the report and the README table
RECIPE_TITLES: dict[str, str] = {r.name: r.title for r in RECIPES.values()}
