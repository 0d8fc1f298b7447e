"""A WordNet 3.0 lexicon read straight from the database files (no nltk needed).

Reads the ``data.{noun,verb,adj,adv}`` files of the ``wordnet`` resource (format: ``wndb(5WN)``,
https://wordnet.princeton.edu/documentation/wndb5wn) and the morphological exception lists
``{noun,verb,adj,adv}.exc``, and returns synonyms (words sharing a synset), antonyms (the
lexical ``!`` pointers, optionally the indirect antonyms of adjective satellites) and coarse
parts of speech.  Everything is lowercased; multi-word lemmas (``ice_cream``) are left out.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

POS_FILES = {"noun": "noun", "verb": "verb", "adj": "adj", "adv": "adv"}
SS_TYPES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")
# WordNet's "morphy" detachment rules (wndb(5WN) / morphy(7WN)): suffix -> replacement, per POS
_DETACHMENT = {
    "noun": (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"))
    + (("shes", "sh"), ("men", "man"), ("ies", "y")),
    "verb": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"))
    + (("ing", ""),),
    "adj": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "adv": (),
}


@dataclass(frozen=True)
class Synset:
    """One line of a ``data.*`` file: its key, coarse POS, lemmas and pointers.

    ``key`` is ``(file_pos, offset)`` with ``file_pos`` in ``{"n", "v", "a", "r"}`` (satellites
    ``s`` live in ``data.adj``: key ``"a"``); ``words`` are lowercased lemmas with adjective
    markers stripped (multi-word lemmas keep their ``_``); ``pointers`` are
    ``(symbol, target_key, source_word, target_word)`` with 1-based word numbers, 0 for a
    semantic (synset-to-synset) pointer.
    """

    key: tuple[str, int]
    ss_type: str
    words: tuple[str, ...]
    pointers: tuple[tuple[str, tuple[str, int], int, int], ...]


@dataclass(frozen=True)
class Lexicon:
    """Word relations from WordNet, all keys and values lowercased single words.

    ``synonyms``: word → words sharing at least one synset with it (itself excluded);
    ``antonyms``: word → its antonyms (symmetric); ``pos``: word → subset of
    ``{"noun", "verb", "adj", "adv"}``; ``exceptions``: POS → irregular form → base forms
    (from the ``*.exc`` files, used by :func:`base_forms`).
    """

    synonyms: Mapping[str, frozenset[str]]
    antonyms: Mapping[str, frozenset[str]]
    pos: Mapping[str, frozenset[str]]
    exceptions: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)


def _file_pos(ss_type: str) -> str:
    """The data-file POS letter of a synset type (satellites ``s`` live in ``data.adj``)."""
    return "a" if ss_type == "s" else ss_type


def clean_lemma(lemma: str) -> str:
    """Lowercase a lemma and strip an adjective syntactic marker: ``Galore(ip)`` → ``galore``."""
    return _ADJ_MARKER.sub("", lemma).lower()


def parse_data_line(line: str, symbols: Container[str] | None = None) -> Synset | None:
    """Parse one ``data.*`` line (wndb(5WN)); ``None`` for the license header lines.

    Layout: ``offset lex_filenum ss_type w_cnt (word lex_id)*w_cnt p_cnt
    (symbol offset pos source/target)*p_cnt [frames] | gloss`` where ``w_cnt`` is 2-digit hex,
    ``p_cnt`` 3-digit decimal and ``source/target`` 4 hex digits (two word numbers).  Only the
    pointers whose symbol is in ``symbols`` are kept (default: all).
    """
    if not line or line[0] == " ":
        return None
    fields = line.split(" | ", 1)[0].split()
    offset, ss_type, w_cnt = int(fields[0]), fields[2], int(fields[3], 16)
    words = tuple(clean_lemma(w) for w in fields[4 : 4 + 2 * w_cnt : 2])
    at = 4 + 2 * w_cnt
    p_cnt = int(fields[at])
    pointers = []
    for i in range(p_cnt):
        symbol, target, target_pos, source_target = fields[at + 1 + 4 * i : at + 5 + 4 * i]
        if symbols is not None and symbol not in symbols:
            continue
        key = (_file_pos(target_pos), int(target))
        pointers.append((symbol, key, int(source_target[:2], 16), int(source_target[2:], 16)))
    return Synset((_file_pos(ss_type), offset), ss_type, words, tuple(pointers))


def read_synsets(wordnet_dir: Path, symbols: Container[str] | None = None) -> dict[tuple[str, int], Synset]:
    """Every synset of the four ``data.*`` files, keyed by ``(file_pos, offset)``.

    ``symbols`` limits the pointers kept (see :func:`parse_data_line`).
    """
    synsets: dict[tuple[str, int], Synset] = {}
    for name in POS_FILES.values():
        path = Path(wordnet_dir) / f"data.{name}"
        with path.open(encoding="utf-8", newline=None) as handle:  # newline=None: CRLF files work too
            for line in handle:
                synset = parse_data_line(line.rstrip("\n"), symbols)
                if synset is not None:
                    synsets[synset.key] = synset
    return synsets


def read_exceptions(wordnet_dir: Path) -> dict[str, dict[str, frozenset[str]]]:
    """The ``{pos}.exc`` files: POS → irregular inflected form → its base forms (``went`` → ``go``)."""
    table: dict[str, dict[str, frozenset[str]]] = {}
    for pos, name in POS_FILES.items():
        path = Path(wordnet_dir) / f"{name}.exc"
        entries: dict[str, frozenset[str]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                parts = line.lower().split()
                if len(parts) >= 2 and "_" not in parts[0]:
                    entries[parts[0]] = frozenset(p for p in parts[1:] if "_" not in p)
        table[pos] = entries
    return table


def read_sense_ranks(wordnet_dir: Path) -> dict[tuple[str, tuple[str, int]], int]:
    """``(lemma, synset key) -> sense number`` (0 = most frequent) from the ``index.*`` files.

    Index line (wndb(5WN)): ``lemma pos synset_cnt p_cnt [ptr_symbol]*p_cnt sense_cnt
    tagsense_cnt [synset_offset]*synset_cnt``, the offsets ordered by sense frequency.
    """
    ranks: dict[tuple[str, tuple[str, int]], int] = {}
    for name in POS_FILES.values():
        with (Path(wordnet_dir) / f"index.{name}").open(encoding="utf-8", newline=None) as handle:
            for line in handle:
                if not line or line[0] == " ":
                    continue
                fields = line.split()
                lemma, pos, synset_cnt, p_cnt = (
                    fields[0],
                    _file_pos(fields[1]),
                    int(fields[2]),
                    int(fields[3]),
                )
                offsets = fields[6 + p_cnt : 6 + p_cnt + synset_cnt]
                for rank, offset in enumerate(offsets):
                    ranks[(lemma.lower(), (pos, int(offset)))] = rank
    return ranks


def _single(word: str) -> bool:
    """A single-word lemma (no ``_`` joining several words)."""
    return "_" not in word and bool(word)


def _freeze(table: Mapping[str, set[str]]) -> Mapping[str, frozenset[str]]:
    """An immutable word → frozenset mapping with empty entries dropped."""
    return MappingProxyType({w: frozenset(s) for w, s in table.items() if s})


def _direct_antonyms(synset: Synset, synsets: Mapping[tuple[str, int], Synset]) -> list[tuple[str, str]]:
    """(word of ``synset``, its antonym) for each lexical ``!`` pointer of ``synset``."""
    pairs = []
    for symbol, target_key, source, target in synset.pointers:
        if symbol != "!" or target_key not in synsets:
            continue
        targets = synsets[target_key].words
        for a in synset.words if source == 0 else (synset.words[source - 1],):
            pairs.extend((a, b) for b in (targets if target == 0 else (targets[target - 1],)))
    return pairs


def load_lexicon(
    wordnet_dir: Path, *, indirect_antonyms: bool = True, max_senses: int | None = None
) -> Lexicon:
    """Synonyms, antonyms and parts of speech of every single-word WordNet 3.0 lemma.

    Direct antonyms are WordNet's lexical ``!`` pointers (e.g. ``good`` ↔ ``bad``).  With
    ``indirect_antonyms`` (the "indirect antonyms" of WordNet's adjective clusters, Miller 1995,
    "WordNet: a lexical database for English"), each word of an adjective satellite synset
    (``&`` similar-to its head) is also an antonym of the direct antonyms of the head's words:
    ``terrible`` (similar to ``bad``) ↔ ``good``.

    ``max_senses`` (default: no limit) keeps a synonym pair only when their shared synset is
    among the ``max_senses`` most frequent senses of both words (sense order of the ``index.*``
    files): ``love`` and ``jazz`` share only a rare sense of each and are then not synonyms.
    """
    synsets = read_synsets(wordnet_dir, symbols=("!", "&"))
    ranks = read_sense_ranks(wordnet_dir) if max_senses is not None else {}
    synonyms: dict[str, set[str]] = defaultdict(set)
    antonyms: dict[str, set[str]] = defaultdict(set)
    pos: dict[str, set[str]] = defaultdict(set)

    def add_antonym(a: str, b: str) -> None:
        if _single(a) and _single(b) and a != b:
            antonyms[a].add(b)
            antonyms[b].add(a)

    for synset in synsets.values():
        words = [w for w in dict.fromkeys(synset.words) if _single(w)]
        for word in words:
            pos[word].add(SS_TYPES[synset.ss_type])
        if max_senses is not None:
            words = [w for w in words if ranks.get((w, synset.key), max_senses) < max_senses]
        for word in words:
            synonyms[word].update(w for w in words if w != word)
        for a, b in _direct_antonyms(synset, synsets):
            add_antonym(a, b)
    if indirect_antonyms:
        for synset in synsets.values():
            if synset.ss_type != "s":
                continue
            for symbol, head_key, _, _ in synset.pointers:
                if symbol == "&" and head_key in synsets:
                    # only the antonyms of this head sense, not of every sense of its words
                    opposite = {b for _, b in _direct_antonyms(synsets[head_key], synsets)}
                    for a in synset.words:
                        for b in opposite:
                            add_antonym(a, b)
    return Lexicon(_freeze(synonyms), _freeze(antonyms), _freeze(pos), read_exceptions(wordnet_dir))


def base_forms(word: str, pos: str, lexicon: Lexicon) -> frozenset[str]:
    """WordNet's morphy for one POS: ``word`` itself or its base forms that ``lexicon`` knows as ``pos``.

    Irregular forms come from the exception lists, regular ones from the detachment rules
    (morphy(7WN)): ``movies`` → ``movie`` (noun), ``loved`` → ``love`` (verb), ``better`` →
    ``good`` (adj).
    """
    word = word.lower()
    candidates = {word} | set(lexicon.exceptions.get(pos, {}).get(word, ()))
    for suffix, replacement in _DETACHMENT[pos]:
        if word.endswith(suffix) and len(word) > len(suffix):
            candidates.add(word[: len(word) - len(suffix)] + replacement)
    return frozenset(c for c in candidates if pos in lexicon.pos.get(c, ()))


def pos_table(lexicon: Lexicon, words: Iterable[str]) -> dict[str, frozenset[str]]:
    """Word → parts of speech for ``words``, inflected forms included (via :func:`base_forms`).

    Words with no WordNet part of speech (function words, unknown words) are left out.
    """
    table = {}
    for word in words:
        tags = frozenset(p for p in POS_FILES if base_forms(word, p, lexicon))
        if tags:
            table[word] = tags
    return table
