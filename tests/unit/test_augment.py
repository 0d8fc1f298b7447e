"""Input-space augmentation (robustprune.augment): copies drawn from the attacks' own candidate spaces, and the
fine-tuning loop that trains on them. Tiny synthetic resources (tests/unit/test_attacks.py's)."""

from __future__ import annotations

import random

import pytest
import torch

from tests.conftest import synthetic_reviews, tiny_bert, tiny_tokenizer
from tests.unit.test_attacks import resources, ta, tok  # noqa: F401 - fixtures

TEXTS = [
    "the good film is a witty and fresh story",
    "this dull movie is quite bad",
    "a great cast and a fine plot",
]


@pytest.fixture(scope="module")
def mlm(resources):  # noqa: F811
    from robustprune.attacks.bert_attack import load_mlm

    return load_mlm(resources.mlm_dir)


def _augmenter(resources, **settings):  # noqa: ANN001, ANN202, F811
    from robustprune.augment import Augmenter, AugmentSettings

    masked_lm = settings.pop("masked_lm", None)
    return Augmenter(resources, AugmentSettings(**settings), masked_lm=masked_lm)


def _changes(ta, original: str, copy: str) -> list[tuple[int, str, str]]:  # noqa: F811
    a, b = ta.shared.AttackedText(original), ta.shared.AttackedText(copy)
    return [(i, a.words[i], b.words[i]) for i in sorted(a.all_words_diff(b))]


def test_embedding_copies_stay_inside_textfoolers_candidate_space(ta, resources):  # noqa: F811
    """Neighbours among the first N, cosine >= min_cos_sim, part of speech kept (WordNet without a tagger),
    no stop word: with the cosine bar removed (-1) the POS check is what keeps e.g. adjective -> noun out."""
    from robustprune.attacks.components import LexicalPartOfSpeech

    v = resources.vectors
    index = v.index()
    lexical = LexicalPartOfSpeech(resources.pos)
    for min_cos in (0.5, -1.0):
        aug = _augmenter(resources, mix={"embedding": 1.0}, fraction=1.0, min_cos_sim=min_cos, neighbours=4)
        seen = 0
        for epoch in range(6):
            for original, copy in zip(TEXTS, aug.epoch_copies(TEXTS, epoch), strict=True):
                for _, old, new in _changes(ta, original, copy):
                    seen += 1
                    assert old.lower() not in resources.stopwords
                    i, j = index[old.lower()], index[new.lower()]
                    assert j in v.neighbours[i][:4].tolist()
                    assert float(v.matrix[i] @ v.matrix[j]) >= min_cos - 1e-6
                    assert lexical.compatible(old, new), (old, new)
        assert seen > 0


def test_embedding_copies_keep_the_part_of_speech(ta, resources):  # noqa: F811
    """'movie' (a noun) is as close to 'witty' (an adjective) as 'great' is: only 'great' may replace it."""
    import dataclasses

    from tests.unit.test_attacks import WORDS, synthetic_vectors

    close = dataclasses.replace(
        resources, vectors=synthetic_vectors(WORDS, {"witty": "great", "great": "movie"})
    )
    v = close.vectors
    assert v.words[v.neighbours[v.index()["witty"]][1]] in {"great", "movie"}  # both are near neighbours
    aug = _augmenter(close, mix={"embedding": 1.0}, fraction=1.0)
    replacements = {
        new for e in range(10) for _, old, new in aug.perturb("witty", "embedding", random.Random(e))[1]
    }
    assert replacements == {"great"}


def test_embedding_copies_use_the_contextual_tagger_when_given(ta, resources):  # noqa: F811
    """With a tagger, a swap passes only when the word and its replacement get compatible tags in
    textattack's window (here a fake tagger that calls every 'great' a NOUN and everything else ADJ)."""
    from robustprune.attacks.tagger import ContextTagger
    from robustprune.augment import Augmenter, AugmentSettings

    def backend(windows):
        return [["NN" if w == "great" else "JJ" for w in words] for words in windows]

    tagger = ContextTagger(backend, name="fake")
    aug = Augmenter(
        resources, AugmentSettings(mix={"embedding": 1.0}, fraction=1.0, min_cos_sim=-1.0), tagger=tagger
    )
    made = [c for e in range(8) for c in aug.epoch_copies(["the witty film"], e)]
    new_words = {new for c in made for _, _, new in _changes(ta, "the witty film", c)}
    assert new_words and "great" not in new_words
    assert tagger.stats.tagged > 0


def test_char_copies_are_textbuggers_bugs(ta, resources):  # noqa: F811
    """Each changed word is one of TextBugger's bugs for it (the recipe's seeded character bugs, look-alikes,
    5 nearest neighbours); round(fraction x words) words change when enough have candidates."""
    from robustprune.attacks.textbugger import CHAR_BUGS, char_bug, lookalike_bugs

    aug = _augmenter(resources, mix={"char": 1.0}, fraction=0.5)
    v = resources.vectors
    for seed in range(4):
        for original in TEXTS:
            copy, changes = aug.perturb(original, "char", random.Random(seed))
            words = ta.shared.AttackedText(original).words
            assert len(changes) == round(0.5 * len(words))
            expected = ta.shared.AttackedText(original).replace_words_at_indices(
                [i for i, _, _ in changes], [new for _, _, new in changes]
            )
            assert copy == expected.text
            for i, old, new in changes:
                allowed = {char_bug(old, k, random.Random(f"0|{k}|{old}")) for k in CHAR_BUGS}
                allowed |= set(lookalike_bugs(old, resources.lookalikes))
                allowed |= {v.words[j] for j in v.neighbours[v.index()[old.lower()]][:5]}
                assert words[i] == old and old.lower() not in resources.stopwords
                assert new in allowed, (old, new)


def test_mlm_candidates_are_bert_attacks_own(ta, resources, mlm):  # noqa: F811
    """The batched table gives exactly the recipe's BertAttackMaskedLMSwap candidates, word by word."""
    from robustprune.attacks.bert_attack import BertAttackMaskedLMSwap

    aug = _augmenter(resources, mix={"mlm": 1.0}, masked_lm=mlm, mlm_candidates=12)
    swap = BertAttackMaskedLMSwap(*mlm, max_candidates=12)
    aug.prepare_mlm(TEXTS)
    for text in TEXTS:
        at = ta.shared.AttackedText(text)
        ref: dict[int, list[str]] = {}
        for t in swap._get_transformations(at, range(len(at.words))):
            i = next(iter(t.attack_attrs["newly_modified_indices"]))
            ref.setdefault(i, []).append(t.words[i])
        for i in range(len(at.words)):
            mine = [at.replace_word_at_index(i, w).words[i] for w in aug.mlm_candidates(text, at.words, i)]
            assert mine == ref.get(i, []), (text, i)


def test_mlm_copies_change_at_most_40_percent_and_no_stop_word(ta, resources, mlm):  # noqa: F811
    aug = _augmenter(resources, mix={"mlm": 1.0}, masked_lm=mlm, fraction=1.0)
    for original, copy in zip(TEXTS, aug.epoch_copies(TEXTS, 0), strict=True):
        changes = _changes(ta, original, copy)
        assert 0 < len(changes) <= max(1, int(0.4 * len(ta.shared.AttackedText(original).words)))
        assert all(old.lower() not in resources.stopwords for _, old, _ in changes)


def test_copies_are_seeded_fresh_each_epoch_and_follow_the_mix(resources, mlm):  # noqa: F811
    a = _augmenter(resources, masked_lm=mlm, copies=2, seed=3)
    b = _augmenter(resources, masked_lm=mlm, copies=2, seed=3)
    texts = TEXTS * 20
    first = a.epoch_copies(texts, 0)
    assert len(first) == 2 * len(texts)
    assert first == b.epoch_copies(texts, 0)  # a pure function of (seed, epoch, index, copy)
    assert first != a.epoch_copies(texts, 1)
    assert first != _augmenter(resources, masked_lm=mlm, copies=2, seed=4).epoch_copies(texts, 0)
    kinds = a.stats.copies
    assert set(kinds) == {"embedding", "mlm", "char"} and min(kinds.values()) > 0.2 * sum(kinds.values()) / 3
    only_char = _augmenter(resources, mix={"char": 1.0, "embedding": 0.0})
    only_char.epoch_copies(texts, 0)
    assert set(only_char.stats.copies) == {"char"}


def test_settings_reject_nonsense(resources):  # noqa: F811
    from robustprune.augment import AugmentSettings

    with pytest.raises(ValueError, match="unknown kind"):
        AugmentSettings(mix={"synonym": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        AugmentSettings(mix={"char": 0.0})
    with pytest.raises(ValueError, match="masked language model"):
        _augmenter(resources, mix={"mlm": 1.0})


class _Copies:
    """An augmenter stand-in that records the epochs asked for and returns marked copies."""

    def __init__(self, texts: list[str], copies: int):
        self.texts, self.copies, self.epochs = texts, copies, []

    def __call__(self, epoch: int) -> list[str]:
        self.epochs.append(epoch)
        return [f"{t} film" for _ in range(self.copies) for t in self.texts]


def test_finetune_trains_on_each_epochs_copies(tmp_path):
    from robustprune.finetune import FinetuneSettings, finetune

    tok = tiny_tokenizer(tmp_path / "tok")  # noqa: F811
    rows = synthetic_reviews(40)
    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    seen: list[str] = []
    real_call = type(tok).__call__

    def spy(self, batch, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.extend(batch)
        return real_call(self, batch, *args, **kwargs)

    copies = _Copies(texts, copies=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(tok), "__call__", spy)
        res = finetune(
            tiny_bert(),
            tok,
            texts,
            labels,
            FinetuneSettings(learning_rate=1e-3, epochs=2, batch_size=16),
            progress=False,
            augmenter=copies,
        )
    assert res.steps == 2 * 8  # ceil(40 * 3 / 16) = 8 steps an epoch
    assert copies.epochs == [0, 1]
    assert len(seen) == 2 * 3 * 40  # every text and both its copies once an epoch
    assert sum(t.endswith(" film") for t in seen) >= 2 * 2 * 40
    assert torch.isfinite(torch.tensor(res.losses)).all()
