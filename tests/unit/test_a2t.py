"""A2T attack-in-the-loop training (robustprune.a2t) through textattack's Trainer, on a tiny BERT with the
synthetic attack resources of tests/unit/test_attacks.py."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import synthetic_reviews, tiny_bert, tiny_bert_config
from tests.unit.test_attacks import bow_encoder, resources, ta, tok  # noqa: F401 - fixtures


def _attack_bundle(resources, bundle, *, mlm: bool = False) -> None:  # noqa: ANN001, F811
    """``models/attack`` as the attack_resources stage writes it, from the shared test resources."""
    import shutil

    from robustprune.attacks.bundle import save_bundle

    bundle.mkdir(parents=True)
    shutil.copytree(resources.encoder_dir, bundle / "encoder")
    if mlm:
        shutil.copytree(resources.mlm_dir, bundle / "mlm")
    save_bundle(
        bundle,
        vectors=resources.vectors,
        pos=resources.pos,
        stopwords=resources.stopwords,
        lookalikes=resources.lookalikes,
        info={},
    )


def test_get_grad_is_the_embedding_gradient_and_leaves_the_model_alone(ta, tok):  # noqa: F811
    from robustprune.a2t import GradientClassifierWrapper

    model = tiny_bert().train()
    wrapper = GradientClassifierWrapper(model, tok, max_length=16)
    model.train()
    out = wrapper.get_grad("the good film is a witty story")
    assert model.training  # restored
    assert all(p.grad is None for p in model.parameters())  # no parameter gradient touched
    enc = tok(["the good film is a witty story"], return_tensors="pt")
    model.eval()
    emb = model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_()
    logits = model(inputs_embeds=emb, attention_mask=enc["attention_mask"]).logits
    torch.nn.functional.cross_entropy(logits, logits.argmax(-1)).backward()
    assert torch.equal(out["ids"], enc["input_ids"])
    torch.testing.assert_close(torch.from_numpy(out["gradient"]), emb.grad[0])


def test_attack_has_a2ts_components(ta, tok, resources, bow_encoder):  # noqa: F811
    from robustprune.a2t import GradientClassifierWrapper, build_attack

    attack = build_attack(GradientClassifierWrapper(tiny_bert(), tok), resources, encoder=bow_encoder)
    names = {type(c).__name__: c for c in attack.constraints + attack.pre_transformation_constraints}
    assert names["MaxModificationRate"].max_rate == 0.1 and names["MaxModificationRate"].min_threshold == 4
    assert names["WordEmbeddingDistance"].min_cos_sim == 0.8
    assert names["EncoderSimilarity"].threshold == 0.9
    assert names["LexicalPartOfSpeech"].allow_verb_noun_swap is False  # no tagger in these resources
    assert attack.search_method.wir_method == "gradient"
    assert attack.transformation.max_candidates == 20


def _sensitive_bert():
    """A one-layer BERT initialised wide (std 1): its predictions differ between texts and flip under word
    swaps (the 0.02 default gives one prediction for every text: nothing to attack)."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(num_hidden_layers=1, initializer_range=1.0)).eval()


def test_a2t_trains_on_successful_adversarial_texts(ta, tok, resources, bow_encoder, tmp_path):  # noqa: F811
    """One clean epoch, then an attack epoch whose successful adversarial texts (as many as asked) are added;
    the ingredient keeps the plain classifier's format (same keys and shapes) and its head init."""
    from robustprune.a2t import A2TSettings, a2t_finetune
    from robustprune.finetune import FinetuneSettings

    # texts whose sentiment word has neighbours in the synthetic vectors (good ~ fine, bad, witty ...)
    nouns = ["film", "movie", "story", "plot"]
    rows = [(f"the {nouns[i % 4]} is {'good' if i % 2 else 'bad'}", i % 2) for i in range(32)]
    val = synthetic_reviews(8, seed=1)
    model = _sensitive_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = FinetuneSettings(learning_rate=1e-5, epochs=2, batch_size=8, seed=0, max_length=32)
    res = a2t_finetune(
        model,
        tok,
        [t for t, _ in rows],
        [y for _, y in rows],
        settings,
        A2TSettings(num_train_adv_examples=3, num_clean_epochs=1),
        resources,
        eval_texts=[t for t, _ in val],
        eval_labels=[y for _, y in val],
        encoder=bow_encoder,
        attack_options={"min_cos_sim": -1.0, "sim_threshold": -1.0},  # tiny vocabulary: let it succeed
        work_dir=tmp_path / "a2t",
    )
    adversarial = [e["adversarial_examples"] for e in res.epochs if "adversarial_examples" in e]
    assert adversarial == [3]
    assert len(res.losses) == 4 + 5  # ceil(32 / 8) clean steps, ceil((32 + 3) / 8) adversarial steps
    assert sum("validation_accuracy" in e for e in res.epochs) == 2
    after = model.state_dict()
    assert list(after) == list(before) and all(after[k].shape == before[k].shape for k in after)
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])
    assert tok.model_max_length != 32  # the tokenizer's own limit is restored


def test_a2t_refuses_what_textattacks_trainer_cannot_do(ta, tok, resources):  # noqa: F811
    from robustprune.a2t import A2TSettings, a2t_finetune
    from robustprune.finetune import FinetuneSettings

    for bad in (
        FinetuneSettings(learning_rate=1e-3, epochs=1.5),
        FinetuneSettings(learning_rate=1e-3, optimizer="sgd"),
    ):
        with pytest.raises(ValueError, match="textattack"):
            a2t_finetune(
                tiny_bert(), tok, ["a"], [0], bad, A2TSettings(), resources, eval_texts=["a"], eval_labels=[0]
            )


def test_soup_can_rank_with_the_a2t_proxy_through_the_attack_shard_task(ta, tok, resources, tmp_path):  # noqa: F811
    """soup.attack.recipe: a2t runs A2T's attack in tasks.attack.attack_shard (gradient wrapper, no logit
    cache) on validation rows; its cache key has one more part (the a2t code), the other recipes' keys none."""
    import pandas as pd

    from robustprune.config import parse_params
    from robustprune.data import Splits, save_splits
    from tasks.attack import _shard_key, attack_shard
    from tasks.common import Layout

    layout = Layout(tmp_path)
    nouns = ["film", "movie", "story", "plot"]
    frame = pd.DataFrame(
        {
            "text": [f"the {nouns[i % 4]} is {'good' if i % 2 else 'bad'}" for i in range(8)],
            "label": [0, 1] * 4,
        }
    )
    save_splits(Splits(frame, frame, frame, ("neg", "pos")), layout.data)
    _attack_bundle(resources, tmp_path / "models" / "attack")
    model_dir = tmp_path / "victim"
    _sensitive_bert().save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    params = parse_params({"soup": {"attack": {"recipe": "a2t"}}, "runtime": {"device": "cpu"}})
    model = {"name": "victim", "path": str(model_dir)}
    out = attack_shard.fn(params, layout, model, "a2t", [0, 1, 2, 3], split="validation", query_budget=None)
    assert [r["test_row"] for r in out["records"]] == [0, 1, 2, 3]
    assert {r["outcome"] for r in out["records"]} <= {"succeeded", "failed", "skipped"}
    # attacked through gradient word importance (a wrapper without get_grad raises NotImplementedError)
    assert any(r["outcome"] != "skipped" and r["num_queries"] > 0 for r in out["records"])
    keys = {
        r: _shard_key(None, {"params": params, "layout": layout, "model": model, "recipe": r, "rows": [0, 1]})
        for r in ("textfooler", "a2t")
    }
    assert len(keys["a2t"].split("-")) == len(keys["textfooler"].split("-")) + 1


def test_a2t_is_a_soup_recipe_but_not_an_attack_stage_recipe():
    from robustprune.config import ConfigError, parse_params

    assert (
        parse_params({"soup": {"attack": {"recipe": "a2t", "num_examples": 100}}}).soup.attack.recipe == "a2t"
    )
    with pytest.raises(ConfigError, match="attack.recipes"):
        parse_params({"attack": {"recipes": ["a2t"]}})


def _tiny_layout(tmp_path, tok, resources):  # noqa: ANN001, ANN202, F811
    """A project root with prepared data, a base encoder and an attack bundle (with its MLM)."""
    import pandas as pd

    from robustprune.data import Splits, save_splits
    from tasks.common import Layout

    layout = Layout(tmp_path)
    nouns = ["film", "movie", "story", "plot"]
    frame = pd.DataFrame(
        {
            "text": [f"the {nouns[i % 4]} is {'good' if i % 2 else 'bad'}" for i in range(16)],
            "label": [0, 1] * 8,
        }
    )
    save_splits(Splits(frame, frame.iloc[:8], frame.iloc[:8], ("neg", "pos")), layout.data)
    tiny_bert().bert.save_pretrained(layout.base_model)
    tok.save_pretrained(layout.base_model)
    _attack_bundle(resources, tmp_path / "models" / "attack", mlm=True)
    return layout


@pytest.mark.parametrize("kind", ["augment", "a2t"])
def test_finetune_task_trains_augment_and_a2t_ingredients(ta, tok, resources, tmp_path, kind):  # noqa: F811
    """tasks.finetune: an augment or a2t variant trains from models/attack, comes out in the plain
    ingredients' format (same keys, shapes, seeded head init) with its costs and its kind's record; its cache
    key follows the attack bundle, a plain variant's does not."""
    from robustprune.checkpoints import load_tensors
    from robustprune.config import parse_params
    from tasks.finetune import finetune_variant, variant_key

    layout = _tiny_layout(tmp_path, tok, resources)
    extra = {"augment": {"fraction": 0.5}} if kind == "augment" else {"a2t": {"num_train_adv_examples": 2}}
    variants = [
        {"name": "plain", "learning_rate": 1e-3, "epochs": 1, "seed": 0},
        {"name": kind, "learning_rate": 1e-3, "epochs": 2, "seed": 0, **extra},
    ]
    params = parse_params(
        {
            "finetune": {"batch_size": 8, "variants": variants},
            "data": {"max_length": 16},
            "runtime": {"device": "cpu", "progress": False},
        }
    )
    plain, special = params.finetune.variants
    m_plain = finetune_variant.fn(params, layout, plain)
    m = finetune_variant.fn(params, layout, special)
    assert m["train_seconds"] > 0 and m["seconds_per_step"] > 0 and m["steps"] > 0
    # the variant's settings stay in its metrics beside the run's statistics (the report describes the recipe)
    assert m[kind] == special.model_dump()[kind]
    if kind == "augment":
        assert m["augment"]["fraction"] == 0.5
        assert (
            m["steps"] == 2 * 4 and sum(m["augment_stats"]["copies"].values()) == 2 * 16
        )  # 32 texts an epoch
    else:
        assert m["a2t"]["num_train_adv_examples"] == 2
        assert [e for e in m["a2t_stats"]["epochs"] if "adversarial_examples" in e]  # the attack epoch ran
    a = load_tensors(layout.finetuned / "plain" / "model.safetensors")
    b = load_tensors(layout.finetuned / kind / "model.safetensors")
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert m_plain["cache_key"] == variant_key(params, layout, plain)
    before = variant_key(params, layout, special), variant_key(params, layout, plain)
    (layout.root / "models" / "attack" / "info.json").write_text('{"changed": true}')
    after = variant_key(params, layout, special), variant_key(params, layout, plain)
    assert before[0] != after[0] and before[1] == after[1]
