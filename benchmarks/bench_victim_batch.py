"""Victim forward cost per text against batch size: what batching attack queries across examples can save.

The attack's wall time is ~1.02x its *forward floor* (the victim, sentence-encoder and masked-LM forwards for
exactly the queries it made: ``benchmarks/results/attacks.json``, ``wall_over_floor``), so only fewer or
cheaper forwards can make it faster with identical outcomes. Batching candidates across examples (issue #15,
item 3) changes nothing but the batch size of those forwards. This measures, on the real test texts and the
real model, the CPU milliseconds per text of one forward pass at each batch size (texts padded to the
longest of their batch, ``max_length`` 64, as the attack wrapper does), and each size's cost relative to
``--reference`` (the wrapper's batch size). Two orders: the test texts as they come (a batch across examples
mixes lengths, so it pads more) and sorted by length (what a length-bucketing cross-example batcher would get;
also close to one example's candidates, which differ by one word).

    python benchmarks/bench_victim_batch.py                       # models/soup/greedy, 1 thread
    python benchmarks/bench_victim_batch.py --threads 2 --out benchmarks/results/victim_batch_2t.json

Prints a table and writes ``benchmarks/results/victim_batch.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import _common  # noqa: F401,E402 - paths and the offline environment, as every benchmark
from _common import RESULTS, ROOT, provenance, set_threads  # noqa: E402


def cost_per_text(model, tokenizer, texts: list[str], batch: int, max_length: int, repeats: int) -> float:  # noqa: ANN001
    """Median over ``repeats`` of the CPU seconds per text to run ``texts`` through ``model`` in batches."""
    import torch

    chunks = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    encoded = [
        tokenizer(c, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
        for c in chunks
    ]
    n = batch * len(chunks)
    times = []
    with torch.inference_mode():
        model(**encoded[0])  # warm-up
        for _ in range(repeats):
            t0 = time.process_time()
            for enc in encoded:
                model(**enc)
            times.append((time.process_time() - t0) / n)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "soup" / "greedy")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "prepared" / "test.parquet")
    ap.add_argument("--texts", type=int, default=256, help="test texts run at every batch size")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    ap.add_argument("--reference", type=int, default=32, help="the attack wrapper's batch size")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "victim_batch.json")
    args = ap.parse_args(argv)
    if args.reference not in args.batches:
        ap.error(f"--reference {args.reference} must be one of --batches {args.batches}")

    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    threads = set_threads(args.threads)
    texts = pd.read_parquet(args.data)["text"].tolist()[: args.texts]
    if len(texts) < max(args.batches):
        ap.error(f"--texts {len(texts)} is fewer than the largest batch {max(args.batches)}")
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    result = {
        **provenance(argv),
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
    }
    result |= {
        "texts": len(texts),
        "max_length": args.max_length,
        "repeats": args.repeats,
        "threads": threads,
    }
    orders = {"as_given": texts, "by_length": sorted(texts, key=lambda t: len(tokenizer(t)["input_ids"]))}
    result |= {"reference_batch": args.reference, "orders": {}}
    for order, ordered in orders.items():
        rows = []
        for b in args.batches:
            ms = 1000 * cost_per_text(model, tokenizer, ordered, b, args.max_length, args.repeats)
            rows.append({"batch": b, "cpu_ms_per_text": ms})
        ref = next(r["cpu_ms_per_text"] for r in rows if r["batch"] == args.reference)
        for r in rows:
            r["relative_to_reference"] = round(r["cpu_ms_per_text"] / ref, 3)
            r["cpu_ms_per_text"] = round(r["cpu_ms_per_text"], 3)
        result["orders"][order] = {"rows": rows, "best": min(rows, key=lambda r: r["cpu_ms_per_text"])}
    print(f"victim forward, {len(texts)} test texts, {threads} thread(s): CPU ms per text")
    print(f"| batch | as given | vs batch {args.reference} | sorted by length | vs batch {args.reference} |")
    print("|---|---|---|---|---|")
    for a, b in zip(result["orders"]["as_given"]["rows"], result["orders"]["by_length"]["rows"], strict=True):
        print(
            f"| {a['batch']} | {a['cpu_ms_per_text']:.2f} | {a['relative_to_reference']:.2f}x | "
            f"{b['cpu_ms_per_text']:.2f} | {b['relative_to_reference']:.2f}x |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
