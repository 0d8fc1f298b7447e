"""Run-time plumbing: how a run is started, stopped, shipped and synchronised, never what it computes.

- :mod:`plumbing.cli`: the command line of every ``python -m flows.<stage>`` (validate first, run, stop);
- :mod:`plumbing.signals`: SIGTERM / SIGINT, and marking the stopped invocation's Prefect and MLflow runs;
- :mod:`plumbing.prefect_server`: Prefect's temporary local server, detached from the process group;
- :mod:`plumbing.remote`: stages sent to ``runtime.work_pool`` as deployments;
- :mod:`plumbing.runners`: the Prefect task runner ``runtime.task_runner`` asks for;
- :mod:`plumbing.mlflow_store`: where MLflow logs, as a worker must be told it;
- :mod:`plumbing.dvc_stages`: dvc.yaml generated from the stage manifests (``--write`` / ``--check``),
  ``dvc status`` / ``dvc commit`` of a stage, and what dvc.yaml lists for it;
- :mod:`plumbing.imports`: the project's imports read from the source (a stage's code deps, the layering test);
- :mod:`plumbing.dvc_sync`: ``runtime.storage: dvc``, a checkout per host synchronised through a DVC remote;
- :mod:`plumbing.services`: the preflight of the services a run needs (the Prefect API and work pool) on
  top of the library's input checks (:mod:`robustprune.preflight`).

Layers (tests/unit/test_layers.py): the library ``robustprune`` never imports this package; ``tasks`` and
``flows`` may; this package imports the library only, never ``tasks`` or ``flows``.
"""
