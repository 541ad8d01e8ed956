import os
from pathlib import Path

import pytest

import fake_backends  # tests/ is on sys.path (pytest's rootdir insertion)
from kdlora.errors import UserError
from kdlora.experiment import load_experiment
from kdlora.store import Store
from kdlora.sweep.backends import Backends
from kdlora.sweep.driver import run_sweep
from kdlora.sweep.executors import LocalExecutor, RayExecutor, execute, execute_in_child, make_executor

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
