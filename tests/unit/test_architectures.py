"""Every architecture the README lists goes through the pruning driver: a tiny random model of each family.

RoBERTa, XLM-R, ELECTRA and MPNet sequence classifiers, Mistral, Qwen2 and Qwen3 causal LMs (BERT and Llama
are covered by test_sequential.py): RAKP at 2:4 with the adaptive α judged by the model's output (so the
head is found too) prunes every Linear of every block to exactly 2 of 4, leaves everything else alone,
and the model still computes finite outputs; the classifiers' head refit changes only the head.
"""

from __future__ import annotations

import pytest
import torch

from robustprune.modeling import find_blocks, head_linears, measured_sparsity, prunable_linears
from robustprune.pruning import Pattern
from robustprune.pruning.sequential import PruneOptions, RakpOptions, prune_model

ENCODER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
DECODER = {**ENCODER, "num_key_value_heads": 2, "head_dim": 8}


def _classifier(family: str) -> torch.nn.Module:
    import transformers as tf

    config, model = {
        "roberta": (tf.RobertaConfig, tf.RobertaForSequenceClassification),
        "xlm-roberta": (tf.XLMRobertaConfig, tf.XLMRobertaForSequenceClassification),
        "electra": (tf.ElectraConfig, tf.ElectraForSequenceClassification),
        "mpnet": (tf.MPNetConfig, tf.MPNetForSequenceClassification),
    }[family]
    extra = {"embedding_size": 32} if family == "electra" else {}
    torch.manual_seed(0)
    cfg = config(vocab_size=99, max_position_embeddings=70, num_labels=2, pad_token_id=1, **ENCODER, **extra)
    return model(cfg).eval()


def _causal_lm(family: str) -> torch.nn.Module:
    import transformers as tf

    config, model = {
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
    }[family]
    torch.manual_seed(0)
    return model(config(vocab_size=99, max_position_embeddings=64, **DECODER)).eval()


def _batches(with_mask: bool) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for width in (12, 9, 12, 10):
        ids = torch.randint(5, 99, (3, width), generator=g)
        batch = {"input_ids": ids}
        if with_mask:
            mask = torch.ones_like(ids)
            mask[2, width - 3 :] = 0
            ids[mask == 0] = 1
            batch["attention_mask"] = mask
        out.append(batch)
    return out


OPTS = PruneOptions(
    method="rakp",
    pattern=Pattern(sparsity=0.5, n=2, m=4),
    block_size=16,
    rakp=RakpOptions(alpha=None, alpha_grid=(0.0, 0.5), alpha_criterion="output", output_stride=2),
)


def _check_pruned(model: torch.nn.Module, before: dict[str, torch.Tensor], out, per_block: int) -> None:  # noqa: ANN001
    linears = prunable_linears(model)
    assert len(linears) == 2 * per_block  # q, k, v, o + 2 MLP Linears (encoder) or 3 (gated decoder)
    assert len(out.masks) == len(linears) and len(out.blocks) == len(find_blocks(model)) == 2
    for name, lin in linears.items():
        kept = (lin.weight != 0).reshape(lin.weight.shape[0], -1, 4).sum(-1)
        assert bool((kept == 2).all()), name
    assert measured_sparsity(model) == pytest.approx(0.5)
    pruned = {f"{n}.weight" for n in linears}
    for key, value in model.state_dict().items():
        if key not in pruned:
            assert torch.equal(value, before[key]), key
    assert all(rep.alpha in (0.0, 0.5) and set(rep.alpha_errors) == {0.0, 0.5} for rep in out.blocks)


def _prune_checked(model, batches, *, per_block: int) -> None:  # noqa: ANN001
    """Prune ``model`` in place through the driver and check it (:func:`_check_pruned`)."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _check_pruned(model, before, prune_model(model, batches, OPTS), per_block=per_block)


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "electra", "mpnet"])
def test_encoder_classifiers_through_the_driver(family: str) -> None:
    model, batches = _classifier(family), _batches(with_mask=True)
    _prune_checked(model, batches, per_block=6)
    with torch.no_grad():
        assert torch.isfinite(model(**batches[0]).logits).all()
    # the head refit: only the head's weights change, and its output error on the calibration texts drops
    heads = head_linears(model)
    assert list(heads) == ["classifier.dense", "classifier.out_proj"]
    refit = _classifier(family)
    ref_state = {k: v.clone() for k, v in refit.state_dict().items()}
    rakp = RakpOptions(**{**OPTS.rakp.__dict__, "alpha": 1.0, "refit_head": True})
    again = prune_model(refit, batches, PruneOptions(**{**OPTS.__dict__, "rakp": rakp}))
    changed = {k for k, v in refit.state_dict().items() if not torch.equal(v, ref_state[k])}
    assert {k for k in changed if k.startswith("classifier.")} <= {f"{n}.weight" for n in heads}
    assert again.head is not None and again.head.rows == sum(b["input_ids"].shape[0] for b in batches)
    assert again.head.error_after < again.head.error_before


@pytest.mark.parametrize("family", ["mistral", "qwen2", "qwen3"])
def test_causal_lms_through_the_driver(family: str) -> None:
    model, batches = _causal_lm(family), _batches(with_mask=False)
    _prune_checked(model, batches, per_block=7)
    with torch.no_grad():
        assert torch.isfinite(model(batches[0]["input_ids"]).logits).all()
