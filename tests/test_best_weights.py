"""The best state's temporary folder never outlives its run: dropped when a run ends without a model, and one left
by a killed process removed by the next run."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from kdlora.train.loop import BestWeights, remove_orphaned_folders


def test_a_run_without_a_model_drops_its_kept_state_and_folder():
    kept = BestWeights(on_cpu=True)
    folder = Path(kept._folder.name)
    kept.keep([("w", torch.ones(2))])
    assert (folder / "best.safetensors").is_file()
    kept.discard()
    assert not folder.exists()


def test_restoring_the_best_state_removes_its_folder():
    kept = BestWeights(on_cpu=True)
    folder = Path(kept._folder.name)
    kept.keep([("w", torch.full((2,), 3.0))])
    param = torch.nn.Parameter(torch.zeros(2))
    kept.restore([("w", param)])
    assert param.tolist() == [3.0, 3.0]
    assert not folder.exists()


def test_a_folder_left_by_a_killed_process_goes_and_a_living_ones_stays(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    (tmp_path / f"kdlora-best-{dead_pid}-abc").mkdir()
    (tmp_path / f"kdlora-best-{os.getpid()}-def").mkdir()
    (tmp_path / "kdlora-best-noprocess").mkdir()  # named before folders carried their pid: not ours to judge
    assert remove_orphaned_folders(str(tmp_path)) == [f"kdlora-best-{dead_pid}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"kdlora-best-{os.getpid()}-def", "kdlora-best-noprocess"]
