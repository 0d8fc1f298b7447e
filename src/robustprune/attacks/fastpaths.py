"""Speed-ups of textattack's hot paths that leave every result unchanged.

Profiled on TextFooler (the default run's examples, CPU time, cProfile): after the model forwards, the
largest share is building ``AttackedText`` objects, almost all of it in
``textattack.shared.utils.words_from_text`` (a regex split called twice per word of every
candidate text in ``AttackedText.generate_new_attacked_text``, once per text for ``.words``).  The
same few hundred strings (the words of the text under attack and their candidates) come back again
and again, so :func:`install` puts a memoised copy of the function where ``AttackedText`` looks it up.
The function is pure (a string in, a new list of strings out; the memo returns a fresh list each
time), so every ``AttackedText`` is built exactly as before.

:func:`install` / :func:`uninstall` switch it (benchmarks run today's path and this one in one
process); :func:`installed` says whether it is on.  Nothing here runs until :func:`install` is called.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from robustprune.attacks.textattack_env import import_textattack

MEMO_SIZE = 1 << 18
_original: Callable | None = None


def _memoised(words_from_text: Callable) -> Callable:
    """``words_from_text`` with an LRU memo for calls without ``words_to_ignore``."""

    @functools.lru_cache(maxsize=MEMO_SIZE)
    def cached(s: str) -> tuple[str, ...]:
        return tuple(words_from_text(s))

    @functools.wraps(words_from_text)
    def fast(s, words_to_ignore=()):  # noqa: ANN001, ANN202 - textattack's signature
        if words_to_ignore or not isinstance(s, str):
            return words_from_text(s, list(words_to_ignore))
        return list(cached(s))

    fast.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return fast


def install() -> None:
    """Make ``AttackedText`` use the memoised ``words_from_text`` (idempotent)."""
    global _original
    module = import_textattack().shared.attacked_text
    if _original is None:
        _original = module.words_from_text
        module.words_from_text = _memoised(_original)


def uninstall() -> None:
    """Put textattack's own ``words_from_text`` back (idempotent)."""
    global _original
    if _original is not None:
        import_textattack().shared.attacked_text.words_from_text = _original
        _original = None


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return _original is not None
