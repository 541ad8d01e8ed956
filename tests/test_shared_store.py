"""Several sweeps and searches on one results store: each run trained once, a dead claimant's work taken over, a
live one's never; a search space with an invalid point refused up front, or its failing trial recorded and passed.
"""

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

import fake_backends
from kdlora import lease
from kdlora.cli import main
from kdlora.experiment import load_experiment, parse_experiment
from kdlora.store import CLAIMED, HELD, Store
from kdlora.sweep.backends import REAL, Backends
from kdlora.sweep.driver import Driver, run_folder, run_sweep, runs_dir_for
from kdlora.sweep.executors import LocalExecutor
from kdlora.sweep.expand import expand
from kdlora.sweep.search import run_search, study_name, study_path
from test_sweep_search import FAKE

TESTS = Path(__file__).parent
SMALL = TESTS / "data" / "sweep" / "small.toml"
"""Six train runs (FFT, LoRA, KD-LoRA x two seeds) and two bench runs."""


def _env(tmp_path, **extra) -> dict:
    return {**os.environ, "KDLORA_BACKENDS": "fake_backends:BACKENDS", "FAKE_LOG": str(tmp_path / "runs.log"),
            "FAKE_GATE": str(tmp_path / "gate"), "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ["PYTHONPATH"]]),
            **extra}


def _open_gate_when_both_started(tmp_path, processes) -> None:
    """Every fake train run waits at the gate: open it once two runs started, one in each process (a process
    that claimed one run passes over it to the next, which the other holds)."""
    log, deadline = tmp_path / "runs.log", time.monotonic() + 120
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        if log.exists() and log.read_text().count("start ") >= 2:
            break
        time.sleep(0.05)
    (tmp_path / "gate").touch()


@pytest.mark.slow
def test_two_sweep_processes_on_one_store_train_each_run_once(tmp_path):
    """Finding: two sweeps on one store both ran every run (attempts 2 on all, twice the time)."""
    command = [sys.executable, "-m", "kdlora", "sweep", str(SMALL), "--db", str(tmp_path / "r.db"), "--no-progress"]
    sweeps = [subprocess.Popen(command, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    _open_gate_when_both_started(tmp_path, sweeps)
    outputs = [p.communicate(timeout=120) for p in sweeps]
    assert [p.returncode for p in sweeps] == [0, 0], outputs
    ran = [int(re.search(r"sweep small: 8 runs: ran (\d+) ", out).group(1)) for out, _ in outputs]
    assert sum(ran) == 8 and min(ran) >= 1  # the work was split, and each run went to one of them
    started = [line.split()[1] for line in (tmp_path / "runs.log").read_text().splitlines() if line[:5] == "start"]
    assert len(started) == len(set(started)) == 8  # six train runs and two bench runs, once each
    with Store(tmp_path / "r.db", readonly=True) as store:
        runs = store.runs()
        assert len(runs) == 8 and {r.status for r in runs} == {"done"} and {r.attempts for r in runs} == {1}
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM leases").fetchone() == (0,)  # each sweep dropped its leases
    conn.close()


def _ended_process_id() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _first_teacher(experiment):
    """The seed-1 FFT run (a bench run comes first in the sweep's order)."""
    return next(s for s in expand(experiment, fake_backends.BACKENDS) if s.fields.get("method") == "fft")


DEAD = {
    "another machine, heartbeat past the timeout": lambda: (lease.Claimant("ghost", "elsewhere/boot", 4242),
                                                            time.time() - lease.TIMEOUT_S - 1),
    "this machine, process gone": lambda: (lease.Claimant("ghost", lease._machine(), _ended_process_id()),
                                           time.time()),
}


@pytest.mark.parametrize("how", DEAD)
def test_a_run_whose_sweep_died_is_claimed_again_and_run(tmp_path, how):
    experiment = load_experiment(SMALL)
    first = _first_teacher(experiment)
    ghost, heartbeat = DEAD[how]()
    with Store(tmp_path / "r.db") as store:
        assert store.claim(first.key, first.kind, first.label, first.config, None, first.fields, ghost, None) == CLAIMED
        store._conn.execute("UPDATE leases SET heartbeat = ?", (heartbeat,))
        summary = run_sweep(experiment, store, LocalExecutor(), fake_backends.BACKENDS, progress=False)
        assert summary.ran[first.key] == "done" and len(summary.ran) == 8 and summary.ok
        assert store.get(first.key).attempts == 2  # the dead sweep's attempt and this one


def test_a_run_a_live_sweep_holds_is_waited_for_and_not_run_again(tmp_path, monkeypatch):
    monkeypatch.setattr(Driver, "POLL_S", 0.05)
    experiment = load_experiment(SMALL)
    first = _first_teacher(experiment)  # its KD-LoRA run waits for it
    other = lease.Claimant("other", "elsewhere/boot", 4242)  # another machine's sweep, beating
    with Store(tmp_path / "r.db") as store:
        out = run_folder(runs_dir_for(tmp_path / "r.db"), first)  # the folder every sweep of the store uses
        store.claim(first.key, first.kind, first.label, first.config, str(out), first.fields, other, None)

        def other_sweep_finishes():
            time.sleep(0.5)
            with Store(tmp_path / "r.db") as its_store:
                its_store.finish(first.key, fake_backends.train(first.config, out, False), "other")

        finisher = threading.Thread(target=other_sweep_finishes)
        finisher.start()
        summary = run_sweep(experiment, store, LocalExecutor(), fake_backends.BACKENDS, progress=False)
        finisher.join()
        assert summary.elsewhere == {first.key: "done"} and first.key not in summary.ran and len(summary.ran) == 7
        assert summary.line() == "8 runs: ran 7 (7 done), 0 already done, 1 run by another sweep (1 done)"
        assert store.get(first.key).attempts == 1


def test_a_claim_is_held_by_its_live_claimant_and_only_its_own_finish_counts(tmp_path):
    mine, theirs = lease.Claimant.this_process(), lease.Claimant("other", "elsewhere/boot", 4242)
    with Store(tmp_path / "r.db") as store:
        assert store.claim("k", "train", "k", {}, None, None, theirs, None) == CLAIMED
        assert store.claim("k", "train", "k", {}, None, None, mine, None) == HELD
        store._conn.execute("UPDATE leases SET heartbeat = ?", (time.time() - lease.TIMEOUT_S - 1,))
        assert store.claim("k", "train", "k", {}, None, None, mine, None) == CLAIMED  # theirs went silent
        assert store.finish("k", {"status": "done"}, "other") is None  # theirs comes back late: not recorded
        assert store.get("k").status == "running"
        assert store.finish("k", {"status": "done"}, mine.owner) == "done"
        assert store.get("k").attempts == 2


# -- searches --

def _study(db: Path, text: str, seed: int = 0):
    experiment = parse_experiment(text)
    return optuna.load_study(study_name=study_name(experiment, experiment.search, seed),
                             storage=f"sqlite:///{study_path(db)}")


@pytest.mark.slow
def test_two_search_processes_on_one_study_finish_its_trials_together(tmp_path):
    """Finding: the second search marked the first's live trial interrupted: `UpdateFinishedTrialError`."""
    (tmp_path / "search.toml").write_text(FAKE)
    command = [sys.executable, "-m", "kdlora", "sweep", str(tmp_path / "search.toml"), "--search", "optuna",
               "--trials", "4", "--db", str(tmp_path / "r.db"), "--no-progress"]
    searches = []
    for _ in range(2):  # the first creates the study; the second starts once it exists
        searches.append(subprocess.Popen(command, env=_env(tmp_path), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True))
        while not searches[0].poll() and not study_path(tmp_path / "r.db").exists():
            time.sleep(0.05)
    _open_gate_when_both_started(tmp_path, searches)
    outputs = [p.communicate(timeout=180) for p in searches]
    assert [p.returncode for p in searches] == [0, 0], outputs
    assert all("Error" not in err for _, err in outputs)
    trials = _study(tmp_path / "r.db", FAKE).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    told = [line for _, err in outputs for line in err.splitlines() if line.startswith("trial ")]
    assert sorted(int(line.split()[1].rstrip(":")) for line in told) == [0, 1, 2, 3]  # each told by one search
    assert min(sum(line.startswith("trial ") for line in err.splitlines()) for _, err in outputs) >= 1
    with Store(tmp_path / "r.db", readonly=True) as store:
        assert len(store.runs()) == 4 and {r.attempts for r in store.runs()} == {1}




def _running_trial(study, params: dict, claimant: lease.Claimant | None, heartbeat: float):
    study.enqueue_trial(params)
    trial = study.ask()
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("rank", [2, 4, 8])
    if claimant is not None:
        trial.set_user_attr("claimant", claimant.to_dict())
        trial.set_user_attr("heartbeat", heartbeat)
    return trial


def test_a_live_searchs_trial_is_left_to_it_and_a_dead_ones_is_run_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("kdlora.sweep.search.WAIT_S", 0.05)
    db = tmp_path / "r.db"
    experiment = parse_experiment(FAKE)
    Store(db).close()
    study = optuna.create_study(study_name=study_name(experiment, experiment.search, 3),
                                storage=f"sqlite:///{study_path(db)}", direction="maximize")
    live = _running_trial(study, {"learning_rate": 1e-3, "rank": 4}, lease.Claimant("live", "elsewhere/b", 7),
                          time.time())
    dead = _running_trial(study, {"learning_rate": 2e-3, "rank": 8}, lease.Claimant("dead", "elsewhere/b", 8),
                          time.time() - lease.TIMEOUT_S - 1)
    failures = []

    def live_search_tells():  # the live search's run ends and it tells its trial, as its process would
        time.sleep(1.0)
        try:
            _study(db, FAKE, 3).tell(live.number, 0.5)
        except Exception as exc:  # noqa: BLE001 (recorded for the assertion below)
            failures.append(exc)

    teller = threading.Thread(target=live_search_tells)
    teller.start()
    with Store(db) as store:
        summary = run_search(experiment, store, LocalExecutor(), fake_backends.BACKENDS, 3, seed=3, progress=False)
    teller.join()
    assert failures == []
    trials = _study(db, FAKE, 3).get_trials()
    assert trials[live.number].state.name == "COMPLETE" and trials[live.number].value == 0.5
    assert trials[dead.number].state.name == "FAIL"  # its search died: interrupted, and its settings run again
    again = [t for t in trials if t.number > dead.number and t.params == dead.params]
    assert len(again) == 1 and again[0].state.name == "COMPLETE"
    # 3 finished: the live one (told by its search) and two of this search's, the dead one's settings first
    assert summary.trials == 3 and summary.states == {"complete": 3}
    assert [t.number for t in trials if t.state.name == "COMPLETE"] == [live.number, again[0].number,
                                                                         again[0].number + 1]


ADALORA = """
name = "adalora-search"
[train]
tasks = ["sst2"]
families = ["bert"]
methods = ["adalora"]
[train.params]
tiny = true
[search]
"""


def _score_by_rank(config: dict, out_dir: Path, progress: bool) -> dict:
    """A run that trains nothing: score 0.5 + 0.01 x rank (the real backends validate its settings)."""
    score = 0.5 + 0.01 * config["rank"]
    return {"status": "done", "metrics": {"accuracy": score}, "score": score, "config": config}


CHECKED_ONLY = Backends(REAL.train_config, _score_by_rank, REAL.bench_settings, REAL.bench, REAL.train_key)


def test_a_searched_value_no_run_can_take_is_refused_before_the_study_starts(tmp_path, capsys):
    (tmp_path / "search.toml").write_text(ADALORA + "rank = [2, 8]\n")  # AdaLoRA's target_rank is 4 by default
    code = main(["sweep", str(tmp_path / "search.toml"), "--search", "optuna", "--trials", "2", "--db",
                 str(tmp_path / "r.db")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'search.toml'}: [search] rank = 2: no run can take it (" in err
    assert "target_rank" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search.toml"]  # no store, no study


def test_a_trial_whose_settings_fail_together_is_recorded_failed_and_the_search_goes_on(tmp_path, capsys):
    """Finding: a trial with invalid settings raised out of the search, stayed running, and every restart re-queued
    it first: the search was blocked for good."""
    text = ADALORA + "rank = [2, 8]\ntarget_rank = [1, 4]\n"  # each value valid with some other; (2, 4) is not
    db = tmp_path / "r.db"
    experiment = parse_experiment(text)
    Store(db).close()
    study = optuna.create_study(study_name=study_name(experiment, experiment.search, 0),
                                storage=f"sqlite:///{study_path(db)}", direction="maximize")
    study.enqueue_trial({"rank": 2, "target_rank": 4})  # what the search before left running when it raised
    stuck = study.ask()
    stuck.suggest_categorical("rank", [2, 8])
    stuck.suggest_categorical("target_rank", [1, 4])
    study.enqueue_trial({"rank": 8, "target_rank": 4})
    study.enqueue_trial({"rank": 2, "target_rank": 1})
    with Store(db) as store:
        summary = run_search(experiment, store, LocalExecutor(), CHECKED_ONLY, 3, progress=False)
    trials = _study(db, text).get_trials()
    # trial 0 interrupted; 1 and 2 as queued; 3 is trial 0's settings again, recorded failed with the reason
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE", "FAIL"]
    assert [t.value for t in trials[1:3]] == [0.5 + 0.01 * 8, 0.5 + 0.01 * 2]
    assert trials[3].params == {"rank": 2, "target_rank": 4} and "target_rank" in trials[3].user_attrs["reason"]
    assert summary.trials == 3 and summary.states == {"complete": 2, "fail": 1}
    assert "trial 3: rank=2 target_rank=4 -> failed (settings: " in capsys.readouterr().err
