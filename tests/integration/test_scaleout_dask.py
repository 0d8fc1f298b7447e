"""Task runners (issue #18): prefect-dask runs with prefect 3.8.8, the attack stage fans its shards out over a
2-worker Dask LocalCluster and writes the same per-example CSVs as one thread does."""

from __future__ import annotations

import pytest

from tests.integration.conftest import copy_project

pytestmark = pytest.mark.integration


def test_runner_settings_build_the_runner_params_ask_for():
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from plumbing.runners import runner_settings, task_runner
    from robustprune.config import ConfigError, parse_params

    default = task_runner(runner_settings(parse_params({})))
    assert isinstance(default, ThreadPoolTaskRunner) and default._max_workers == 1  # the 2-core default
    runner = task_runner(
        runner_settings(parse_params({"runtime": {"task_runner": "process", "max_workers": 3}}))
    )
    assert isinstance(runner, ProcessPoolTaskRunner) and runner._max_workers == 3
    local = task_runner({"task_runner": "dask", "max_workers": 2})
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs == {
        "n_workers": 2,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    remote = task_runner(
        runner_settings(
            parse_params({"runtime": {"task_runner": "dask", "dask_address": "tcp://10.0.0.5:8786"}})
        )
    )
    assert remote.address == "tcp://10.0.0.5:8786"
    with pytest.raises(
        ConfigError, match=r"runtime.dask_address = 'tcp://h:1' needs runtime.task_runner: dask"
    ):
        parse_params({"runtime": {"dask_address": "tcp://h:1"}})
    with pytest.raises(ConfigError, match=r"runtime.dask_address = 'h:1': not a Dask scheduler address"):
        parse_params({"runtime": {"task_runner": "dask", "dask_address": "h:1"}})


@pytest.mark.slow
def test_attack_shards_on_a_two_worker_local_cluster_match_one_thread(pipeline_run, tmp_path):
    import yaml
    from distributed import Client, LocalCluster, get_task_stream
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    from flows.attack import attack_flow
    from plumbing.runners import local_cluster_kwargs, runner_settings, task_runner
    from robustprune.config import load_params

    src_root, src_params, _ = pipeline_run
    raw = yaml.safe_load(src_params.read_text())
    # 4 shards of 2 examples, one model, one recipe: what a 2-worker cluster can show in seconds
    raw["attack"] |= {
        "models": ["soup-greedy"],
        "recipes": ["textbugger"],
        "num_examples": 8,
        "shard_size": 2,
    }
    csv = {}
    with LocalCluster(**local_cluster_kwargs(2)) as cluster, Client(cluster) as client:
        for kind in ("thread", "dask"):
            root = copy_project(
                src_root, tmp_path / kind, skip=("mlruns.db", "mlartifacts", "reports/attacks")
            )
            runtime = {
                "progress": False,
                "device": "cpu",
                "task_runner": kind,
                "max_workers": 2 if kind == "dask" else 1,
            }
            if kind == "dask":
                runtime["dask_address"] = cluster.scheduler_address
            params_path = root / "params.yaml"
            params_path.write_text(yaml.safe_dump({**raw, "runtime": runtime}))
            runner = task_runner(runner_settings(load_params(params_path)))
            # the shards are cached by content: both runs must compute them
            with (
                temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: True}),
                get_task_stream(client) as ts,
            ):
                rows = attack_flow.with_options(task_runner=runner)(
                    params_path=str(params_path), root=str(root)
                )
            assert [(r["model"], r["recipe"], r["num_examples"] + r["num_no_words"]) for r in rows] == [
                ("soup-greedy", "textbugger", 8)
            ]
            csv[kind] = (root / "reports" / "attacks" / "soup-greedy" / "textbugger.csv").read_bytes()
            if kind == "dask":
                shards = [t for t in ts.data if "attack" in str(t["key"])]
                assert len(shards) == 4, [t["key"] for t in ts.data]
                assert len({t["worker"] for t in shards}) == 2, shards  # both workers attacked
            else:
                assert ts.data == []  # nothing went to the cluster
    assert csv["dask"] == csv["thread"]
    assert csv["thread"].count(b"\n") == 9  # header + 8 examples
