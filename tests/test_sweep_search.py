"""kdlora sweep --search optuna: trials are store runs, a killed search resumes to the uninterrupted one's result."""

import dataclasses
import json
import os

import pytest

import fake_backends
from kdlora.cli import main
from kdlora.errors import UserError
from kdlora.experiment import parse_experiment
from kdlora.store import Store
from kdlora.sweep.backends import REAL
from kdlora.sweep.executors import LocalExecutor
from kdlora.sweep.search import run_search, study_name, study_path
from train_helpers import DATA

# the fake backends score a LoRA run 0.88 - 0.001 * rank + 10 * learning_rate (seed 42): the search has a slope
FAKE = """
name = "fake-search"
[train]
tasks = ["sst2"]
families = ["bert"]
methods = ["lora"]
[search]
learning_rate = { low = 1e-4, high = 1e-2, log = true }
rank = [2, 4, 8]
"""

TINY = f"""
name = "tiny-search"
[train]
tasks = ["sst2"]
families = ["bert"]
methods = ["kd-lora"]
[train.params]
tiny = true
data_dir = "{DATA / 'sst2'}"
device = "cpu"
epochs = 1
batch_size = 8
eval_steps = 1
[search]
learning_rate = {{ low = 1e-4, high = 1e-2, log = true }}
"""


class Killed(BaseException):
    """A kill as the search sees it: no run catches it, and the study's trial is left running."""


def _search(db, text=FAKE, backends=fake_backends.BACKENDS, trials=6):
    with Store(db) as store:
        return run_search(parse_experiment(text), store, LocalExecutor(), backends, trials, seed=3, progress=False)


def test_a_killed_search_resumes_to_the_uninterrupted_searchs_runs_and_best_trial(tmp_path, capsys):
    whole = _search(tmp_path / "whole.db")
    calls = []

    def killed_in_the_fourth_trial(config, out_dir, progress):
        calls.append(config)
        if len(calls) == 4:
            raise Killed
        return fake_backends.BACKENDS.train(config, out_dir, progress)

    with pytest.raises(Killed):
        _search(tmp_path / "killed.db", backends=dataclasses.replace(fake_backends.BACKENDS,
                                                                     train=killed_in_the_fourth_trial))
    with Store(tmp_path / "killed.db") as store:
        assert sorted(r.status for r in store.runs()) == ["done", "done", "done", "running"]
    resumed = _search(tmp_path / "killed.db")
    assert study_path(tmp_path / "killed.db") == tmp_path / "killed-search.db" and study_path(tmp_path / "killed.db"
                                                                                             ).is_file()
    with Store(tmp_path / "whole.db") as one, Store(tmp_path / "killed.db") as other:
        scores = {r.key: r.metrics["score"] for r in one.runs()}
        assert len(scores) == 6 and {r.status for r in one.runs()} == {"done"}
        assert {r.key: r.metrics["score"] for r in other.runs()} == scores and {r.status for r in other.runs()} == {
            "done"}
        configs = [(r.config["learning_rate"], r.config["rank"]) for r in one.runs()]
    assert len(set(configs)) == 6
    assert whole.trials == resumed.trials == 6 and whole.states == resumed.states == {"complete": 6}
    assert resumed.best["params"] == whole.best["params"] and resumed.best["run_keys"] == whole.best["run_keys"]
    best_lr, best_rank = whole.best["params"]["learning_rate"], whole.best["params"]["rank"]
    assert whole.best["score"] == pytest.approx(0.88 - 0.001 * best_rank + 10 * best_lr)
    assert whole.best["score"] == pytest.approx(max(scores.values()))
    # a search that is complete runs nothing more
    assert _search(tmp_path / "whole.db").best == whole.best
    log = capsys.readouterr().err
    assert log.count("trial ") == 6 + 3 + 3  # the killed trial never printed; its settings ran again as trial 4
    assert "trial 4: " in log and "trial 6: " in log


def test_the_sweep_command_searches_and_report_takes_the_top_k_median_of_its_trials(tmp_path, capsys, monkeypatch):
    tests = os.path.dirname(fake_backends.__file__)
    monkeypatch.setenv("KDLORA_BACKENDS", "fake_backends:BACKENDS")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "exp.toml").write_text(FAKE)
    db = str(tmp_path / "s.db")
    assert main(["sweep", str(tmp_path / "exp.toml"), "--search", "optuna", "--trials", "3", "--db", db,
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("search fake-search: 3 trials (3 complete); best: trial ")
    with Store(db) as store:
        scores = sorted((r.metrics["score"] for r in store.runs()), reverse=True)
    assert len(scores) == 3
    assert main(["report", "--db", db, "--out", str(tmp_path / "top"), "--select", "top-k-median", "--k", "2"]) == 0
    rows = json.loads((tmp_path / "top" / "results.json").read_text())["table_i"]["rows"]
    sst2 = next(r for r in rows if r["Task"] == "SST-2")
    assert sst2["BERT-base LoRA"] == pytest.approx(100 * (scores[0] + scores[1]) / 2)
    assert main(["sweep", str(tmp_path / "exp.toml"), "--search", "optuna", "--db", db]) == 2
    assert "--search optuna needs --trials N" in capsys.readouterr().err


def test_a_run_below_the_median_of_earlier_trials_is_pruned_with_its_best_state(tmp_path, capsys):
    """Five earlier trials scored 1.0 at every evaluation: the tiny student's first evaluation (0.5) is below."""
    import optuna

    experiment = parse_experiment(TINY)
    storage = f"sqlite:///{study_path(tmp_path / 't.db')}"
    study = optuna.create_study(study_name=study_name(experiment, experiment.search, 3), storage=storage,
                                direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    for n in range(5):
        study.add_trial(optuna.trial.create_trial(params={"learning_rate": 1e-3 + n * 1e-4},
                                                  distributions={"learning_rate": lr}, value=1.0,
                                                  intermediate_values={1: 1.0, 2: 1.0, 3: 1.0},
                                                  user_attrs={"finished": True}))
    summary = _search(tmp_path / "t.db", TINY, REAL)
    assert summary.states == {"complete": 5, "pruned": 1}
    with Store(tmp_path / "t.db") as store:
        (teacher,), (student,) = store.runs(method="fft"), store.runs(method="kd-lora")
    # 24 training rows at batch 8 are 3 steps: the student is pruned at its first evaluation, its FFT teacher
    # (not searched) trains them all
    # stored done with the flag, read back as `pruned`: it stands for no full run
    assert student.status == "pruned" and "pruned" in student.flags and student.result["steps"] == 1
    assert student.result["history"] == [{"epoch": 1, "step": 1, "score": 0.5}]
    assert teacher.status == "done" and "pruned" not in teacher.flags and teacher.result["steps"] == 3
    assert "-> pruned" in capsys.readouterr().err


def test_a_trial_with_several_searched_runs_prunes_run_by_run(tmp_path, capsys):
    """Finding: pruning was silently off whenever a trial had more than one searched run. Two seeds: run 0 (seed 1)
    reports steps 1..3, run 1 (seed 2) steps RUN_STEPS + 1..3. Five earlier trials scored 1.0 at run 0's steps and
    0.0 at run 1's: run 0's first evaluation (0.5) is below its median, so it is pruned; run 1 alone is above its
    own median (0.0), yet stops at its first evaluation: its trial is pruned already."""
    import optuna

    from kdlora.trial import RUN_STEPS

    text = TINY.replace('methods = ["kd-lora"]', 'methods = ["kd-lora"]\nseeds = [1, 2]')
    experiment = parse_experiment(text)
    storage = f"sqlite:///{study_path(tmp_path / 't.db')}"
    study = optuna.create_study(study_name=study_name(experiment, experiment.search, 3), storage=storage,
                                direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    earlier = {1: 1.0, 2: 1.0, 3: 1.0, RUN_STEPS + 1: 0.0, RUN_STEPS + 2: 0.0, RUN_STEPS + 3: 0.0}
    for n in range(5):
        study.add_trial(optuna.trial.create_trial(params={"learning_rate": 1e-3 + n * 1e-4},
                                                  distributions={"learning_rate": lr}, value=0.5,
                                                  intermediate_values=earlier, user_attrs={"finished": True}))
    summary = _search(tmp_path / "t.db", text, REAL)
    assert summary.states == {"complete": 5, "pruned": 1}
    with Store(tmp_path / "t.db") as store:
        students = store.runs(method="kd-lora")
    assert sorted(r.seed for r in students) == [1, 2]
    assert all(r.status == "pruned" and r.result["steps"] == 1 for r in students)
    [trial] = [t for t in optuna.load_study(study_name=study.study_name, storage=storage).get_trials()
               if t.number == 5]
    assert sorted(trial.intermediate_values) == [1, RUN_STEPS + 1]


def test_search_ranges_are_checked_where_they_are_written():
    bad = {"learning_rat = { low = 1e-4, high = 1e-2 }": "not a setting a search can vary",
           "learning_rate = { low = 1e-2, high = 1e-4 }": "low 0.01 must be below high 0.0001",
           "rank = []": "a choice needs a non-empty list",
           "seed = [1, 2]": "not a setting a search can vary",
           "epochs = 3": "a list of choices or a table"}
    for line, message in bad.items():
        text = FAKE.split("[search]")[0] + "[search]\n" + line + "\n"
        with pytest.raises(UserError, match=message) as caught:
            parse_experiment(text, "grid.toml")
        assert str(caught.value).startswith("grid.toml: [search] ")


@pytest.mark.slow
def test_a_search_runs_its_trials_on_ray_workers(tmp_path, monkeypatch):
    import ray

    from kdlora.sweep.executors import RayExecutor

    tests = os.path.dirname(fake_backends.__file__)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with Store(tmp_path / "r.db") as store:
            summary = run_search(parse_experiment(FAKE), store, RayExecutor(), fake_backends.BACKENDS, 2, seed=3,
                                 progress=False)
            runs = store.runs()
    finally:
        ray.shutdown()
    assert summary.states == {"complete": 2} and {r.status for r in runs} == {"done"} and len(runs) == 2
    assert os.getpid() not in {r.result["environment"]["pid"] for r in runs}  # Ray workers ran them
    assert summary.best["run_keys"][0] in {r.key for r in runs}
