"""Step evaluation, checkpoints and resume: a run killed with SIGKILL after a checkpoint, resumed, ends exactly as
an uninterrupted run with the same seed (metrics, history and trained weights)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdlora.cli import main
from kdlora.errors import UserError
from kdlora.store import Store
from kdlora.sweep.backends import real_train
from kdlora.sweep.driver import Driver
from kdlora.sweep.expand import RunSpec
from kdlora.train import run_training
from kdlora.train.checkpoint import has_checkpoint, resume_source
from train_helpers import DATA, tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_check import KILLER  # noqa: E402  (the GPU check's kill-after-N-checkpoints `kdlora train`)

# 24 sst2 examples, batch 2, two batches per optimiser step: 6 steps an epoch, 12 in all; dev every 2 steps
FLAGS = ["--task", "sst2", "--family", "bert", "--method", "lora", "--tiny", "--device", "cpu", "--epochs", "2",
         "--batch-size", "2", "--grad-accum", "2", "--eval-steps", "2", "--learning-rate", "0.01",
         "--data-dir", str(DATA / "sst2"), "--save-checkpoints", "--quiet"]

def _train(args, kill_after=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_AFTER": str(kill_after or 0)}
    code = KILLER if kill_after else "import sys; from kdlora.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "train", *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    whole = _train([*FLAGS, "--out", str(tmp_path / "whole")])
    assert whole.returncode in (0, 1), whole.stderr
    killed = _train([*FLAGS, "--out", str(tmp_path / "killed")], kill_after=3)  # mid-epoch 2, after step 6's eval
    assert killed.returncode == -9
    assert not (tmp_path / "killed" / "metrics.json").exists() and has_checkpoint(tmp_path / "killed")
    shutil.copytree(tmp_path / "killed", tmp_path / "swept")  # the same interrupted run, for a sweep to finish
    resumed = _train([*FLAGS, "--out", str(tmp_path / "killed"), "--resume"])
    assert resumed.returncode == whole.returncode, resumed.stderr
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert b["resumed_at_step"] == 6 and a["resumed_at_step"] is None
    assert (a["cost_covers"], b["cost_covers"]) == ("whole run", "after resume")  # b's costs: steps 7..12 only
    assert a["steps"] == b["steps"] == 12
    assert [h["step"] for h in a["history"]] == [2, 4, 6, 8, 10, 12]
    for key in ("metrics", "score", "history", "best_step", "status"):
        assert a[key] == b[key], key
    weights_a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    weights_b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    # exact on any CPU: the resumed run trains the same batches in the same order, one thread, as the whole one
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    # a sweep reruns an interrupted run through its backend, which resumes from the checkpoint it finds
    torch.set_num_threads(1)
    swept = real_train(a["config"], tmp_path / "swept", False)
    assert swept["resumed_at_step"] == 6
    for key in ("metrics", "score", "history", "best_step", "status"):
        assert swept[key] == a[key], key


@pytest.mark.slow
def test_a_killed_adalora_run_allocates_its_budget_as_the_uninterrupted_one(tmp_path):
    """Finding: AdaLoRA's importance scores live on PEFT's rank allocator, outside the weights and the optimiser, so
    a resumed run restarted them from zero and masked other singular values than an uninterrupted run."""
    # 12 optimiser steps: tinit 0.1 -> 1 step at the full budget, tfinal 0.2 -> the last 2 fixed; killed after step
    # 6, in the middle of the budgeting steps 2..10
    flags = [*FLAGS, "--method", "adalora", "--rank", "4", "--target-rank", "2"]
    whole = _train([*flags, "--out", str(tmp_path / "whole")])
    assert whole.returncode in (0, 1), whole.stderr
    killed = _train([*flags, "--out", str(tmp_path / "killed")], kill_after=3)
    assert killed.returncode == -9
    resumed = _train([*flags, "--out", str(tmp_path / "killed"), "--resume"])
    assert resumed.returncode == whole.returncode, resumed.stderr
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert b["resumed_at_step"] == 6
    budget = a["method_details"]
    assert budget["total_step"] == 12 and budget["final_budget"] == budget["target_budget"]
    assert b["method_details"] == budget and b["history"] == a["history"]
    weights_a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    weights_b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    # a checkpoint written before the budget state was saved (its third custom object) resumes with one line
    old = _train([*flags, "--out", str(tmp_path / "old")], kill_after=3)
    assert old.returncode == -9
    saved = [p for p in (tmp_path / "old").rglob("custom_checkpoint_2.pkl")]
    assert saved
    for path in saved:
        path.unlink()
    refused = _train([*flags, "--out", str(tmp_path / "old"), "--resume"])
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()[-1:]
    assert line.startswith("kdlora train: error: ") and line.endswith(
        "the checkpoint holds 2 training states where this run saves 3 (an older kdlora wrote it); remove "
        f"{tmp_path / 'old' / 'checkpoints'} to start afresh"), refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_sweep_keeps_an_interrupted_runs_checkpoints_only(tmp_path):
    with Store(tmp_path / "r.db") as store:
        spec = RunSpec("k" * 64, "train", "train sst2 bert fft s1", {"task": "sst2"})
        driver = Driver(store, [spec], tmp_path / "runs")
        out = driver.out_dir(spec)
        (out / "checkpoints" / "last").mkdir(parents=True)
        (out / "checkpoints" / "last" / "optimizer.bin").write_bytes(b"state")
        (out / "tracking").mkdir()
        (out / "metrics.json").write_text("{")
        driver.prepare(spec)
        assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]
        assert (out / "checkpoints" / "last" / "optimizer.bin").read_bytes() == b"state"


def test_checkpoints_hold_trainable_weights_only_and_the_best_is_kept(tmp_path):
    config = tiny_config(method="lora", epochs=1, eval_steps=3, save_checkpoints=True)
    result = run_training(config, tmp_path, progress=False)
    assert [h["step"] for h in result["history"]] == [3, 6]  # 24 examples / batch 4 = 6 steps
    last = load_file(tmp_path / "checkpoints" / "last" / "model.safetensors")
    assert last and all("lora_" in name or "classifier" in name for name in last)
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").is_file()
    assert resume_source(tmp_path, config.key()) == tmp_path / "checkpoints" / "last"


def test_resume_errors_are_one_line(tmp_path, capsys):
    args = ["train", "--task", "sst2", "--family", "bert", "--method", "fft", "--tiny", "--device", "cpu",
            "--data-dir", str(DATA / "sst2"), "--out", str(tmp_path), "--quiet"]
    assert main([*args, "--resume"]) == 2
    assert "--resume: no checkpoint in" in capsys.readouterr().err
    run_training(tiny_config(epochs=1, save_checkpoints=True), tmp_path, progress=False)
    assert main([*args, "--save-checkpoints", "--seed", "7", "--epochs", "1"]) == 2
    assert "holds a checkpoint: pass --resume" in capsys.readouterr().err
    with pytest.raises(UserError, match="written by another config"):
        resume_source(tmp_path, tiny_config(epochs=1, save_checkpoints=True, seed=7).key())



def test_resume_on_another_number_of_processes_is_one_line(tmp_path, capsys):
    # a checkpoint as two processes write it: an RNG state per process, and the count in the saved position
    run_training(tiny_config(method="lora", epochs=1, save_checkpoints=True), tmp_path, progress=False)
    for folder in (tmp_path / "checkpoints" / "last", tmp_path / "checkpoints" / "best"):
        shutil.copy(folder / "random_states_0.pkl", folder / "random_states_1.pkl")
        for path in folder.glob("custom_checkpoint_*.pkl"):
            state = torch.load(path, weights_only=False)
            if isinstance(state, dict) and "run_key" in state:
                torch.save({**state, "num_processes": 2}, path)
    before = (tmp_path / "metrics.json").read_bytes()
    code = main(["train", "--task", "sst2", "--family", "bert", "--method", "lora", "--tiny", "--device", "cpu",
                 "--epochs", "1", "--batch-size", "4", "--learning-rate", "1e-3", "--data-dir", str(DATA / "sst2"),
                 "--save-checkpoints", "--resume", "--quiet", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert (f"{tmp_path / 'checkpoints' / 'last'} was written by 2 training process(es), this run has 1: resume "
            "with `accelerate launch --num_processes 2`") in err
    assert (tmp_path / "metrics.json").read_bytes() == before
