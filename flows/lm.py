"""The causal-LM track (``python -m flows.lm --params params-lm.yaml``; ``make run-lm``; DVC stage ``lm``).

Converts the causal LM once, builds the perplexity protocol per calibration seed, measures the dense
perplexity, prunes with every ``lm.methods`` x ``lm.sparsities`` x ``lm.calib_seeds`` (one task each),
runs SDS (reactivate, then re-prune: two tasks) on top of ``lm.sds`` combinations, and writes
``reports/lm.json`` + ``reports/lm.md`` (one table of perplexities; spread over seeds). Tasks run one
after another: pruning SmolLM2-135M with a fixed α peaks at 1.4-2.4 GB of RSS
(``prune_peak_rss_mb`` in ``benchmarks/results/smollm2.json``, from ``benchmarks/bench_smollm2.py``), and
the track must stay within 2.5 GB peak RSS on a laptop.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from prefect import flow

import flows  # noqa: F401
from plumbing.runners import default_task_runner
from robustprune.checkpoints import write_json, write_text
from robustprune.report import lm_plot, lm_table
from tasks.common import load, log_metrics, section, stage_run
from tasks.lm import lm_dense, lm_model, lm_protocol, lm_prune, lm_sds_reactivate, lm_sds_reprune


@flow(name="lm", log_prints=True, task_runner=default_task_runner())
def lm_flow(params_path: str = "params-lm.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    lm = params.lm
    with stage_run("lm", params, layout.root, section(params, "seed", "lm")):
        model = lm_model(params, layout)
        rows: list[dict] = []
        protocols = {seed: lm_protocol(params, layout, model, seed) for seed in lm.calib_seeds}
        dense = lm_dense(params, layout, model, protocols[lm.calib_seeds[0]])
        rows.append(dense)
        log_metrics({"ppl.dense": dense["ppl"]})
        sds_combos = set(lm.sds.combos)
        for method, sparsity in lm.combos:
            for seed in lm.calib_seeds:
                pruned = lm_prune.with_options(task_run_name=f"lm-prune-{method}-{sparsity}-s{seed}")(
                    params, layout, model, protocols[seed], method, sparsity, seed
                )
                rows.append(pruned)
                log_metrics({f"ppl.{pruned['name']}": pruned["ppl"]})
                if (method, sparsity) not in sds_combos:
                    continue
                react = lm_sds_reactivate.with_options(
                    task_run_name=f"lm-sds-reactivate-{method}-{sparsity}-s{seed}"
                )(params, layout, model, protocols[seed], pruned)
                rows.append(react)
                final = lm_sds_reprune.with_options(
                    task_run_name=f"lm-sds-reprune-{method}-{sparsity}-s{seed}"
                )(params, layout, model, protocols[seed], pruned, react)
                rows.append(final)
                log_metrics({f"ppl.{react['name']}": react["ppl"], f"ppl.{final['name']}": final["ppl"]})
        r = layout.reports
        write_json(r / "lm.json", rows)
        reference, source = llmc_reference(layout.root, lm.model)
        table = lm_table(rows, model=lm.model, text=lm.text, reference=reference, reference_source=source)
        write_text(r / "lm.md", table)
        lm_plot(rows, r / "plots" / "lm_perplexity.png")
        for f in ("lm.json", "lm.md", "plots/lm_perplexity.png"):
            mlflow.log_artifact(str(r / f), artifact_path="report")
    print(table)
    return {"rows": rows}


#: llm-compressor's perplexities on SmolLM2-135M, same protocol, measured by benchmarks/bench_smollm2_vs_llmc.py
LLMC_REFERENCE = "benchmarks/results/smollm2_vs_llmc.json"


def llmc_reference(root: Path, model: str) -> tuple[dict[tuple[str, str], float], str]:
    """(method, sparsity) -> llm-compressor's perplexity from the committed benchmark (SmolLM2 only), and its path."""
    path = root / LLMC_REFERENCE
    if model != "smollm2" or not path.is_file():
        return {}, ""
    rows = json.loads(path.read_text()).get("rows", [])
    return {(r["method"], str(r["pattern"])): float(r["theirs"]["ppl"]) for r in rows}, LLMC_REFERENCE


if __name__ == "__main__":
    from plumbing.cli import main

    main("lm", lm_flow)
