"""The causal-LM track's flow on a tiny random Llama and a synthetic text file: dense, one-shot, SDS."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from robustprune.checkpoints import read_json
from tests.conftest import FILLER, NEGATIVE, POSITIVE, tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.integration


def _write_lm_project(root: Path) -> Path:
    model_dir = root / "tiny-llama"
    tok = tiny_tokenizer(model_dir)
    tiny_llama().save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rng = random.Random(0)
    words = POSITIVE + NEGATIVE + FILLER
    docs = [" ".join(rng.choice(words) for _ in range(60)) for _ in range(40)]
    text = root / "docs.txt"
    text.write_text("\n\n".join(docs) + "\n")
    params = root / "params-lm.yaml"
    params.write_text(f"""seed: 0
lm:
  model: {model_dir}
  text: {text}
  eval_tokens: 256
  window: 32
  calib_chunks: 8
  calib_len: 32
  calib_seeds: [0, 1]
  methods: [magnitude, sparsegpt]
  sparsities: [0.5, "2:4"]
  block_size: 16
  sds: {{methods: [sparsegpt], sparsities: ["2:4"], steps: 5}}
runtime: {{progress: false, device: cpu}}
""")
    return params


def test_lm_flow_reports_dense_one_shot_and_sds(tmp_path: Path, prefect_harness):
    import flows  # noqa: F401
    from flows.lm import lm_flow

    params = _write_lm_project(tmp_path)
    lm_flow(params_path=str(params), root=str(tmp_path))
    rows = read_json(tmp_path / "reports" / "lm.json")
    stages = [(r["method"], r["sparsity"], r.get("stage"), r.get("seed")) for r in rows]
    assert ("dense", "0", None, None) in stages
    for method in ("magnitude", "sparsegpt"):
        for sp in ("0.5", "2:4"):
            for seed in (0, 1):
                assert (method, sp, "prune", seed) in stages
    for seed in (0, 1):
        assert ("sparsegpt", "2:4", "reactivate", seed) in stages and (
            "sparsegpt",
            "2:4",
            "sds",
            seed,
        ) in stages
    # every number recomputed from what the run saved: the protocol's evaluation tokens, the dense model and
    # each task's saved Linear weights give the recorded perplexity, NLL and sparsity
    import math

    import torch

    from robustprune.checkpoints import load_masks
    from robustprune.lm import load_causal_lm, load_protocol, perplexity
    from robustprune.modeling import measured_sparsity, prunable_linears
    from tasks.lm import load_linears

    model_dir = tmp_path / "tiny-llama"
    eval_ids = {s: load_protocol(tmp_path / "data" / "lm" / f"protocol-s{s}.safetensors")[0] for s in (0, 1)}
    assert eval_ids[0].numel() == 256 and torch.equal(eval_ids[0], eval_ids[1])  # seeds move calibration only
    for r in rows:
        assert r["tokens"] == 8 * 31 and r["ppl"] == pytest.approx(math.exp(r["nll_mean"]), rel=1e-9)
        if r["method"] == "dense":
            net = load_causal_lm(model_dir)
        else:
            net = load_linears(load_causal_lm(model_dir), Path(r["work"]) / "weights.safetensors")
            assert measured_sparsity(net) == pytest.approx(r["measured_sparsity"], abs=1e-12)
        if r.get("stage") in ("prune", "sds"):
            assert r["measured_sparsity"] == pytest.approx(0.5, abs=1e-6)
            masks = load_masks(Path(r["work"]) / "masks.safetensors")
            for name, lin in prunable_linears(net).items():
                assert torch.equal(lin.weight != 0, masks[name.split("layers.", 1)[1]]), (r["name"], name)
        assert perplexity(net, eval_ids[0], window=32).ppl == pytest.approx(r["ppl"], rel=1e-5), r["name"]
    dense = next(r for r in rows if r["method"] == "dense")
    table = (tmp_path / "reports" / "lm.md").read_text()
    assert f"Dense perplexity: {dense['ppl']:.3f}" in table
    png = (tmp_path / "reports" / "plots" / "lm_perplexity.png").read_bytes()
    assert png.startswith(b"\x89PNG") and "| sparsegpt | 2:4 |" in table
    # a second run is all cache hits: same rows, nothing recomputed
    lm_flow(params_path=str(params), root=str(tmp_path))
    assert read_json(tmp_path / "reports" / "lm.json") == rows
