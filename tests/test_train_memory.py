"""What a training run's memory figure includes: building and training the model, measured the same way for every
method; not the copy of its best weights, nor the checkpoints it writes (`save_checkpoints` is not in the run key).

CPU runs (`cpu-peak-rss-delta`, Linux peak RSS): the figures depend on the allocator, so the tests compare a run
with one that differs by the bookkeeping alone, by a margin far wider than the allocator's noise.
"""

import json
import subprocess
import sys

import psutil
import torch

import kdlora.train.checkpoint
from kdlora.train import run_training
from train_helpers import DATA, tiny_config

MB = 1024 * 1024
BOOKKEEPING_MB = 256
"""What the patched checkpoint writer allocates and frees: far above a tiny run's own peak."""


def test_checkpoint_writing_is_not_in_the_runs_memory(tmp_path, monkeypatch):
    """Finding: checkpoint writing was inside the measured block although save_checkpoints is not in the run key."""
    config = tiny_config(method="fft", save_checkpoints=True, eval_steps=2)
    plain = run_training(config, tmp_path / "plain", progress=False)  # also warms this process up
    real = kdlora.train.checkpoint.save_checkpoint

    def heavy_writer(*args, **kwargs):
        block = torch.ones(BOOKKEEPING_MB * MB // 4)  # touched: resident
        del block
        return real(*args, **kwargs)

    monkeypatch.setattr(kdlora.train.checkpoint, "save_checkpoint", heavy_writer)
    heavy = run_training(config, tmp_path / "heavy", progress=False)
    assert heavy.memory_kind == "cpu-peak-rss-delta"
    assert heavy.peak_memory_mb < plain.peak_memory_mb + BOOKKEEPING_MB / 4


def test_the_best_weights_of_a_cpu_run_stay_out_of_its_memory():
    """Finding: the best weights were copied into CPU memory, inside a CPU run's peak RSS (a whole model for FFT,
    a few KB for LoRA): on the CPU they go to a temporary file, and come back exactly."""
    from kdlora.train.loop import BestWeights

    weights = [(f"w{i}", torch.randn(16 * MB // 4)) for i in range(4)]  # 4 x 16 MB
    kept = BestWeights(on_cpu=True)
    before = psutil.Process().memory_info().rss
    kept.keep(weights)
    assert psutil.Process().memory_info().rss - before < 16 * MB  # not the 64 MB copy
    originals = [w.clone() for _, w in weights]
    for _, w in weights:
        w.zero_()
    kept.restore(weights)
    assert all(torch.equal(w, o) for (_, w), o in zip(weights, originals, strict=True))


def test_an_accelerator_runs_best_weights_are_a_cpu_copy():
    from kdlora.train.loop import BestWeights

    weights = [("w", torch.randn(8))]
    kept = BestWeights(on_cpu=False)
    kept.keep(weights)
    original = weights[0][1].clone()
    weights[0][1].zero_()
    kept.restore(weights)
    assert torch.equal(weights[0][1], original)


def test_a_first_run_in_a_fresh_process_does_not_count_the_scoring_libraries(tmp_path):
    """Finding: scipy and scikit-learn, imported at the first dev evaluation, put about 100 MB into the figure of
    every run a sweep starts in its own process (a tiny LoRA run measured 120 MB; its model is a few MB)."""
    code = ("import sys; from kdlora.cli import main; sys.exit(main(['train', '--task', 'sst2', '--family', 'bert', "
            "'--method', 'lora', '--tiny', '--device', 'cpu', '--epochs', '1', '--batch-size', '4', '--data-dir', "
            f"{str(DATA / 'sst2')!r}, '--out', {str(tmp_path / 'run')!r}, '--quiet']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr  # 1: a tiny random model may collapse
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["peak_memory_mb"] < 60
