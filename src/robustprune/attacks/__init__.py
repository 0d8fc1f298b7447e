"""Adversarial text attacks built offline from textattack components.

Recipes (one module each, ``build(model_wrapper, resources, **options) -> textattack.Attack``):
``textfooler`` (Jin et al. 2019), ``bert-attack`` (Li et al. 2020), ``textbugger`` (Li et al.
2018).  Importing this package is cheap: textattack (slow to import) is loaded only when a recipe
is built, so resource builders can import :mod:`robustprune.attacks.types` freely.
"""

from __future__ import annotations

import importlib

from robustprune import registry

# recipe name -> module under robustprune.attacks (robustprune.registry declares each recipe)
RECIPES: dict[str, str] = {r.name: r.module for r in registry.RECIPES.values()}


def build_attack(name: str, wrapper, resources, **options):
    """Build recipe ``name`` against ``wrapper`` (a textattack ``ModelWrapper``) with ``resources``.

    ``options`` go to the recipe's ``build`` (see each module for its paper defaults).  An
    unknown name raises ValueError listing the known recipes.
    """
    try:
        module_name = RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown attack recipe {name!r}; known recipes: {sorted(RECIPES)}") from None
    module = importlib.import_module(f"{__name__}.{module_name}")
    return module.build(wrapper, resources, **options)


__all__ = ["RECIPES", "build_attack"]
