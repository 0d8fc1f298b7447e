"""The attack-resources directory (the ``attack_resources`` stage's output) written and read as one bundle.

Layout of ``models/attack/``::

    vectors.npz        counter-fitted word vectors + nearest neighbours (WordVectors)
    pos.json           word -> WordNet parts of speech
    stopwords.txt      one word a line
    lookalikes.json    character -> look-alike characters
    encoder/           sentence encoder (HF directory, mean-pooled) for the similarity constraints
    mlm/               masked LM (HF directory) for BERT-Attack (absent when it is a hub name: see info.json)
    tagger/            spaCy pipeline (en_core_web_sm) for TextFooler's contextual part of speech (absent:
                       the recipes fall back to pos.json, WordNet's lexical categories)
    polarity/          VADER's and AFINN's lexicons and WordNet antonyms (robustprune.attacks.validity): the
                       validity audit and the polarity constraint (absent in bundles built before issue #28)
    info.json          how it was built (sizes, neighbour samples, which MLM; wall times go to MLflow only)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from robustprune.attacks.embeddings import load_word_vectors, save_word_vectors
from robustprune.attacks.types import AttackResources, WordVectors
from robustprune.attacks.validity import ANTONYMS_FILE, load_polarity
from robustprune.checkpoints import read_json, write_json, write_text


def save_bundle(
    directory: Path,
    *,
    vectors: WordVectors,
    pos: Mapping[str, frozenset[str]],
    stopwords: frozenset[str],
    lookalikes: Mapping[str, tuple[str, ...]],
    info: Mapping[str, object],
) -> Path:
    """Write the small files of the bundle into ``directory`` (the caller places encoder/ and mlm/)."""
    directory = Path(directory)
    save_word_vectors(vectors, directory / "vectors.npz")
    write_json(directory / "pos.json", {w: sorted(p) for w, p in sorted(pos.items())})
    write_text(directory / "stopwords.txt", "\n".join(sorted(stopwords)) + "\n")
    write_json(directory / "lookalikes.json", {c: list(v) for c, v in sorted(lookalikes.items())})
    write_json(directory / "info.json", dict(info))
    return directory


def load_bundle(directory: Path) -> AttackResources:
    """Read a bundle written by :func:`save_bundle` (plus encoder/ and mlm/) as AttackResources."""
    directory = Path(directory)
    missing = [
        f
        for f in ("vectors.npz", "pos.json", "stopwords.txt", "lookalikes.json", "encoder")
        if not (directory / f).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"attack resources in {directory} are incomplete (missing {missing}): run the attack_resources stage"
        )
    info = read_json(directory / "info.json") if (directory / "info.json").exists() else {}
    mlm = directory / "mlm" if (directory / "mlm" / "config.json").exists() else info.get("mlm_name")
    tagger = directory / "tagger" if (directory / "tagger" / "config.cfg").is_file() else None
    polarity = directory / "polarity"
    return AttackResources(
        vectors=load_word_vectors(directory / "vectors.npz"),
        pos={w: frozenset(p) for w, p in read_json(directory / "pos.json").items()},
        stopwords=frozenset((directory / "stopwords.txt").read_text().split()),
        lookalikes={c: tuple(v) for c, v in read_json(directory / "lookalikes.json").items()},
        encoder_dir=directory / "encoder",
        mlm_dir=Path(mlm)
        if mlm
        else None,  # a hub name travels as a Path; from_pretrained(str(...)) takes it
        tagger_dir=tagger,
        extra={"mlm_name": str(mlm)} if mlm else {},
        polarity=load_polarity(polarity) if (polarity / ANTONYMS_FILE).is_file() else None,
    )


def describe(directory: Path) -> str:
    """One line for logs: vocabulary size, neighbours, MLM, tagger."""
    info = read_json(Path(directory) / "info.json")
    return json.dumps({k: info.get(k) for k in ("vocab_size", "neighbours", "mlm", "tagger")})
