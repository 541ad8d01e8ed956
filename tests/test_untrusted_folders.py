"""A run folder is untrusted input: loading its checkpoints runs no pickle code, a path it names stays inside it,
and a finished run is not overwritten unless asked.

The planted pickle's `__reduce__` writes a marker file when unpickled with pickle's full powers; every test checks
the marker is never there and the command ends in one line, exit 2."""

import hashlib
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


def _vouch(folder: pathlib.Path, name: str, changes: dict, extra_files: dict | None = None) -> None:
    """Rewrite the manifest `folder/name` with `changes` and, as its own, the digest it must then carry: what anyone
    who hands over a folder can do. `extra_files`: entries added to its list of files."""
    manifest = json.loads((folder / name).read_text())
    manifest.update(changes)
    manifest["files"].update(extra_files or {})
    rest = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    manifest["manifest_sha256"] = hashlib.sha256(json.dumps(rest, sort_keys=True).encode("utf-8")).hexdigest()
    (folder / name).write_text(json.dumps(manifest))


def _outside_entry(root: pathlib.Path) -> dict:
    """A manifest entry `../secret.txt` with the size and sha256 of a file beside the folder."""
    secret = root / "secret.txt"
    secret.write_text("not the run's")
    return {"../secret.txt": {"size": secret.stat().st_size, "sha256": hashlib.sha256(secret.read_bytes()).hexdigest()}}


PATH_CASES = {
    # run.json's base: another run's weights by absolute path, by `..`, or a folder of the working directory
    "base-absolute": ("lora", lambda work, root: _vouch(work, "run.json", {"base": str(root / "other" / "base")}),
                      "{work}/run.json: base '{root}/other/base' is not the run's own base/"),
    "base-dotdot": ("lora", lambda work, root: _vouch(work, "run.json", {"base": "../other/base"}),
                    "{work}/run.json: base '../other/base' is not the run's own base/"),
    "base-working-directory": ("lora", lambda work, root: _vouch(work, "run.json", {"base": "other"}),
                               "{work}/run.json: base 'other' is not the run's own base/"),
    # a manifest entry that makes the check read a file outside the folder (--no-verify reads no list)
    "manifest-dotdot": ("fft", lambda work, root: _vouch(work, "run.json", {}, _outside_entry(root)),
                        "{work}/run.json lists '../secret.txt', a path outside {work}"),
    # a folder of the run that is a link to another run's: the check finds its first file outside, a loader the
    # folder itself
    "model-link": ("fft", lambda work, root: (shutil.rmtree(work / "model"), (work / "model").symlink_to(
        root / "other-fft" / "model")), "{work}/run.json lists 'model/config.json', a path outside {work}"),
    "model-link-no-verify": ("fft", lambda work, root: (shutil.rmtree(work / "model"), (work / "model").symlink_to(
        root / "other-fft" / "model")), "{work} holds 'model', a path outside {work}"),
    # export.json's model file outside the export
    "export-model-file": ("export-onnx", lambda work, root: _vouch(work, "export.json", {
        "model_file": "../other-export/model.onnx"}), "{work}/export.json names model_file "
                          "'../other-export/model.onnx', a path outside {work}"),
}
READERS = {"lora": ("predict", "export", "load_run", "teacher"), "fft": ("predict", "export", "load_run", "teacher"),
           "export-onnx": ("predict", "load_run")}
VERIFIED = {"manifest-dotdot": (True,), "model-link": (True,), "model-link-no-verify": (False,)}
"""Which of the checked (`verify`) and unchecked (`--no-verify`) reads each case applies to (default both)."""
CASES = [(case, reader, verify) for case, (folder, _, _) in PATH_CASES.items() for reader in READERS[folder]
         for verify in VERIFIED.get(case, (True, False)) if verify or reader != "load_run"]  # load_run checks


@pytest.mark.parametrize("case, reader, verify", CASES, ids=[f"{c}-{r}-{'verify' if v else 'no-verify'}"
                                                             for c, r, v in CASES])
def test_a_path_a_folder_names_outside_itself_is_one_line_and_loads_nothing(pristine, tmp_path, capsys, monkeypatch,
                                                                              case, reader, verify):
    from damage_helpers import snapshot
    from kdlora.api import load_run
    from kdlora.errors import UserError

    folder, plant, message = PATH_CASES[case]
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    shutil.copytree(pristine / folder, work)
    # what the folder points at: whole, loadable folders of other runs, so that only the rule refuses them
    shutil.copytree(pristine / "kd-lora", tmp_path / "other")
    shutil.copytree(pristine / "kd-lora" / "base", tmp_path / "other", dirs_exist_ok=True)  # ./other loads as one
    shutil.copytree(pristine / "fft", tmp_path / "other-fft")
    shutil.copytree(pristine / "export-onnx", tmp_path / "other-export")
    plant(work, tmp_path)
    before = snapshot(tmp_path)
    no_verify = [] if verify else ["--no-verify"]
    if reader == "load_run":
        with pytest.raises(UserError) as error:
            load_run(work)
        line = str(error.value)
    else:
        argv = {"predict": ["predict", str(work), "a great film", *no_verify],
                "export": ["export", str(work), "--out", str(tmp_path / "exported"), *no_verify],
                "teacher": ["train", *FLAGS[:5], "kd-lora", *FLAGS[6:], "--teacher", str(work), "--out",
                            str(tmp_path / "student"), *no_verify]}[reader]
        line = _one_line_exit_2(capsys, main(argv))
    assert message.format(work=work, root=tmp_path) in line and "nothing was loaded" in line
    assert snapshot(tmp_path) == before


def test_train_onto_a_finished_run_refuses_unless_overwrite(checkpointed, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(checkpointed, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for extra in ([], ["--save-checkpoints"], ["--save-checkpoints", "--resume"]):
        err = _one_line_exit_2(capsys, main(["train", *FLAGS, "--seed", "7", *extra, "--out", str(run)]))
        assert f"{run} holds a finished run (metrics.json): pass --overwrite to replace it" in err
    err = _one_line_exit_2(capsys, main(["train", *FLAGS, "--resume", "--overwrite", "--out", str(run)]))
    assert "--resume continues the run in --out, --overwrite replaces it: pass one" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    # --overwrite replaces the run and its checkpoints (another seed's: the new run saves none)
    assert main(["train", *FLAGS, "--seed", "7", "--overwrite", "--out", str(run)]) in (0, 1)
    assert json.loads((run / "metrics.json").read_text())["seed"] == 7
    assert not (run / "checkpoints").exists()
