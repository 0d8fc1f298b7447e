"""Import textattack 0.3.11 offline: no NLTK downloads, no hub, no S3.

``import textattack`` (a) calls ``nltk.download`` six times on its first run in a home directory
and (b) builds ``StopwordModification()`` at import time, which reads NLTK's English stop-word
corpus and raises ``LookupError`` when it is absent (``/work/shared/resources.md``, "textattack
0.3.11 offline pitfalls").  :func:`import_textattack` writes that corpus file when it is missing,
replaces ``nltk.download`` with a function that refuses (returns ``False`` as a failed download
does), and then imports textattack.  ``TA_CACHE_DIR`` is deliberately left alone: setting it also
resets ``HF_HOME`` and ``XDG_CACHE_HOME`` for the whole process.  textattack's import also forces
``TOKENIZERS_PARALLELISM=True``; a value the caller had set is put back.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

STOPWORDS_RELATIVE = Path("corpora") / "stopwords" / "english"

# NLTK's English stop-word list (nltk_data ``corpora/stopwords/english``, 179 words): the list
# textattack's default ``StopwordModification()`` reads.  Written only when the file is absent.
_NLTK_STOPWORDS_TEXT = (
    "i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself "
    "yourselves he him his himself she she's her hers herself it it's its itself they them their "
    "theirs themselves what which who whom this that that'll these those am is are was were be been "
    "being have has had having do does did doing a an the and but if or because as until while of at "
    "by for with about against between into through during before after above below to from up down "
    "in out on off over under again further then once here there when where why how all any both each "
    "few more most other some such no nor not only own same so than too very s t can will just don "
    "don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn "
    "doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn "
    "needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't"
)
NLTK_ENGLISH_STOPWORDS: tuple[str, ...] = tuple(_NLTK_STOPWORDS_TEXT.split())


def default_nltk_data() -> Path:
    """``$NLTK_DATA`` when set, else ``<project root>/nltk_data`` (what the Makefile and flows export)."""
    env = os.environ.get("NLTK_DATA")
    if env:
        return Path(env.split(os.pathsep)[0])
    from robustprune.resources import project_root

    return project_root() / "nltk_data"


def ensure_stopwords_file(nltk_data: Path) -> Path:
    """Write ``nltk_data/corpora/stopwords/english`` (one word a line) unless it exists; return its path."""
    path = Path(nltk_data) / STOPWORDS_RELATIVE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(NLTK_ENGLISH_STOPWORDS) + "\n", encoding="utf-8")
        tmp.replace(path)
    return path


def _refuse_download(*args: object, **kwargs: object) -> bool:
    """Stand-in for ``nltk.download``: nothing may be fetched at run time; report a failed download."""
    logger.debug("nltk.download%s refused (offline)", args)
    return False


def block_nltk_download() -> None:
    """Make ``nltk.download`` (and the downloader's module-level alias) a no-op that returns False."""
    import nltk
    import nltk.downloader

    nltk.download = _refuse_download
    nltk.downloader.download = _refuse_download


def import_textattack(nltk_data: Path | None = None) -> ModuleType:
    """Import and return the ``textattack`` module without any network access.

    ``nltk_data`` (default :func:`default_nltk_data`) receives the English stop-word corpus if it
    lacks it and is put first on ``nltk.data.path`` (and into ``$NLTK_DATA`` if unset).
    """
    import sys

    if "textattack" in sys.modules:  # imported already (by this function or directly)
        block_nltk_download()
        return sys.modules["textattack"]
    root = Path(nltk_data) if nltk_data is not None else default_nltk_data()
    ensure_stopwords_file(root)
    os.environ.setdefault("NLTK_DATA", str(root))
    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    block_nltk_download()
    parallelism = os.environ.get("TOKENIZERS_PARALLELISM")
    import textattack

    # textattack's import sets TOKENIZERS_PARALLELISM=True for the whole process: keep the caller's choice
    if parallelism is not None:
        os.environ["TOKENIZERS_PARALLELISM"] = parallelism
    return textattack
