import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fake_backends  # tests/ is on sys.path (pytest's rootdir insertion)
from kdlora.analysis.store_report import write_study_report
from kdlora.cli import main
from kdlora.experiment import load_experiment, parse_experiment
from kdlora.store import Store
from kdlora.sweep.driver import run_sweep
from kdlora.sweep.executors import LocalExecutor
from kdlora.sweep.expand import expand

TESTS = Path(__file__).parent
SMALL = TESTS / "data" / "sweep" / "small.toml"
GRID = """
name = "grid"
[train]
tasks = ["sst2", "rte"]
families = ["bert"]
methods = ["fft", "lora", "kd-lora"]
ranks = [8, 16]
seeds = [1, 2]
"""


def test_grid_expansion_counts_and_order():
    specs = expand(parse_experiment(GRID), fake_backends.BACKENDS)
    by_method = {m: [s for s in specs if s.fields["method"] == m] for m in ("fft", "lora", "kd-lora")}
    # FFT once per (task, family, seed): ranks only apply to LoRA methods
    assert len(by_method["fft"]) == 2 * 2 and all(s.fields["rank"] is None for s in by_method["fft"])
    assert len(by_method["lora"]) == len(by_method["kd-lora"]) == 2 * 2 * 2
    assert len(specs) == 20 and len({s.key for s in specs}) == 20
    position = {s.key: i for i, s in enumerate(specs)}
    for spec in by_method["kd-lora"]:
        [needed] = spec.needs  # FFT has one configuration here: it is the teacher, best or first
        teacher = specs[position[needed]]
        assert teacher.fields == {**spec.fields, "method": "fft", "rank": None}
        assert position[needed] < position[spec.key]
        assert spec.config["teacher"] == "run:" + needed and spec.teacher_from == "first"
    assert all(s.needs == () for s in by_method["lora"] + by_method["fft"])
    assert {s.config["rank"] for s in by_method["lora"]} == {8, 16}


def test_kd_lora_alone_brings_its_teachers():
    specs = expand(parse_experiment(GRID.replace('["fft", "lora", "kd-lora"]', '["kd-lora"]')),
                   fake_backends.BACKENDS)
    assert [s.fields["method"] for s in specs].count("fft") == 4 and len(specs) == 12


def test_per_method_params_and_stable_keys():
    specs = expand(load_experiment(SMALL), fake_backends.BACKENDS)
    assert [s.label for s in specs[:3]] == ["bench bert", "bench roberta", "train sst2 bert fft s1"]
    fft, lora = specs[2], specs[3]
    assert fft.config["learning_rate"] == 1e-4 and lora.config["learning_rate"] is None
    assert fft.config["epochs"] == lora.config["epochs"] == 2
    assert [s.key for s in specs] == [s.key for s in expand(load_experiment(SMALL), fake_backends.BACKENDS)]


def _sweep(store, text=None, **kwargs):
    experiment = parse_experiment(text) if text else load_experiment(SMALL)
    return run_sweep(experiment, store, LocalExecutor(), fake_backends.BACKENDS, progress=False, **kwargs)


def test_sweep_skips_done_and_keeps_failed_until_asked(tmp_path):
    failing = GRID.replace("ranks = [8, 16]", "ranks = [8]").replace("seeds = [1, 2]", "seeds = [1]") + \
        "[train.per_method.fft]\nfail = true\n"
    with Store(tmp_path / "r.db") as store:
        first = _sweep(store, failing)
        assert first.total == 6 and sorted(first.ran.values()) == ["done"] * 2 + ["failed"] * 4
        kd = store.runs(method="kd-lora")
        assert all(r.status == "failed" and "FFT teacher run" in r.reason for r in kd)
        assert "RuntimeError: asked to fail" in store.runs(method="fft")[0].reason
        second = _sweep(store, failing)
        assert second.ran == {} and second.skipped == 2 and second.failed_kept == 4 and not second.ok
        assert "pass --rerun-failed" in second.line()
        third = _sweep(store, failing, rerun_failed=True)
        assert len(third.ran) == 4
        assert {r.attempts for r in store.runs(status="failed")} == {2}


def test_sweep_runs_kd_lora_with_its_teachers_folder(tmp_path):
    with Store(tmp_path / "r.db") as store:
        summary = _sweep(store)
        assert summary.ok and len(summary.ran) == 8
        kd = store.runs(method="kd-lora")[0]
        teacher = store.runs(method="fft", seed=kd.seed)[0]
        assert kd.result["config"]["teacher"] == teacher.out_dir
        assert kd.config["teacher"] == "run:" + teacher.key  # the stored config keeps the location-free form
        assert Path(teacher.out_dir, "metrics.json").is_file()
        assert _sweep(store).skipped == 8


def test_a_pruned_run_never_stands_in_for_a_run(tmp_path):
    """Finding: a run a search's pruner stopped was stored done (flag `pruned`): a later plain sweep reused it."""
    with Store(tmp_path / "r.db") as store:
        _sweep(store)
        lora = store.runs(method="lora", seed=1)[0]
        store.start(lora.key, "train", lora.label, lora.config, lora.out_dir)
        store.finish(lora.key, {**lora.result, "flags": ["pruned"], "score": 0.1, "train_seconds": 0.97})
        assert store.get(lora.key).status == "pruned" and store.statuses()[lora.key] == "pruned"
        assert [r.key for r in store.runs(status="pruned")] == [lora.key] and len(store.runs(status="done")) == 7
        again = _sweep(store)
        assert again.ran == {lora.key: "done"} and again.skipped == 7
        assert store.get(lora.key).status == "done" and store.get(lora.key).flags == []


def test_a_report_leaves_pruned_runs_out_and_says_so(tmp_path):
    with Store(tmp_path / "r.db") as store:
        _sweep(store)
        lora = store.runs(method="lora", seed=1)[0]
        store.start(lora.key, "train", lora.label, lora.config, lora.out_dir)
        store.finish(lora.key, {**lora.result, "flags": ["pruned"], "score": 0.1, "train_seconds": 0.97})
        results = write_study_report(store, tmp_path / "report")
    assert results["runs"]["train"] == {"done": 5, "pruned": 1}
    [lora_figure] = [a for a in results["aggregates"] if a["method"] == "lora"]
    # only seed 2 counts: the fake score 0.88 + 0.01 x (2 % 3) - 0.001 x 8 = 0.892, not the pruned run's 0.1
    assert lora_figure["n"] == 1 and lora_figure["median"] == pytest.approx(0.892)
    assert lora_figure["train_seconds"] == 600.0 / 100
    assert ("1 run stopped early by a search's pruner (status `pruned`): left out of every figure" in
            (tmp_path / "report" / "report.md").read_text())


def test_resume_reruns_a_done_teacher_whose_folder_is_damaged(tmp_path, capsys):
    """A sweep that stopped after the FFT teacher; its folder then lost metrics.json: the teacher runs again."""
    alone = GRID.replace('methods = ["fft", "lora", "kd-lora"]', 'methods = ["fft"]').replace(
        'tasks = ["sst2", "rte"]', 'tasks = ["sst2"]').replace("seeds = [1, 2]", "seeds = [1]")
    with Store(tmp_path / "r.db") as store:
        assert list(_sweep(store, alone).ran.values()) == ["done"]
        teacher = store.runs(method="fft")[0]
        (Path(teacher.out_dir) / "metrics.json").unlink()
        capsys.readouterr()
        summary = _sweep(store, alone.replace('methods = ["fft"]', 'methods = ["fft", "kd-lora"]'))
        assert list(summary.ran) == [teacher.key] + [r.key for r in store.runs(method="kd-lora")]
        assert summary.skipped == 0 and summary.ok
        err = capsys.readouterr().err.strip()
        assert err == f"sweep: train sst2 bert fft s1 is done but its folder is damaged ({teacher.out_dir}/" \
            "metrics.json: missing; the kdlora run folder is damaged: re-run it, or pass --no-verify to load " \
            "anyway): running it again"
        assert (Path(teacher.out_dir) / "metrics.json").is_file()


def test_runs_command_formats(tmp_path, capsys, monkeypatch):
    with Store(tmp_path / "r.db") as store:
        _sweep(store)
    capsys.readouterr()
    assert main(["runs", "--db", str(tmp_path / "r.db"), "--method", "KD_LoRA", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("key,kind,status,task,family,method,rank,seed,score") and len(lines) == 3
    assert all(",kd-lora,8," in line for line in lines[1:])
    assert main(["runs", "--db", str(tmp_path / "r.db"), "--kind", "bench", "--format", "json"]) == 0
    import json

    assert [r["family"] for r in json.loads(capsys.readouterr().out)] == ["bert", "roberta"]
    assert main(["runs", "--db", str(tmp_path / "r.db"), "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("3 runs in " + str(tmp_path / "r.db")) and "0.892" in out


@pytest.mark.slow
def test_resume_after_kill_minus_9(tmp_path):
    """A real `kdlora sweep` subprocess killed mid-run, then the same command again."""
    log = tmp_path / "runs.log"
    env = {**os.environ, "KDLORA_BACKENDS": "fake_backends:BACKENDS", "FAKE_SLEEP": "0.4", "FAKE_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ["PYTHONPATH"]])}
    command = [sys.executable, "-m", "kdlora", "sweep", str(SMALL), "--db", str(tmp_path / "r.db"), "--no-progress"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once three runs are finished and the fourth has started
        events = log.read_text().split("\n") if log.exists() else []
        if sum(e.startswith("end") for e in events) == 3 and sum(e.startswith("start") for e in events) == 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.6)  # longer than a run: the run's child process died with the driver and never finished
    first = log.read_text().splitlines()
    assert sum(e.startswith("end") for e in first) == 3
    interrupted = [e.split()[1] for e in first if e.startswith("start")][-1]
    with Store(tmp_path / "r.db", readonly=True) as store:
        assert sorted(store.statuses().values()) == ["done"] * 3 + ["running"]

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "8 runs: ran 5 (5 done), 3 already done" in again.stdout
    events = log.read_text().splitlines()
    started = [e.split()[1] for e in events if e.startswith("start")]
    ended = [e.split()[1] for e in events if e.startswith("end")]
    assert sorted(set(ended)) == sorted(ended) and len(ended) == 8  # every run finished exactly once
    assert started.count(interrupted) == 2 and len(started) == 9  # only the interrupted one ran twice
    with Store(tmp_path / "r.db", readonly=True) as store:
        runs = store.runs()
        assert len(runs) == 8 and {r.status for r in runs} == {"done"}
        assert sorted(r.attempts for r in runs) == [1] * 7 + [2]



TEACHER_GRID = """
name = "teachers"
[train]
tasks = ["sst2"]
families = ["bert"]
methods = ["fft", "kd-lora"]
seeds = [1]
{teacher}
[train.per_method.fft]
learning_rate = [0.001, 0.003, 0.002]
"""
"""Fake FFT scores 0.90 + 0.01 + 10 x learning rate: 0.93, 0.95, 0.94, so the second configuration is FFT's best."""


@pytest.mark.parametrize("teacher, chosen", [("", 1), ('teacher = "best"', 1), ('teacher = "first"', 0)])
def test_kd_lora_distils_from_ffts_best_configuration_unless_asked_for_the_first(tmp_path, teacher, chosen):
    """Finding: a grid's KD-LoRA runs distilled from FFT's first configuration, not its best by dev score."""
    with Store(tmp_path / "r.db") as store:
        summary = _sweep(store, TEACHER_GRID.format(teacher=teacher))
        assert summary.ok and len(summary.ran) == 4
        ffts = sorted(store.runs(method="fft"), key=lambda r: r.config["learning_rate"])  # 0.001, 0.002, 0.003
        fft = {0: ffts[0], 1: ffts[2]}[chosen]  # first listed: 0.001; best: 0.003 (0.95)
        [kd] = store.runs(method="kd-lora")
        assert kd.result["config"]["teacher"] == fft.out_dir
        selection = "first" if 'first' in teacher else "best"
        assert kd.result["teacher_run"] == {"selection": selection, "key": fft.key, "score": fft.metrics["score"],
                                            "candidates": 1 if selection == "first" else 3}
        results = write_study_report(store, tmp_path / "report")
        assert results["teachers"] == {selection: 1}
        said = {"best": "FFT's best configuration by dev score (of the same task, family and seed) for 1 run.",
                "first": "FFT's first configuration (the experiment's `teacher = \"first\"`) for 1 run."}[selection]
        assert f"KD-LoRA's teacher: {said}" in (tmp_path / "report" / "report.md").read_text()


def test_a_best_teacher_waits_for_every_candidate(tmp_path):
    failing = TEACHER_GRID.format(teacher="") + "fail = [false, true]\n"  # 3 learning rates x 2: 3 of 6 fail
    with Store(tmp_path / "r.db") as store:
        _sweep(store, failing)
        [kd] = store.runs(method="kd-lora")
        failed = next(r for r in store.runs(method="fft") if r.status == "failed")  # the first listed that failed
        assert kd.status == "failed" and kd.reason == (f"3 of its 6 FFT teacher candidates are not done (run "
                                                       f"{failed.key[:12]} is failed)")
