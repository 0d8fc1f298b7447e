"""watch: ask DVC whether anything is stale and, only then, emit ``robustprune.data.changed``
(``python -m flows.watch``; the ``watch`` deployment in prefect.yaml runs it on an interval schedule,
inactive until enabled).

The ``pipeline`` deployment carries a trigger on that event, so an edited input, parameter or stage's code
starts one pipeline run (the deployment's concurrency limit queues a second). The event's resource is
``robustprune.project.<directory name>`` and its payload names the stale stages and what changed in each,
exactly as ``dvc status --json`` reports it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger

import flows  # noqa: F401
from plumbing.dvc_stages import stale_stages
from plumbing.runners import default_task_runner

EVENT = "robustprune.data.changed"


def resource_id(root: Path) -> str:
    return f"robustprune.project.{root.resolve().name}"


@flow(name="watch", log_prints=True, task_runner=default_task_runner())
def watch_flow(root: str = ".") -> dict:
    """Emit one ``robustprune.data.changed`` event naming the stale stages, or nothing when all are fresh."""
    from prefect.events import emit_event

    logger = get_run_logger()
    path = Path(root).resolve()
    status = stale_stages(path)
    stale = sorted(status)
    if not stale:
        logger.info("dvc status: every stage of %s is up to date; no event", path)
        return {"stale": [], "event": None}
    event = emit_event(
        event=EVENT,
        resource={"prefect.resource.id": resource_id(path), "prefect.resource.name": path.name},
        payload={"stale_stages": stale, "status": status, "root": str(path)},
    )
    logger.info("dvc status: %d stale stage(s) %s; emitted %s", len(stale), stale, EVENT)
    return {"stale": stale, "event": str(event.id) if event else None}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flows.watch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=".", help="the DVC repository to watch (default: .)")
    watch_flow(root=ap.parse_args().root)
