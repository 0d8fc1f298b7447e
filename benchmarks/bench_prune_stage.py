"""The prune stage's per-block tasks, old against new, alternated in one run: wall-time ratio, same masks.

"old" is ``tasks/prune.py`` as it was at ``--old-rev`` (every block task reloads the source model, puts
every finished block's weights back in and re-runs the embeddings to rebuild the block call's extras;
finalize does it all again); "new" is the checkout's ``tasks/prune.py`` (inputs and extras carried between
the tasks, on disk and in memory: each block is computed once). Both run the stage's own task functions in
the same order as ``flows/prune.py`` (set-up, one task per block, finalize; Prefect's task machinery left
out, the same for both) in a scratch project under ``--work``, on the same library code, and the script
asserts that both give the same masks and weights for every branch.

- ``--params params.yaml``: the encoder default (the greedy soup, ``data/calibration``, ``prune.*``);
  needs ``make run``'s soup and calibration set.
- ``--params params-lm.yaml``: SmolLM2-135M through the same tasks with the ``lm`` profile's options and
  calibration chunks (converted once from its wheel into ``--work``, or ``models/lm/dense`` when present).

Prints a table and writes ``--out`` (default ``benchmarks/results/prune_stage_<encoder|lm>.json``).

    nice -n 10 .venv/bin/python benchmarks/bench_prune_stage.py --params params.yaml --rounds 2
    nice -n 10 .venv/bin/python benchmarks/bench_prune_stage.py --params params-lm.yaml --combos sparsegpt@2:4
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import _common  # noqa: F401 - sets sys.path and the offline environment first
from _common import RESOURCES, RESULTS, ROOT, provenance, set_threads

from robustprune.checkpoints import load_masks, read_json, save_tensors, write_json
from robustprune.config import load_params, sparsity_label
from robustprune.options import prune_options
from robustprune.pruning.branch import close_branch
from tasks import prune as new_prune
from tasks.common import Layout, combo_name, label_names

DEFAULT_OLD_REV = "b158ac4~1"  # the parent of the commit that carried inputs and extras between tasks


def load_old(rev: str, work: Path) -> ModuleType:
    """``tasks/prune.py`` at ``rev`` as a module of its own (it imports today's library)."""
    src = subprocess.run(
        ["git", "show", f"{rev}:tasks/prune.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = work / "old_prune.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("tasks_prune_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a module-level dataclass looks its module up while the class is made
    spec.loader.exec_module(module)
    return module


def converted_lm(directory: Path) -> bool:
    """A converted SmolLM2 whose config names its architecture. One converted before ``convert_gguf``
    recorded ``architectures`` is read by the stage's ``Source.of`` as a classifier, which adds a random
    ``score`` head (the whole weights file then differs from run to run)."""
    config = directory / "config.json"
    return (directory / "model.safetensors").is_file() and bool(
        config.is_file() and read_json(config).get("architectures")
    )


def lm_source(params, work: Path) -> tuple[Path, list[dict]]:  # noqa: ANN001
    """SmolLM2 as a Hugging Face directory and the lm profile's calibration batches (first calib seed)."""
    from robustprune.lm import convert_gguf, load_protocol, protocol_file
    from robustprune.resources import download, extract

    lm = params.lm
    model = ROOT / "models" / "lm" / "dense"
    if lm.model != "smollm2":
        model = Path(lm.model)
    elif not converted_lm(model):
        model = work / "smollm2-hf"
        if not converted_lm(model):
            download("smollm2")
            convert_gguf(extract("smollm2", RESOURCES / "smollm2"), model)
    protocol = protocol_file(lm, model, RESOURCES, work, seed=params.seed, calib_seed=lm.calib_seeds[0])
    _, calib = load_protocol(protocol, lm.calib_batch_size)
    return model, calib


def source_labels(source: Path) -> list[str]:
    """The label names the source's config carries, in id order (finalize writes them back unchanged)."""
    from transformers import AutoConfig

    id2label = AutoConfig.from_pretrained(str(source)).id2label
    return [str(id2label[i]) for i in sorted(id2label)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def pruned_weights_digest(path: Path, masked: list[str]) -> str:
    """Hash of the pruned matrices alone (the Linears that have a mask), by name and bytes.

    The whole file also holds what the pruning tasks do not prune, such as RAKP's refitted pooler and
    classifier (``prune.rakp.refit_head``), which ``--old-rev`` predates: comparing those would only say that
    the old code had no head refit."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    h = hashlib.sha256()
    for name in sorted(masked):  # mask names are relative to the block list: match the tensor by suffix
        (key,) = [k for k in tensors if k == f"{name}.weight" or k.endswith(f".{name}.weight")]
        h.update(key.encode())
        h.update(tensors[key].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tensor_digests(path: Path) -> dict[str, str]:
    """Every tensor of a weights file by name: dtype, shape and bytes hashed (to name what differs)."""
    import torch
    from safetensors.torch import load_file

    out = {}
    for name, t in sorted(load_file(str(path)).items()):
        h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())  # any dtype, as raw bytes
        out[name] = h.hexdigest()[:12]
    return out


def run_stage(
    module: ModuleType,
    params,  # noqa: ANN001
    layout: Layout,
    combos: list[tuple[str, str]],
    labels: list[str],
) -> dict:
    """The prune flow's task sequence for every combination, from scratch; seconds and result digests.
    ``labels``: the label names finalize writes into the saved model's config (the flow's come from the
    prepare stage's data)."""
    shutil.rmtree(layout.prune_work, ignore_errors=True)
    shutil.rmtree(layout.pruned, ignore_errors=True)
    close_branch()  # a branch held from an earlier round
    out = {"combos": {}}
    t_stage = time.perf_counter()
    for method, sparsity in combos:
        gc.collect()
        t0 = time.perf_counter()
        setup = module.prune_setup.fn(params, layout, method, sparsity)
        assert not setup.get("cached"), "a cache hit: the scratch project was not clean"
        if "plan" in setup:  # today's tasks: set-up plans the branch, the others take the plan
            for i in range(setup["num_blocks"]):
                module.prune_block_task.fn(setup["plan"], i)
            module.prune_finalize.fn(setup["plan"], labels, time.time())
        else:  # --old-rev: every task reads params
            for i in range(setup["num_blocks"]):
                module.prune_block_task.fn(params, layout, method, sparsity, setup["work"], i)
            module.prune_finalize.fn(params, layout, method, sparsity, setup["work"], time.time())
        seconds = time.perf_counter() - t0
        d = layout.pruned_model(method, sparsity)
        masks = load_masks(d / "masks.safetensors")
        out["combos"][combo_name(method, sparsity)] = {
            "seconds": round(seconds, 2),
            "masks": hashlib.sha256(b"".join(masks[k].numpy().tobytes() for k in sorted(masks))).hexdigest()[
                :16
            ],
            "weights": pruned_weights_digest(d / "model.safetensors", list(masks)),
            "file": digest(d / "model.safetensors"),
            "tensors": tensor_digests(d / "model.safetensors"),
            "measured_sparsity": read_json(d / "metrics.json")["measured_sparsity"],
        }
        shutil.rmtree(d)  # a pruned SmolLM2 is 0.5 GB: keep only the digests
        print(f"  {combo_name(method, sparsity):>16}: {seconds:7.1f} s", flush=True)
    out["seconds"] = round(time.perf_counter() - t_stage, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--combos", nargs="*", default=None, help="method@sparsity (default: every combination)")
    ap.add_argument("--rounds", type=int, default=2, help="old/new pairs, the order swapped every round")
    ap.add_argument("--old-rev", default=DEFAULT_OLD_REV)
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-prune-stage")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    track = "lm" if "lm" in args.params.name else "encoder"
    out_path = args.out or RESULTS / f"prune_stage_{track}.json"
    work = args.work / track
    work.mkdir(parents=True, exist_ok=True)
    meta = provenance(argv)
    old = load_old(args.old_rev, work)
    old_commit = subprocess.run(
        ["git", "rev-parse", args.old_rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    layout = Layout(work / "project")
    (layout.root / "data").mkdir(parents=True, exist_ok=True)
    (layout.root / "models").mkdir(parents=True, exist_ok=True)
    if track == "lm":
        source, calib = lm_source(params, work)
        labels = source_labels(source)
        cfg = params.lm
        combos = (
            [(m, sparsity_label(s)) for m, s in (c.split("@") for c in args.combos)]
            if args.combos
            else cfg.combos
        )
        # the tasks' cache keys hash the calibration file: the lm chunks stand in for it
        import torch

        save_tensors(
            layout.calibration / "calibration.safetensors",
            {"input_ids": torch.cat([b["input_ids"] for b in calib])},
        )
    else:
        for sub in ("models/soup", "models/finetuned", "data/calibration"):
            link = layout.root / sub
            if not link.exists():
                os.symlink(ROOT / sub, link)
        source = new_prune.source_model(params, Layout(ROOT))
        calib = new_prune._calib_batches(params, Layout(ROOT))
        labels = label_names(Layout(ROOT))
        cfg = params.prune
        combos = (
            [(m, sparsity_label(s)) for m, s in (c.split("@") for c in args.combos)]
            if args.combos
            else cfg.combos
        )
    # the stage reads the profile's source, options and calibration: through these names in the old module,
    # through the library functions plan_branch and prune_setup call in today's
    old.source_model = new_prune.source_model = lambda _p, _l, src=source: Path(src)
    old.options = lambda _p, m, s, cfg=cfg: prune_options(cfg, m, s)
    new_prune.prune_options = lambda _cfg, m, s, cfg=cfg: prune_options(cfg, m, s)
    old._calib_batches = lambda _p, _l, calib=calib: calib
    new_prune.load_batches = lambda _path, _batch_size, calib=calib: calib
    old.load_classifier = lambda path: new_prune.Source.of(path).load()  # a causal LM too
    old.get_run_logger = lambda: logging.getLogger("old-prune")
    print(
        f"{track}: {len(combos)} combination(s) of {source}; old = {args.old_rev} ({old_commit[:10]})",
        flush=True,
    )
    runs = []
    for r in range(args.rounds):
        for label in ("old", "new") if r % 2 == 0 else ("new", "old"):
            print(f"round {r} {label}:", flush=True)
            res = run_stage(old if label == "old" else new_prune, params, layout, combos, labels)
            runs.append({"round": r, "code": label, **res})
            print(f"round {r} {label}: {res['seconds']:.1f} s", flush=True)
    shutil.rmtree(layout.prune_work, ignore_errors=True)
    ref = runs[0]["combos"]
    identical = all(
        run["combos"][c]["masks"] == ref[c]["masks"] and run["combos"][c]["weights"] == ref[c]["weights"]
        for run in runs
        for c in ref
    )
    # tensors whose bytes differ between runs (the whole file's digest may differ where the masks and the
    # pruned matrices do not: this names the tensors responsible)
    differing = {
        c: sorted(
            {
                n
                for run in runs
                for n, h in run["combos"][c]["tensors"].items()
                if ref[c]["tensors"].get(n) != h
            }
        )
        for c in ref
    }
    same_files = all(run["combos"][c]["file"] == ref[c]["file"] for run in runs for c in ref)
    old_s = sum(r["seconds"] for r in runs if r["code"] == "old")
    new_s = sum(r["seconds"] for r in runs if r["code"] == "new")
    per_round = [
        round(
            next(x["seconds"] for x in runs if x["round"] == r and x["code"] == "new")
            / next(x["seconds"] for x in runs if x["round"] == r and x["code"] == "old"),
            3,
        )
        for r in range(args.rounds)
    ]
    result = {
        **meta,
        "track": track,
        "params": str(args.params.relative_to(ROOT))
        if args.params.is_relative_to(ROOT)
        else str(args.params),
        "source": str(source),
        "calibration_batches": len(calib),
        "combos": [combo_name(m, s) for m, s in combos],
        "old": {"rev": args.old_rev, "commit": old_commit, "file": "tasks/prune.py"},
        "ratio_new_over_old": round(new_s / old_s, 3),
        "ratio_per_round": per_round,
        "old_seconds": round(old_s, 1),
        "new_seconds": round(new_s, 1),
        "identical_masks_and_weights": identical,
        "identical_files": same_files,
        "tensors_differing_between_runs": differing,
        "runs": runs,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    write_json(out_path, result)
    print(
        f"new / old = {result['ratio_new_over_old']} (per round {per_round}); identical masks and weights: {identical}"
    )
    print(f"identical weight files: {same_files}; tensors differing between runs: {differing}")
    print(f"wrote {out_path}")
    if not identical:
        print("MASKS OR WEIGHTS DIFFER between old and new", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
