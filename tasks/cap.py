"""cap: contrastive pruning during fine-tuning — banks, every unstructured stage, every structured step, latency.

Every task keeps its result under a key over everything it depends on (input models, examples, options,
code) in ``.cache/cap-work/``; a stage's work directory holds the student's full state after the stage
(weights, mask scores, masks), its SnC snapshot and, written last, ``metrics.json``. A task whose
``metrics.json`` exists with its key is a cache hit, so a run killed at any point (``kill -9`` included)
and started again resumes at the first unfinished stage, from bit-identical saved state, and ends with the
same weights as an uninterrupted run. The models the report shows are exported to ``models/cap/<name>``
(plain Hugging Face classifiers; CAP-f's smaller one reloads with
:func:`robustprune.modeling.load_structured`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from prefect import task
from prefect.logging import get_run_logger

from robustprune.cap import masks as cap_masks
from robustprune.cap import structured as cap_structured
from robustprune.cap.banks import build_banks, encode, stack
from robustprune.cap.examples import Examples
from robustprune.cap.latency import measure
from robustprune.cap.loss import LossWeights, cap_loss, forward_student
from robustprune.cap.schedule import Stage, schedule
from robustprune.cap.train import EpochSnapshots, TrainOptions, epoch_steps, train_stage
from robustprune.checkpoints import (
    atomic_dir,
    load_tensors,
    read_json,
    save_masks,
    save_tensors,
    write_json,
)
from robustprune.config import CapConfig, Params, sparsity_label
from robustprune.data import load_splits
from robustprune.metrics import predict_logits
from robustprune.modeling import (
    load_classifier,
    load_structured,
    load_tokenizer,
    measured_sparsity,
    resolve_device,
)
from robustprune.sources import source_model
from tasks.common import Layout, code_digest, model_digest, sha256_files


# ------------------------------------------------------------------------------------------------ helpers
def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _code_digest() -> str:
    """The code CAP's cached stages depend on (the one helper every cache key uses)."""
    return code_digest("robustprune.cap", "robustprune.finetune", "robustprune.modeling", "tasks.cap")


def _work(layout: Layout, *parts: str) -> Path:
    return layout.root.joinpath(".cache", "cap-work", *parts)


def check_inputs(params: Params, layout: Layout) -> None:
    """Fail before any work when an input the stage reads is missing."""
    need = [layout.data / "train.parquet", layout.data / "test.parquet", layout.base_model / "config.json"]
    need.append(source_model(params, layout) / "config.json")
    missing = [str(p.relative_to(layout.root)) for p in need if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"stage 'cap' needs {missing}, which do not exist under {layout.root}: run prepare, finetune "
            "and soup first (dvc repro cap, or python -m flows.pipeline)"
        )


def train_options(cap: CapConfig) -> TrainOptions:
    w = cap.weights
    return TrainOptions(
        batch_size=cap.batch_size,
        lr=cap.lr,
        score_lr=cap.score_lr,
        weight_decay=cap.weight_decay,
        warmup_ratio=cap.warmup_ratio,
        temperature=cap.temperature,
        kd_temperature=cap.kd_temperature,
        extra_negatives=cap.extra_negatives,
        representation=cap.representation,
        weights=LossWeights(ce=w.ce, kd=w.kd, unsup=w.unsup, sup=w.sup),
        soft_threshold=cap.soft_threshold,
        soft_lambda=cap.soft_lambda,
        mask_interval=cap.mask_interval,
    )


def run_options(cap: CapConfig, run: str) -> TrainOptions:
    """The main run's options, or an ablation's (``cap.ablation_settings`` where it sets a value)."""
    opts = train_options(cap)
    if run == "cap":
        return opts
    a = cap.ablation_settings
    over: dict = {}
    if a.lr is not None:
        over["lr"] = a.lr
    if a.warmup_ratio is not None:
        over["warmup_ratio"] = a.warmup_ratio
    if a.weights is not None:
        w = a.weights
        over["weights"] = LossWeights(ce=w.ce, kd=w.kd, unsup=w.unsup, sup=w.sup)
    return TrainOptions(**{**opts.__dict__, **over})


def structured_options(cap: CapConfig) -> TrainOptions:
    w = cap.structured.weights
    base = train_options(cap)
    return TrainOptions(
        **{
            **base.__dict__,
            "lr": cap.structured.lr,
            "kd_temperature": cap.structured.kd_temperature,
            "weights": LossWeights(ce=w.ce, kd=w.kd, unsup=w.unsup, sup=w.sup),
        }
    )


def run_stages(cap: CapConfig, n_examples: int) -> list[Stage]:
    """The stages of every unstructured run (``cap.path``), lengths in steps (``cap.length_unit``)."""
    unit = epoch_steps(n_examples, cap.batch_size) if cap.length_unit == "epochs" else 1
    return schedule(
        list(cap.sparsities), cap.warmup_steps, cap.ramp_steps, cap.hold_steps, path=cap.path, unit=unit
    )


def _start_key(params: Params, layout: Layout) -> str:
    """What the student's starting point depends on (``cap.start``)."""
    if params.cap.start == "finetuned":
        return model_digest(source_model(params, layout))
    return _key("pretrained", model_digest(layout.base_model), params.cap.seed)


def start_model(params: Params, layout: Layout) -> torch.nn.Module:
    """The student before any CAP step: the dense soup (``cap.start: finetuned``), or the pre-trained encoder
    with a fresh classification head seeded by ``cap.seed`` and the soup's labels (``pretrained``: the
    reference starts the student from bert-base and distils from a separately fine-tuned teacher)."""
    teacher = source_model(params, layout)
    if params.cap.start == "finetuned":
        return load_classifier(teacher)
    from transformers import AutoConfig

    tcfg = AutoConfig.from_pretrained(str(teacher))
    model = load_classifier(layout.base_model, num_labels=tcfg.num_labels, head_seed=params.cap.seed)
    model.config.id2label, model.config.label2id = dict(tcfg.id2label), dict(tcfg.label2id)
    return model


def _examples(params: Params, layout: Layout, tokenizer) -> tuple[Examples, np.ndarray]:  # noqa: ANN001
    train = load_splits(layout.data).train
    rows = np.random.default_rng(params.cap.seed).permutation(len(train))
    if params.cap.train_examples is not None:
        rows = np.sort(rows[: params.cap.train_examples])
    else:
        rows = np.arange(len(train))
    ex = Examples.from_texts(
        tokenizer,
        train["text"].iloc[rows].tolist(),
        train["label"].iloc[rows].tolist(),
        params.data.max_length,
    )
    return ex, rows


def _load_banks(banks: dict) -> dict[str, torch.Tensor]:
    return load_tensors(Path(banks["dir"]) / "banks.safetensors")


def _previous_snapshots(previous: list[dict]) -> list[torch.Tensor]:
    """SnC vectors (N, H) the earlier stages saved, oldest first: one per stage (``cap.snapshots: stage``) or
    every epoch snapshot a stage took (``epoch``)."""
    out: list[torch.Tensor] = []
    for p in previous:
        if not p["snapshot"]:
            continue
        saved = load_tensors(Path(p["dir"]) / "snapshot.safetensors")
        out += list(saved["epochs"].unbind(0)) if "epochs" in saved else [saved["vectors"]]
    return out


def _bank_dict(
    modules: list[str], saved: dict[str, torch.Tensor], snapshots: list[torch.Tensor]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    labels = saved["labels"]
    out = {}
    if "prc" in modules:
        out["prc"] = (stack([saved["prc"]]), labels)
    if "fic" in modules:
        out["fic"] = (stack([saved["fic"]]), labels)
    if "snc" in modules and snapshots:
        out["snc"] = (stack(snapshots), labels)
    return out


def _fit_and_test(result, outcomes: list[int], predictions: list[int]) -> dict:  # noqa: ANN001
    """The record's tail every CAP step shares: the training loss (``TrainResult``) and the test outcomes."""
    return {
        "final_loss": result.tail_loss(),
        "loss_parts": result.parts,
        "test_accuracy": float(np.mean(outcomes)),
        "test_correct": outcomes,
        "test_predictions": predictions,
    }


def _test_outcomes(params: Params, layout: Layout, model, tokenizer) -> tuple[list[int], list[int]]:  # noqa: ANN001
    """(per-row correctness, per-row predicted class) on the test split."""
    test = load_splits(layout.data).test
    logits = predict_logits(
        model,
        tokenizer,
        test["text"].tolist(),
        batch_size=params.evaluate.batch_size,
        max_length=params.data.max_length,
        device=resolve_device(params.runtime.device),
    )
    pred = logits.argmax(-1)
    return [int(x) for x in (pred == test["label"].to_numpy())], [int(x) for x in pred]


def _export(model, tokenizer, dest: Path, metrics: dict, masks: dict | None) -> None:  # noqa: ANN001
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if masks is not None:
            save_masks(tmp / "masks.safetensors", masks)
        write_json(tmp / "metrics.json", metrics)


def _exported(dest: Path, key: str) -> bool:
    f = dest / "metrics.json"
    return f.is_file() and read_json(f).get("key") == key


# -------------------------------------------------------------------------------------------------- banks
def bank_models(params: Params, layout: Layout) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the pre-trained encoder: PrC, the fine-tuned dense model: FiC and the KD teacher's logits)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(layout.base_model)), load_classifier(source_model(params, layout))


@task(name="cap-banks", tags=["gpu"])
def cap_banks(params: Params, layout: Layout) -> dict:
    """PrC bank (pre-trained encoder), FiC bank and the teacher's logits (dense soup), no gradient."""
    logger = get_run_logger()
    cap = params.cap
    teacher_dir = source_model(params, layout)
    key = _key(
        model_digest(layout.base_model),
        model_digest(teacher_dir),
        sha256_files(layout.data / "train.parquet", layout.data / "test.parquet"),
        cap.train_examples,
        cap.seed,
        cap.representation,
        params.data.max_length,
        params.evaluate.batch_size,
        _code_digest(),
    )
    work = _work(layout, "banks", key)
    if (work / "metrics.json").is_file():
        logger.info("cache hit: CAP banks for the same models, examples and representation")
        return read_json(work / "metrics.json")
    device = resolve_device(params.runtime.device)
    tok = load_tokenizer(teacher_dir)
    examples, rows = _examples(params, layout, tok)
    t0 = time.perf_counter()
    pretrained, finetuned = bank_models(params, layout)
    tensors = build_banks(
        pretrained, finetuned, examples, cap.representation,
        batch_size=cap.bank_batch_size, device=device, progress=params.runtime.progress,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    dense_correct, dense_pred = _test_outcomes(params, layout, load_classifier(teacher_dir), tok)
    metrics = {
        "key": key,
        "dir": str(work),
        "n": len(examples),
        "seconds": seconds,
        "teacher": teacher_dir.name,
        "dense_test_correct": dense_correct,
        "dense_test_predictions": dense_pred,
        "test_labels": [int(y) for y in load_splits(layout.data).test["label"]],
    }
    with atomic_dir(work) as tmp:
        save_tensors(tmp / "banks.safetensors", {**tensors, "rows": torch.as_tensor(rows, dtype=torch.long)})
        write_json(tmp / "metrics.json", metrics)
    return metrics


# ------------------------------------------------------------------------------------------ unstructured
def _student(params: Params, layout: Layout, state: Path | None) -> torch.nn.Module:
    model = start_model(params, layout)
    cap_masks.attach(model, params.cap.criterion)
    if state is not None:
        model.load_state_dict(load_tensors(state), strict=True)
    return model


@task(name="cap-stage", tags=["gpu"])
def cap_stage(
    params: Params,
    layout: Layout,
    run: str,
    modules: list[str],
    index: int,
    banks: dict,
    previous: list[dict],
) -> dict:
    """One stage of an unstructured staged run: ramp to the stage's sparsity, hold, save, export, test."""
    logger = get_run_logger()
    cap = params.cap
    stage = run_stages(cap, banks["n"])[index]
    name = f"{run}_{sparsity_label(stage.final)}"
    opts = run_options(cap, run)
    expected = index if cap.path == "staged" else 0  # separate: every stage is a run of its own
    if len(previous) != expected:
        raise ValueError(f"stage {index} of {run} needs {expected} earlier stages, got {len(previous)}")
    start_key = previous[-1]["key"] if previous else _start_key(params, layout)
    key = _key(
        start_key, banks["key"], run, sorted(modules), repr(stage), repr(opts), cap.criterion,
        max(cap.sparsities), cap.seed, params.evaluate.batch_size, cap.snapshots, _code_digest(),
    )  # fmt: skip
    work = _work(layout, run, f"{index}-{key}")
    dest = layout.cap / name
    if (work / "metrics.json").is_file():
        metrics = read_json(work / "metrics.json")
        if not _exported(dest, key):  # the export was lost: rebuild it from the saved state
            model = _student(params, layout, work / "state.safetensors")
            masks = cap_masks.bake(model)
            _export(model, load_tokenizer(source_model(params, layout)), dest, metrics, masks)
        logger.info("cache hit: %s (stage %d of %s) already trained", name, index, run)
        return metrics
    device = resolve_device(params.runtime.device)
    saved = _load_banks(banks)
    snapshots = _previous_snapshots(previous)
    bank = _bank_dict(modules, saved, snapshots)
    model = _student(params, layout, Path(previous[-1]["dir"]) / "state.safetensors" if previous else None)
    tok = load_tokenizer(source_model(params, layout))
    examples, _ = _examples(params, layout, tok)
    if not torch.equal(examples.labels, saved["labels"]):
        raise RuntimeError("CAP banks do not match the training examples: delete .cache/cap-work/banks")
    result = train_stage(
        model,
        examples,
        saved["teacher_logits"],
        bank,
        opts,
        steps=stage.steps,
        seed=cap.seed + 1000 * index,
        stage=stage,
        max_sparsity=max(cap.sparsities),
        device=device,
        progress=params.runtime.progress,
        desc=name,
        snapshots=(
            EpochSnapshots(
                every=epoch_steps(len(examples), cap.batch_size),
                offset=sum(p["steps"] for p in previous),
                batch_size=cap.bank_batch_size,
            )
            if "snc" in modules and cap.snapshots == "epoch"
            else None
        ),
    )
    # SnC: the student's representations for the later stages of the same staged run: the epoch snapshots
    # this stage took (cap.snapshots: epoch), or one after the stage, eval mode (stage)
    later = cap.path == "staged" and index + 1 < len(cap.sparsities)
    t0 = time.perf_counter()
    snap = None
    if "snc" in modules and later and cap.snapshots == "stage":
        snap = encode(
            model, examples, cap.representation, batch_size=cap.bank_batch_size, device=device
        ).vectors
    elif "snc" in modules and later and result.snapshots:
        snap = torch.stack(result.snapshots)  # (k, N, H)
    snapshot_seconds = time.perf_counter() - t0 + result.snapshot_seconds
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    baked = copy.deepcopy(model).cpu()
    masks = cap_masks.bake(baked)
    outcomes, predictions = _test_outcomes(params, layout, baked, tok)
    metrics = {
        "name": name,
        "run": run,
        "modules": sorted(modules),
        "index": index,
        "key": key,
        "dir": str(work),
        "snapshot": snap is not None,
        "epoch_snapshots": len(result.snapshots),
        "sparsity_target": stage.final,
        "measured_sparsity": measured_sparsity(baked),
        "steps": result.steps,
        "train_seconds": result.seconds,
        "snapshot_seconds": snapshot_seconds,
        **_fit_and_test(result, outcomes, predictions),
    }
    with atomic_dir(work) as tmp:
        save_tensors(tmp / "state.safetensors", state)
        if snap is not None:
            save_tensors(tmp / "snapshot.safetensors", {"epochs" if snap.ndim == 3 else "vectors": snap})
        write_json(tmp / "metrics.json", metrics)
    _export(baked, tok, dest, metrics, masks)
    logger.info(
        "%s: sparsity %.4f, test accuracy %.4f, %d steps in %.1f s",
        name, metrics["measured_sparsity"], metrics["test_accuracy"], result.steps, result.seconds,
    )  # fmt: skip
    return metrics


# -------------------------------------------------------------------------------------------- structured
def _structured_model(params: Params, layout: Layout, previous: list[dict]) -> torch.nn.Module:
    if previous:
        return load_structured(Path(previous[-1]["dir"]) / "model")
    return load_classifier(source_model(params, layout))


@task(name="cap-structured-step", tags=["gpu"])
def cap_structured_step(
    params: Params, layout: Layout, index: int, banks: dict, previous: list[dict]
) -> dict:
    """CAP-f step ``index``: importance, select, remove heads and FFN neurons, retrain; save and test."""
    logger = get_run_logger()
    cap = params.cap
    sc = cap.structured
    fraction = sc.sparsities[index]
    name = f"cap-f_{sparsity_label(fraction)}"
    opts = structured_options(cap)
    start_key = previous[-1]["key"] if previous else model_digest(source_model(params, layout))
    key = _key(
        start_key, banks["key"], fraction, sc.retrain_steps, sc.importance_batches, sc.min_heads,
        sorted(sc.modules), repr(opts), cap.seed, params.evaluate.batch_size, _code_digest(),
    )  # fmt: skip
    work = _work(layout, "cap-f", f"{index}-{key}")
    final = index == len(sc.sparsities) - 1
    dest = layout.cap / name
    tok = load_tokenizer(source_model(params, layout))
    if (work / "metrics.json").is_file():
        metrics = read_json(work / "metrics.json")
        if final and not _exported(dest, key):
            model = load_structured(work / "model")
            _export(model, tok, dest, metrics, None)
        logger.info("cache hit: %s already pruned and retrained", name)
        return metrics
    device = resolve_device(params.runtime.device)
    saved = _load_banks(banks)
    bank = _bank_dict(sc.modules, saved, _previous_snapshots(previous))
    examples, _ = _examples(params, layout, tok)
    model = _structured_model(params, layout, previous).to(device)
    dense = load_classifier(source_model(params, layout))
    heads0 = dense.config.num_hidden_layers * dense.config.num_attention_heads
    neurons0 = sum(cap_structured.ffn_widths(dense))
    params0 = cap_structured.encoder_parameters(dense)

    # importance: Σ|∂L/∂gate| of CAP's loss over the first batches of a seeded order (eval mode, no dropout)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cap.seed + 100_000 + index)
    order = torch.randperm(len(examples), generator=gen)
    extra_gen = torch.Generator().manual_seed(cap.seed + 200_000 + index)

    def batch_loss(i: int):  # noqa: ANN202
        idx = order[i * opts.batch_size : (i + 1) * opts.batch_size]
        if not len(idx):
            idx = order[: opts.batch_size]

        def loss(m: torch.nn.Module) -> torch.Tensor:
            b = {k: v.to(device) for k, v in examples.batch(idx).items()}
            logits, rep = forward_student(m, b, opts.representation)
            from robustprune.cap.banks import sample_extra

            extra = {
                n: sample_extra(len(examples), opts.extra_negatives, v.shape[1], extra_gen).to(device)
                for n, (v, _) in bank.items()
            }
            return cap_loss(
                logits, rep, idx.to(device), examples.labels[idx].to(device),
                saved["teacher_logits"][idx].to(device),
                {k: (v.to(device), lb.to(device)) for k, (v, lb) in bank.items()}, extra, opts.weights,
                temperature=opts.temperature, kd_temperature=opts.kd_temperature,
            ).total  # fmt: skip

        return loss

    imp = cap_structured.importance(model, [batch_loss(i) for i in range(sc.importance_batches)])
    heads_gone = heads0 - sum(cap_structured.head_counts(model))
    neurons_gone = neurons0 - sum(cap_structured.ffn_widths(model))
    heads = cap_structured.select_heads(
        imp.heads, cap_structured.prune_count(heads0, fraction, heads_gone), sc.min_heads
    )
    neurons = cap_structured.select_neurons(
        imp.neurons, cap_structured.prune_count(neurons0, fraction, neurons_gone)
    )
    cap_structured.remove_units(model, heads, neurons)
    importance_seconds = time.perf_counter() - t0
    result = train_stage(
        model,
        examples,
        saved["teacher_logits"],
        bank,
        opts,
        steps=sc.retrain_steps,
        seed=cap.seed + 300_000 + index,
        device=device,
        progress=params.runtime.progress,
        desc=name,
    )
    later = not final
    snap = (
        encode(model, examples, cap.representation, batch_size=cap.bank_batch_size, device=device).vectors
        if "snc" in sc.modules and later
        else None
    )
    model = model.cpu().eval()
    outcomes, predictions = _test_outcomes(params, layout, model, tok)
    metrics = {
        "name": name,
        "index": index,
        "key": key,
        "dir": str(work),
        "snapshot": snap is not None,
        "fraction": fraction,
        "heads": cap_structured.head_counts(model),
        "ffn_widths": cap_structured.ffn_widths(model),
        "heads_removed": heads0 - sum(cap_structured.head_counts(model)),
        "neurons_removed": neurons0 - sum(cap_structured.ffn_widths(model)),
        "encoder_parameters": cap_structured.encoder_parameters(model),
        "encoder_parameters_dense": params0,
        "encoder_parameters_removed": 1 - cap_structured.encoder_parameters(model) / params0,
        "importance_seconds": importance_seconds,
        "train_seconds": result.seconds,
        "steps": result.steps,
        **_fit_and_test(result, outcomes, predictions),
    }
    with atomic_dir(work) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        if snap is not None:
            save_tensors(tmp / "snapshot.safetensors", {"vectors": snap})
        write_json(tmp / "metrics.json", metrics)
    if final:
        _export(model, tok, dest, metrics, None)
    logger.info(
        "%s: %d heads, %d FFN neurons removed, test accuracy %.4f",
        name, metrics["heads_removed"], metrics["neurons_removed"], metrics["test_accuracy"],
    )  # fmt: skip
    return metrics


# ------------------------------------------------------------------------------------------------ latency
@task(name="cap-latency", tags=["cpu"])
def cap_latency(params: Params, layout: Layout, structured: dict) -> dict:
    """Median CPU latency of the dense soup and the final CAP-f model on the same test batches."""
    logger = get_run_logger()
    lat = params.cap.latency
    dense_dir = source_model(params, layout)
    key = _key(model_digest(dense_dir), structured["key"], repr(lat), params.data.max_length)
    work = _work(layout, "latency", key)
    if (work / "metrics.json").is_file():
        logger.info("cache hit: latency of the same models and settings already measured")
        return read_json(work / "metrics.json")
    dense = load_classifier(dense_dir).cpu().eval()
    pruned = load_structured(Path(structured["dir"]) / "model").cpu().eval()
    tok = load_tokenizer(dense_dir)
    texts = load_splits(layout.data).test["text"].tolist()
    out: dict = {"key": key, "threads": lat.threads, "batches": {}}
    for bsz in lat.batch_sizes:
        batch = dict(
            tok(
                texts[:bsz],
                padding=True,
                truncation=True,
                max_length=params.data.max_length,
                return_tensors="pt",
            )
        )
        res = measure(
            {"dense": dense, "cap-f": pruned},
            batch,
            threads=lat.threads,
            min_run_time=lat.min_run_time,
            rounds=lat.rounds,
        )
        out["batches"][str(bsz)] = {
            "tokens": int(batch["input_ids"].shape[1]),
            "dense_ms": res["dense"].median_ms,
            "cap_f_ms": res["cap-f"].median_ms,
            "dense_iqr_ms": res["dense"].iqr_ms,
            "cap_f_iqr_ms": res["cap-f"].iqr_ms,
            "speedup": res["dense"].median_ms / res["cap-f"].median_ms,
            "runs": res["dense"].runs,
        }
        logger.info("latency batch %d: dense %.2f ms, CAP-f %.2f ms (%.2fx)", bsz, res["dense"].median_ms,
                    res["cap-f"].median_ms, out["batches"][str(bsz)]["speedup"])  # fmt: skip
    write_json(work / "metrics.json", out)
    return out
