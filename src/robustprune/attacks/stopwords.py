"""Stop words that attacks never perturb, and the NLTK stop-word file that ``import textattack`` needs.

:func:`default_stopwords` is the stop-word list of the TextFooler public implementation (Jin et
al., AAAI 2020, github.com/jind11/TextFooler, MIT licence; the same 266 words as textattack's
``TextFoolerJin2019`` recipe).  ``import textattack`` builds ``StopwordModification()`` from NLTK's
English stop words and fails offline without them: :func:`ensure_nltk_stopwords` writes that
corpus file (one word a line) under ``$NLTK_DATA``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from robustprune.checkpoints import atomic_path

_TEXTFOOLER_STOPWORDS = """
a about above across after afterwards again against ain all almost alone along already also although
am among amongst an and another any anyhow anyone anything anyway anywhere are aren aren't around as
at back been before beforehand behind being below beside besides between beyond both but by can
cannot could couldn couldn't d didn didn't doesn doesn't don don't down due during either else
elsewhere empty enough even ever everyone everything everywhere except first for former formerly
from hadn hadn't hasn hasn't haven haven't he hence her here hereafter hereby herein hereupon hers
herself him himself his how however hundred i if in indeed into is isn isn't it it's its itself just
latter latterly least ll may me meanwhile mightn mightn't mine more moreover most mostly must mustn
mustn't my myself namely needn needn't neither never nevertheless next no nobody none noone nor not
nothing now nowhere o of off on once one only onto or other others otherwise our ours ourselves out
over per please s same shan shan't she she's should've shouldn shouldn't somehow something sometime
somewhere such t than that that'll the their theirs them themselves then thence there thereafter
thereby therefore therein thereupon these they this those through throughout thru thus to too toward
towards under unless until up upon used ve was wasn wasn't we were weren weren't what whatever when
whence whenever where whereafter whereas whereby wherein whereupon wherever whether which while
whither who whoever whole whom whose why with within without won won't would wouldn wouldn't y yet
you you'd you'll you're you've your yours yourself yourselves
"""


def default_stopwords() -> frozenset[str]:
    """TextFooler's 266 stop words (lowercase; some with apostrophes, e.g. ``don't``)."""
    return frozenset(_TEXTFOOLER_STOPWORDS.split())


def ensure_nltk_stopwords(nltk_data: Path, words: Iterable[str] | None = None) -> Path:
    """Write ``nltk_data/corpora/stopwords/english`` (one word a line, sorted) unless it already holds them.

    ``words`` defaults to :func:`default_stopwords`.  The file is replaced atomically; returns its
    path.  Point ``NLTK_DATA`` at ``nltk_data`` before ``import textattack``.
    """
    path = Path(nltk_data) / "corpora" / "stopwords" / "english"
    text = "\n".join(sorted(set(default_stopwords() if words is None else words))) + "\n"
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return path
