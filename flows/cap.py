"""cap: contrastive pruning during fine-tuning (``python -m flows.cap``).

Banks (task) → for each module set (``cap.modules``, then every ``cap.ablations`` entry) one staged
unstructured run, one task per sparsity stage, each starting from the previous stage's saved state
(``cap.path: separate``: one run per sparsity, each from the start point) →
CAP-f, one task per structured step → CPU latency of CAP-f against the dense soup. Models land in
``models/cap/<name>`` (evaluated and attacked like every other model); ``reports/cap.json`` holds the
schedule, per-stage timings and accuracy, the contrastive ablation (paired differences) and CAP-f's
parameters removed and latency ratios.
"""

from __future__ import annotations

from prefect import flow

import flows  # noqa: F401
from plumbing.dvc_sync import worker_sync
from plumbing.runners import default_task_runner
from robustprune.cap.report import summarize
from robustprune.config import Params
from tasks.cap import cap_banks, cap_latency, cap_stage, cap_structured_step, check_inputs, run_stages
from tasks.common import Layout, load, log_metrics, publish_models, section, stage_run


@flow(name="cap", log_prints=True, task_runner=default_task_runner())
def cap_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    with worker_sync("cap", layout.root):  # runtime.storage: dvc: a worker pulls the inputs before the check
        return _cap(params, layout)


def _cap(params: Params, layout: Layout) -> dict:
    check_inputs(params, layout)
    cap = params.cap
    with stage_run("cap", params, layout.root, section(params, "cap")):
        banks = cap_banks(params, layout)
        runs: dict[str, list[dict]] = {}
        for run, modules in cap.runs:
            done: list[dict] = []
            for stage in run_stages(cap, banks["n"]):
                earlier = done if cap.path == "staged" else []  # separate: each sparsity is a run of its own
                res = cap_stage.with_options(task_run_name=f"cap-{run}-{stage.final:g}")(
                    params, layout, run, modules, stage.index, banks, earlier
                )
                done.append(res)
                log_metrics(
                    {
                        f"{res['name']}.test_accuracy": res["test_accuracy"],
                        f"{res['name']}.sparsity": res["measured_sparsity"],
                        f"{res['name']}.train_seconds": res["train_seconds"],
                    }
                )
            runs[run] = done
        structured: list[dict] = []
        for k, fraction in enumerate(cap.structured.sparsities):
            res = cap_structured_step.with_options(task_run_name=f"cap-f-{fraction:g}")(
                params, layout, k, banks, structured
            )
            structured.append(res)
            log_metrics({f"{res['name']}.test_accuracy": res["test_accuracy"]})
        latency = cap_latency(params, layout, structured[-1]) if structured else None
        report = summarize(params.model_dump(mode="json")["cap"], banks, runs, structured, latency)
        for bsz, row in (latency or {}).get("batches", {}).items():
            log_metrics({f"cap-f.speedup_b{bsz}": row["speedup"]})
        publish_models(layout, "cap", cap.model_names(), report)  # exactly the models params.yaml asks for
    return report


if __name__ == "__main__":
    from plumbing.cli import main

    main("cap", cap_flow)
