"""A run folder is untrusted input: loading its checkpoints runs no pickle code, a path it names stays inside it,
and a finished run is not overwritten unless asked.

The planted pickle's `__reduce__` writes a marker file when unpickled with pickle's full powers; every test checks
the marker is never there and the command ends in one line, exit 2."""

import json
import pathlib
import shutil

import pytest
import torch

from kdlora.cli import main
from kdlora.files import write_manifest
from kdlora.sweep.backends import REAL
from kdlora.sweep.executors import execute
from kdlora.train import run_training
from train_helpers import DATA, tiny_config


class Planted:
    """Unpickled with weights_only=False, writes `marker` (the harmless stand-in for os.system)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (self.marker, "the checkpoint ran code")


FLAGS = ["--task", "sst2", "--family", "bert", "--method", "lora", "--tiny", "--device", "cpu", "--epochs", "1",
         "--batch-size", "4", "--learning-rate", "1e-3", "--data-dir", str(DATA / "sst2"), "--quiet"]
CONFIG = dict(method="lora", epochs=1, batch_size=4, learning_rate=1e-3)


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A finished tiny LoRA run that kept its checkpoints (the flags above, with --save-checkpoints)."""
    folder = tmp_path_factory.mktemp("checkpointed")
    run_training(tiny_config(**CONFIG, save_checkpoints=True), folder, progress=False)
    return folder


def _one_line_exit_2(capsys, code) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _interrupted_copy(checkpointed, tmp_path) -> pathlib.Path:
    """The run as a kill would leave it: its checkpoints and nothing else."""
    run = tmp_path / "run"
    shutil.copytree(checkpointed / "checkpoints", run / "checkpoints")
    return run


def test_a_pickle_planted_beside_a_checkpoint_is_refused_before_anything_loads(checkpointed, tmp_path, capsys):
    run = _interrupted_copy(checkpointed, tmp_path)
    marker = tmp_path / "marker"
    for name in ("last", "best"):
        torch.save(Planted(marker), run / "checkpoints" / name / "custom_checkpoint_0.pkl")
    planted = run / "checkpoints" / "last" / "custom_checkpoint_0.pkl"

    err = _one_line_exit_2(capsys, main(["train", *FLAGS, "--save-checkpoints", "--resume", "--out", str(run)]))
    assert f"{planted}: not a file a kdlora checkpoint holds" in err
    err = _one_line_exit_2(capsys, main(["train", *FLAGS, "--save-checkpoints", "--out", str(run)]))
    assert f"{planted}: not a file a kdlora checkpoint holds" in err
    # a sweep reruns an interrupted run through its backend, which looks for a checkpoint to resume from
    result = execute("train", tiny_config(**CONFIG, save_checkpoints=True).to_dict(), str(run), REAL, False)
    assert result["status"] == "failed" and "\n" not in result["reason"]
    assert result["reason"].startswith(f"{planted}: not a file a kdlora checkpoint holds")
    assert not marker.exists()
    assert not (run / "metrics.json").exists()


@pytest.mark.parametrize("name", ["training_state.pt", "optimizer.bin", "random_states_0.pkl"])
def test_a_pickle_in_place_of_a_checkpoint_file_and_vouched_for_runs_nothing(checkpointed, tmp_path, capsys, name):
    """The worst case: the planted pickle replaces a file the checkpoint holds and the manifest is rewritten to
    vouch for it; loading with weights_only=True refuses to run it."""
    run = _interrupted_copy(checkpointed, tmp_path)
    marker = tmp_path / "marker"
    for folder in (run / "checkpoints" / "last", run / "checkpoints" / "best"):
        torch.save(Planted(marker), folder / name)
        info = json.loads((folder / "checkpoint.json").read_text())
        write_manifest(folder, "checkpoint.json", {k: info[k] for k in ("position",)})
    err = _one_line_exit_2(capsys, main(["train", *FLAGS, "--save-checkpoints", "--resume", "--out", str(run)]))
    assert f"{run / 'checkpoints' / 'last' / name}: cannot load" in err
    assert not marker.exists()
