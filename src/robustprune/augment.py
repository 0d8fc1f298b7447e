"""Input-space adversarial augmentation: perturbed copies of the training texts drawn from the attacks' own
candidate spaces, with no query to the model being trained.

Every epoch each training text gets ``copies`` perturbed copies (same label). A copy comes from one of three
candidate spaces, chosen per copy with the weights of ``mix``; in it a share ``fraction`` of the text's words
(at least one) is replaced, each at a distinct position drawn uniformly among the words that have a
candidate, by a candidate drawn uniformly. The spaces are the recipes' own (``robustprune.attacks``), built
from the same bundle (``models/attack``) and the same textattack components:

* ``embedding`` — TextFooler (Jin et al. 2020, Sec. 3.1 step 2; :mod:`robustprune.attacks.textfooler`): the
  ``neighbours`` (50) nearest counter-fitted neighbours (``OneWordEmbeddingSwap``), cosine >= ``min_cos_sim``
  (0.5, ``WordEmbeddingDistance``), no stop word, and the same part of speech tagged in context (textattack's
  window, nouns and verbs interchangeable: :class:`~robustprune.attacks.components.ContextualPartOfSpeech`'s
  rule; WordNet's lexical categories without a tagger);
* ``mlm`` — BERT-Attack (Li et al. 2020, Sec. 3.2; :mod:`robustprune.attacks.bert_attack`): the masked LM's
  top ``mlm_candidates`` (48) words at the word's position in the unmasked sentence (the recipe's own
  ``BertAttackMaskedLMSwap``, sub-word combinations included), no stop word, at most 40% of the words;
* ``char`` — TextBugger (Li et al. 2019, Sec. III-B; :mod:`robustprune.attacks.textbugger`): the recipe's
  bugs for the word — insert a space, delete, swap adjacent characters (at the recipe's seeded position),
  each look-alike substitution, and the 5 nearest embedding neighbours — no stop word.

What the attacks have and the copies do not: the search (no word-importance ranking, no victim query: the
positions are random) and the sentence-encoder similarity checks (TextFooler's windowed USE stand-in,
BERT-Attack's 0.2 and TextBugger's 0.8 cosine), which a random copy changing ``fraction`` of the words with
these candidates rarely fails and which would cost an encoder forward per copy. Copies are a pure function of
(``seed``, epoch, text index, copy number), so a rerun and another process draw the same ones.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from robustprune.attacks.bert_attack import BertAttackMaskedLMSwap, best_combinations
from robustprune.attacks.components import (
    LexicalPartOfSpeech,
    OneWordEmbeddingSwap,
    can_replace_pos,
    is_one_word,
    pos_context,
    word_embedding,
    words_from_text,
)
from robustprune.attacks.tagger import ContextTagger
from robustprune.attacks.textattack_env import import_textattack
from robustprune.attacks.textbugger import CHAR_BUGS, char_bug, lookalike_bugs
from robustprune.attacks.types import AttackResources
from robustprune.interrupt import raise_if_stopped

KINDS = ("embedding", "mlm", "char")
check_if_subword = import_textattack().shared.utils.check_if_subword
BERT_ATTACK_MAX_PERCENT = 0.4  # BERT-Attack's epsilon: at most 40% of the words perturbed


@dataclass(frozen=True)
class AugmentSettings:
    """How many copies a text gets each epoch, how much of it changes, and from which candidate spaces."""

    copies: int = 1
    fraction: float = 0.2
    mix: Mapping[str, float] = field(default_factory=lambda: {"embedding": 1.0, "mlm": 1.0, "char": 1.0})
    neighbours: int = 50
    min_cos_sim: float = 0.5
    mlm_candidates: int = 48
    char_seed: int = 0  # TextBugger's seed for the positions of its character bugs (attack.textbugger's 0)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(KINDS))
        if unknown:
            raise ValueError(f"augment mix: unknown kind(s) {unknown}; known: {list(KINDS)}")
        if any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ValueError(f"augment mix weights must be >= 0 with a positive sum, got {dict(self.mix)}")
        if self.copies < 1 or not 0 < self.fraction <= 1:
            raise ValueError(
                f"augment needs copies >= 1 and 0 < fraction <= 1, got {self.copies}, {self.fraction}"
            )


@dataclass
class AugmentStats:
    """Running totals: copies made per kind, words changed, copies left unchanged, seconds spent."""

    copies: Counter = field(default_factory=Counter)
    words: int = 0
    changed: int = 0
    unchanged: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "copies": dict(self.copies),
            "changed_word_fraction": self.changed / self.words if self.words else 0.0,
            "unchanged_copies": self.unchanged,
            "seconds": self.seconds,
        }


class Augmenter:
    """Draws perturbed copies of texts from the attacks' candidate spaces (module docstring).

    ``tagger``: TextFooler's contextual tagger (None: WordNet's lexical check, as the recipe without one);
    ``masked_lm``: ``(AutoModelForMaskedLM, tokenizer)`` for the ``mlm`` kind (required when its weight is
    positive). Nothing here sees the model being trained.
    """

    def __init__(
        self,
        resources: AttackResources,
        settings: AugmentSettings,
        *,
        tagger: ContextTagger | None = None,
        masked_lm: tuple | None = None,
    ):
        self.settings = settings
        self.stopwords = frozenset(w.lower() for w in resources.stopwords)
        self.kinds = [k for k in KINDS if settings.mix.get(k, 0) > 0]
        self.weights = [settings.mix[k] for k in self.kinds]
        embedding = word_embedding(resources.vectors)
        self._embedding = embedding
        self._tf_swap = OneWordEmbeddingSwap(max_candidates=settings.neighbours, embedding=embedding)
        self._tb_swap = OneWordEmbeddingSwap(max_candidates=5, embedding=embedding)  # TextBugger Sub-W
        self._tagger = tagger
        self._lexical = LexicalPartOfSpeech(resources.pos, allow_verb_noun_swap=True)
        self._lookalikes = resources.lookalikes
        self._mlm = None
        if "mlm" in self.kinds:
            if masked_lm is None:
                raise ValueError("augment mix has mlm > 0 but no masked language model was given")
            model, tokenizer = masked_lm
            self._mlm = BertAttackMaskedLMSwap(model, tokenizer, max_candidates=settings.mlm_candidates)
        self._mlm_words: dict[tuple[str, int], list[str]] = {}
        self._mlm_tables: dict[str, tuple] = {}
        self._attacked_text = import_textattack().shared.AttackedText
        self.stats = AugmentStats()

    # ------------------------------------------------------------------ candidate spaces, one word at a time
    def embedding_candidates(self, words: Sequence[str], i: int) -> list[str]:
        """TextFooler's swaps for word ``i`` before the part-of-speech check (neighbours, cosine)."""
        word = words[i]
        out = []
        for cand in self._tf_swap._get_replacement_words(word):
            try:
                cos = self._embedding.get_cos_sim(word.lower(), cand.lower())
            except KeyError:
                continue
            if cos >= self.settings.min_cos_sim and cand != word:
                out.append(cand)
        return out

    def pos_ok(self, words: Sequence[str], i: int, cands: list[str]) -> list[str]:
        """The candidates that keep word ``i``'s part of speech (TextFooler's check, see module docstring)."""
        if self._tagger is None:
            return [c for c in cands if self._lexical.compatible(words[i], c)]
        ref, pos_ref = pos_context(words, i, words[i])
        windows = [ref] + [pos_context(words, i, c)[0] for c in cands]
        tags = self._tagger.tag_batch(windows)
        return [
            c
            for c, t in zip(cands, tags[1:], strict=True)
            if can_replace_pos(tags[0][pos_ref], t[pos_ref], True)
        ]

    def prepare_mlm(self, texts: Sequence[str], batch_size: int = 32) -> None:
        """Run the masked LM once over every text not seen yet, in length-sorted batches, and keep each token
        position's top ``mlm_candidates`` log-probabilities: all that BERT-Attack's candidate rule reads (the
        unmasked text's logits), so a text's later copies cost no forward."""
        import torch

        model, tok = self._mlm._language_model, self._mlm._lm_tokenizer
        todo = sorted(dict.fromkeys(t for t in texts if t not in self._mlm_tables), key=len)
        device = next(model.parameters()).device
        k = min(self.settings.mlm_candidates, model.config.vocab_size)
        for start in range(0, len(todo), batch_size):
            raise_if_stopped()
            chunk = todo[start : start + batch_size]
            enc = tok(
                chunk, padding=True, truncation=True, max_length=self._mlm.max_length, return_tensors="pt"
            )
            enc = enc.to(device)
            real = enc["attention_mask"].bool()
            with torch.inference_mode():
                hidden = model.base_model(**enc).last_hidden_state[real]  # the head on real tokens only
                top = torch.topk(torch.log_softmax(model.cls(hidden).float(), dim=-1), k, dim=-1)
            values, indices = top.values.cpu(), top.indices.cpu()
            offset = 0
            for row, text in enumerate(chunk):
                n = int(real[row].sum())
                self._mlm_tables[text] = (values[offset : offset + n], indices[offset : offset + n])
                offset += n

    def mlm_candidates(self, text: str, words: Sequence[str], i: int) -> list[str]:
        """BERT-Attack's candidates for word ``i``: ``BertAttackMaskedLMSwap``'s rule (single word piece: the
        top-K tokens at its position; several pieces: the K best combinations of each piece's top 4) read from
        the table :meth:`prepare_mlm` keeps; cached per (text, word)."""
        key = (text, i)
        if key in self._mlm_words:
            return self._mlm_words[key]
        if text not in self._mlm_tables:
            self.prepare_mlm([text])
        values, indices = self._mlm_tables[text]
        swap, tok = self._mlm, self._mlm._lm_tokenizer
        masked = self._attacked_text(text).replace_word_at_index(i, tok.mask_token)
        ids = swap._encode_text(masked.text)["input_ids"][0].tolist()
        out: list[str] = []
        if tok.mask_token_id in ids:
            start = ids.index(tok.mask_token_id)
            n_pieces = len(tok.encode(words[i], add_special_tokens=False))
            positions = list(range(start, min(start + n_pieces, values.shape[0] - 1)))
            special = set(tok.all_special_ids)
            model_type = swap._language_model.config.model_type
            if len(positions) == 1:
                cands = [
                    tok.convert_ids_to_tokens(int(j)) for j in indices[positions[0]] if int(j) not in special
                ]
                cands = [w for w in cands if is_one_word(w) and not check_if_subword(w, model_type, i == 0)]
            elif positions:
                top_v, top_i = (
                    values[positions, : swap.subword_candidates],
                    indices[positions, : swap.subword_candidates],
                )
                cands = []
                for choice, _ in best_combinations(top_v.numpy(), swap.max_candidates):
                    pieces = [int(top_i[p, j]) for p, j in enumerate(choice)]
                    if not special.intersection(pieces):
                        word = "".join(tok.convert_ids_to_tokens(pieces)).replace("##", "")
                        if is_one_word(word):
                            cands.append(word)
            else:
                cands = []
            out = [w.strip("Ġ") for w in cands]
            out = [w for w in out if w != words[i] and is_one_word(w)]
        self._mlm_words[key] = out
        return out

    def char_candidates(self, word: str) -> list[str]:
        """TextBugger's bugs for ``word``: character bugs (the recipe's seeded positions), look-alikes,
        5 nearest embedding neighbours."""
        out = []
        for kind in CHAR_BUGS:
            bugged = char_bug(word, kind, random.Random(f"{self.settings.char_seed}|{kind}|{word}"))
            if bugged is not None and len(words_from_text(bugged)) == (2 if kind == "insert" else 1):
                out.append(bugged)
        out += [c for c in lookalike_bugs(word, self._lookalikes) if is_one_word(c)]
        out += [c for c in self._tb_swap._get_replacement_words(word) if c != word]
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------------ copies
    def _modifiable(self, words: Sequence[str]) -> list[int]:
        return [i for i, w in enumerate(words) if w.lower() not in self.stopwords]

    def _pick(self, kind: str, text: str, words: Sequence[str], i: int, rng: random.Random) -> str | None:
        """A random candidate of ``kind`` for word ``i`` (None when it has none)."""
        if kind == "char":
            cands = self.char_candidates(words[i])
            return rng.choice(cands) if cands else None
        if kind == "mlm":
            cands = self.mlm_candidates(text, words, i)
            return rng.choice(cands) if cands else None
        cands = self.embedding_candidates(words, i)
        rng.shuffle(cands)
        for start in range(0, len(cands), 4):  # tag a few at a time: the first that keeps the POS wins
            ok = self.pos_ok(words, i, cands[start : start + 4])
            if ok:
                return ok[0]
        return None

    def perturb(self, text: str, kind: str, rng: random.Random) -> tuple[str, list[tuple[int, str, str]]]:
        """One copy of ``text`` from ``kind``'s space; returns (copy, [(word index, old word, new word)])."""
        attacked = self._attacked_text(text)
        words = attacked.words
        if not words:
            return text, []
        n = max(1, round(self.settings.fraction * len(words)))
        if kind == "mlm":
            n = min(n, max(1, int(BERT_ATTACK_MAX_PERCENT * len(words))))
        positions = self._modifiable(words)
        rng.shuffle(positions)
        changes: list[tuple[int, str, str]] = []
        for i in positions:
            if len(changes) == n:
                break
            cand = self._pick(kind, text, words, i, rng)
            if cand is not None:
                changes.append((i, words[i], cand))
        if not changes:
            return text, []
        copy = attacked.replace_words_at_indices([i for i, _, _ in changes], [new for _, _, new in changes])
        return copy.text, changes

    def _draw(self, epoch: int, index: int, copy: int) -> tuple[str, random.Random]:
        """The kind of copy ``copy`` of text ``index`` in ``epoch``, and the generator that draws the rest."""
        rng = random.Random(f"{self.settings.seed}|{epoch}|{index}|{copy}")
        return rng.choices(self.kinds, weights=self.weights)[0], rng

    def copy(self, text: str, epoch: int, index: int, copy: int) -> str:
        """Copy number ``copy`` of text ``index`` in ``epoch`` (a pure function of those and the seed)."""
        kind, rng = self._draw(epoch, index, copy)
        t0 = time.perf_counter()
        out, changes = self.perturb(text, kind, rng)
        changed = len(changes)
        self.stats.seconds += time.perf_counter() - t0
        self.stats.copies[kind] += 1
        self.stats.words += len(words_from_text(text))
        self.stats.changed += changed
        self.stats.unchanged += changed == 0
        return out

    def epoch_copies(self, texts: Sequence[str], epoch: int) -> list[str]:
        """``copies`` perturbed copies of every text for ``epoch``, copy-major: ``[c0 of every text, c1 ...]``."""
        plan = [(c, i) for c in range(self.settings.copies) for i in range(len(texts))]
        if self._mlm is not None:  # one batched masked-LM pass over the texts whose copies need it
            t0 = time.perf_counter()
            self.prepare_mlm([texts[i] for c, i in plan if self._draw(epoch, i, c)[0] == "mlm"])
            self.stats.seconds += time.perf_counter() - t0
        out = []
        for c, i in plan:
            raise_if_stopped()
            out.append(self.copy(texts[i], epoch, i, c))
        return out

    def bind(self, texts: Sequence[str]) -> EpochCopies:
        """The fine-tuning loop's view of these ``texts``: ``copies`` and ``(epoch) -> copies``."""
        return EpochCopies(self, list(texts))


@dataclass
class EpochCopies:
    """``augmenter.settings.copies`` copies of ``texts`` per epoch (:func:`robustprune.finetune.finetune`)."""

    augmenter: Augmenter
    texts: list[str]

    @property
    def copies(self) -> int:
        return self.augmenter.settings.copies

    def __call__(self, epoch: int) -> list[str]:
        return self.augmenter.epoch_copies(self.texts, epoch)
