import dataclasses
import os
from pathlib import Path

import pytest

import fake_backends  # tests/ is on sys.path (pytest's rootdir insertion)
from kdlora.analysis.store_report import what_trained
from kdlora.errors import UserError
from kdlora.experiment import load_experiment
from kdlora.store import Store
from kdlora.sweep import executors
from kdlora.sweep.backends import Backends
from kdlora.sweep.driver import run_sweep
from kdlora.sweep.executors import (
    LocalExecutor,
    RayExecutor,
    available_cores,
    execute,
    execute_in_child,
    make_executor,
)
from kdlora.sweep.warm import WarmStarter

TESTS = Path(__file__).parent


def _raises(error):
    def run(config, out_dir, progress):
        raise error
    return run


def test_execute_turns_exceptions_into_failed_results(tmp_path):
    for error, reason in ((UserError("unknown task 'x'"), "unknown task 'x'"),
                          (ValueError("boom"), "ValueError: boom")):
        backends = Backends(dict, _raises(error), dict, _raises(error))
        result = execute("train", {}, str(tmp_path), backends, False)
        assert result["status"] == "failed" and result["reason"] == reason and result["wall_seconds"] >= 0
    assert "ValueError: boom" in result["traceback"]


def test_execute_defaults_status_to_done(tmp_path):
    backends = Backends(dict, lambda c, o, p: {"score": 1.0}, dict, lambda c, o, p: {"rows": []})
    assert execute("bench", {}, str(tmp_path), backends, False)["status"] == "done"


def test_isolated_run_in_a_child_process(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLORA_BACKENDS", "fake_backends:BACKENDS")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ["PYTHONPATH"]]))
    config = fake_backends.train_config({"task": "sst2", "family": "bert", "method": "fft", "seed": 2})
    result = execute_in_child("train", config, str(tmp_path / "run"), False)
    assert result["status"] == "done" and result["score"] == pytest.approx(0.92)
    assert result["environment"]["pid"] != os.getpid() and (tmp_path / "run" / "metrics.json").is_file()
    failed = execute_in_child("train", {**config, "fail": True}, str(tmp_path / "run2"), False)
    assert failed["status"] == "failed" and failed["reason"] == "RuntimeError: asked to fail"
    monkeypatch.setenv("FAKE_KILL", "1")
    killed = execute_in_child("train", config, str(tmp_path / "run3"), False)
    assert killed["status"] == "failed" and killed["reason"] == "run process killed by signal 9 (out of memory?)"


def test_runs_forked_from_a_warm_starter_are_fresh_processes_each_measured_on_its_own(tmp_path, monkeypatch):
    """Issue 27: a warm starter forks each run from a process that imported the libraries once; every run is still
    a process of its own, with the environment of when it started, and a peak memory of its own."""
    monkeypatch.setenv("KDLORA_BACKENDS", "fake_backends:BACKENDS")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ["PYTHONPATH"]]))
    config = fake_backends.train_config({"task": "sst2", "family": "bert", "method": "fft", "seed": 2})
    with WarmStarter() as starter:
        monkeypatch.setenv("FAKE_ALLOC_MB", "64")
        big = execute_in_child("train", config, str(tmp_path / "big"), False, starter)
        monkeypatch.setenv("FAKE_ALLOC_MB", "16")
        small = execute_in_child("train", config, str(tmp_path / "small"), False, starter)
        failed = execute_in_child("train", {**config, "fail": True}, str(tmp_path / "failed"), False, starter)
        monkeypatch.setenv("FAKE_KILL", "1")
        killed = execute_in_child("train", config, str(tmp_path / "killed"), False, starter)
        pids = {big["environment"]["pid"], small["environment"]["pid"], os.getpid(), starter.process.pid}
    assert len(pids) == 4  # two runs, two processes, neither the driver nor the starter
    # 64 MiB then 16 MiB, give or take the interpreter's few pages: the second run's figure is not the first one's
    assert abs(big["peak_memory_mb"] - 64) < 2 and abs(small["peak_memory_mb"] - 16) < 2
    assert failed["status"] == "failed" and failed["reason"] == "RuntimeError: asked to fail"
    assert killed["status"] == "failed" and killed["reason"] == "run process killed by signal 9 (out of memory?)"


def test_a_sweep_stores_the_same_runs_warm_or_cold(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLORA_BACKENDS", "fake_backends:BACKENDS")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ["PYTHONPATH"]]))
    experiment = load_experiment(TESTS / "data" / "sweep" / "small.toml")
    stored = {}
    for warm in (True, False):
        with Store(tmp_path / f"{warm}.db") as store:
            run_sweep(experiment, store, LocalExecutor(isolate=True, warm=warm), fake_backends.BACKENDS,
                      runs_dir=tmp_path / f"runs-{warm}", progress=False)
            stored[warm] = {r.key: (r.status, r.result.get("score")) for r in store.runs()}
    assert len(stored[True]) == 8 and stored[True] == stored[False]


def test_a_real_run_forked_warm_trains_as_one_started_cold(tmp_path, monkeypatch):
    """The starter imported torch, transformers and peft but ran nothing, so the forked run trains bit for bit as a
    new Python does (the same threads: the machine's cores)."""
    monkeypatch.delenv("KDLORA_BACKENDS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    from train_helpers import tiny_config

    config = tiny_config().to_dict()
    cold = execute_in_child("train", config, str(tmp_path / "cold"), False)
    with WarmStarter() as starter:
        warm = execute_in_child("train", config, str(tmp_path / "warm"), False, starter)
    assert cold["status"] == warm["status"] == "done" and cold["run_key"] == warm["run_key"]
    assert warm["history"] == cold["history"] and warm["last_metrics"] == cold["last_metrics"]
    assert warm["memory_kind"] == cold["memory_kind"] == "cpu-peak-rss-delta"


def test_make_executor():
    assert isinstance(make_executor("local"), LocalExecutor) and make_executor("local").isolate
    assert isinstance(make_executor("ray", "auto"), RayExecutor)
    with pytest.raises(UserError, match="--address only applies"):
        make_executor("local", "auto")
    with pytest.raises(UserError, match="unknown executor"):
        make_executor("dask")


@pytest.mark.slow
def test_ray_executor_on_a_local_ray(tmp_path, monkeypatch):
    import ray

    # local Ray workers inherit this environment: they import this checkout and the fake backends
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ["PYTHONPATH"]]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with Store(tmp_path / "r.db") as store:
            experiment = load_experiment(TESTS / "data" / "sweep" / "small.toml")
            summary = run_sweep(experiment, store, RayExecutor(), fake_backends.BACKENDS, progress=False)
            assert summary.ok and len(summary.ran) == 8
            runs = store.runs()
            assert {r.status for r in runs} == {"done"} and len(runs) == 8
            workers = {r.result["environment"].get("pid") for r in runs}
            assert os.getpid() not in workers  # the runs ran in Ray workers, the driver wrote the store
            kd = store.runs(method="kd-lora")
            assert all(r.result["config"]["teacher"] == store.get(r.config["teacher"][4:]).out_dir for r in kd)
    finally:
        ray.shutdown()


def test_parallel_local_runs_overlap_but_a_bench_runs_alone(tmp_path, monkeypatch):
    """--jobs 2: two train runs at once, the cores shared by the runs that can run then; a bench run never shares
    the machine, and a KD-LoRA run starts only after its FFT teacher ended. Each run records the most runs that
    ran while it ran and its threads: runs seen overlapping say 2, and runs running together never have more
    threads between them than the cores."""
    monkeypatch.setenv("KDLORA_BACKENDS", "fake_backends:BACKENDS")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ["PYTHONPATH"]]))
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    with Store(tmp_path / "r.db") as store:
        experiment = load_experiment(TESTS / "data" / "sweep" / "small.toml")
        summary = run_sweep(experiment, store, LocalExecutor(isolate=True, jobs=2), fake_backends.BACKENDS,
                            runs_dir=tmp_path / "runs", progress=False)
        assert summary.ok and len(summary.ran) == 8  # 2 bench (one per family) + 2 seeds x (FFT, LoRA, KD-LoRA)
        trains = {f"sst2/bert/{r.method}/{r.result['rank']}/{r.seed}": r.result for r in store.runs(kind="train")}
    cores = available_cores()
    for result in trains.values():
        assert result["environment"]["omp_num_threads"] == str(result["threads"])
        assert result["threads"] in (max(1, cores // 2), cores) and result["parallel_runs"] in (1, 2)
    events = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    running, most, order = set(), 0, []
    for event, ident in events:
        if event == "start":
            assert not any(r.startswith("bench/") for r in running), f"{ident} started during a bench run"
            assert not (ident.startswith("bench/") and running), f"a bench run started beside {running}"
            running.add(ident)
            most = max(most, len(running))
            if len(running) > 1:  # the runs seen together said so, and shared the cores
                assert all(trains[r]["parallel_runs"] == 2 for r in running), running
                assert sum(trains[r]["threads"] for r in running) <= max(cores, len(running)), running
        else:
            running.remove(ident)
        order.append((event, ident))
    assert most == 2  # the train runs did overlap
    for seed in (1, 2):
        teacher_end = order.index(("end", f"sst2/bert/fft/8/{seed}"))
        assert order.index(("start", f"sst2/bert/kd-lora/8/{seed}")) > teacher_end


def test_runs_that_could_only_run_one_after_another_say_so_and_get_every_core(tmp_path, monkeypatch):
    """Finding: with --jobs 2, a teacher and the student waiting for it recorded `parallel_runs 2` and ran with
    half the cores: the report said their seconds were measured sharing the CPU."""
    monkeypatch.setenv("KDLORA_BACKENDS", "fake_backends:BACKENDS")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ["PYTHONPATH"]]))
    chain = load_experiment(TESTS / "data" / "sweep" / "small.toml")
    chain = dataclasses.replace(chain, bench=None, train=dataclasses.replace(chain.train, methods=("kd-lora",),
                                                                              seeds=(1,)))
    with Store(tmp_path / "r.db") as store:
        run_sweep(chain, store, LocalExecutor(isolate=True, jobs=2), fake_backends.BACKENDS,
                  runs_dir=tmp_path / "runs", progress=False)
        runs = store.runs(kind="train")
        assert [r.method for r in runs] == ["fft", "kd-lora"]
        assert [(r.result["parallel_runs"], r.result["threads"]) for r in runs] == [(1, available_cores())] * 2
        assert [r.result["environment"]["omp_num_threads"] for r in runs] == [str(available_cores())] * 2
        assert "ran beside other runs" not in what_trained(runs)


@pytest.mark.parametrize("cgroups, files, cores", [
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 1),                       # v2, 1.5 cores: 1 whole core
    ("0::/job\n", {"job/cpu.max": "300000 100000\n"}, 3),                # v2, this process's own cgroup
    ("0::/\n", {"cpu.max": "max 100000\n"}, 8),                          # v2, no quota: the affinity's 8
    ("1:cpu,cpuacct:/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
                           "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 2),  # v1
    ("1:cpu,cpuacct:/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                           "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 8),  # v1, no quota
    ("0::/\n", {}, 8),                                                   # nothing readable: the affinity's
])
def test_available_cores_are_the_affinitys_capped_by_the_cgroup_quota(tmp_path, monkeypatch, cgroups, files, cores):
    """Finding: threads per run and --jobs auto came from os.cpu_count(), the machine's cores, not the container's."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert available_cores(cgroups, tmp_path) == cores


def test_jobs_is_checked():
    with pytest.raises(UserError, match="--jobs: 0 is not a positive integer"):
        make_executor("local", None, 0)
    with pytest.raises(UserError, match="--jobs only applies to --executor local"):
        make_executor("ray", None, 2)
    assert make_executor("local", None, 2).jobs == 2


def test_jobs_auto_is_one_run_per_num_cpus_cores_on_a_cpu_only_experiment(monkeypatch):
    from types import SimpleNamespace

    from kdlora.experiment import Resources
    from kdlora.sweep.executors import local_jobs

    monkeypatch.setattr(executors, "available_cores", lambda: 8)
    cpu_only = SimpleNamespace(resources=Resources(num_cpus=2, num_gpus=0))
    assert local_jobs("auto", cpu_only) == 4  # 8 cores / 2 per run
    assert local_jobs("auto", SimpleNamespace(resources=Resources(num_cpus=1, num_gpus=1))) == 1  # one GPU: 1
    assert local_jobs("auto", cpu_only, executor="ray") == 1  # Ray places runs by num_cpus itself
    assert local_jobs("3", cpu_only) == 3
    with pytest.raises(UserError, match="--jobs: 'many' is not a number or auto"):
        local_jobs("many", cpu_only)
