"""The six tracebacks and two late complaints of issue 12, as a new user met them: each is now one line, exit 2.

With the manifest checked (the default) the line names the damaged file and how it is damaged; with --no-verify
the load itself fails, still in one line naming the folder it could not load.
"""

import json
import shutil

import pytest
import torch

from damage_helpers import damage, snapshot
from kdlora.cli import main
from kdlora.errors import UserError
from train_helpers import DATA, install_fake_snippets

torch.set_num_threads(1)

TEACH = ["train", "--task", "sst2", "--family", "bert", "--method", "kd-lora", "--tiny", "--data-dir",
         str(DATA / "sst2"), "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--quiet"]


def one_line(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.strip()


def argv_for(command: str, run, tmp_path) -> list[str]:
    return {"predict": ["predict", str(run), "a great film"],
            "export": ["export", str(run), "--out", str(tmp_path / "exported")],
            "teacher": [*TEACH, "--teacher", str(run), "--out", str(tmp_path / "student")]}[command]


@pytest.mark.parametrize("command", ["predict", "export", "teacher"])
def test_truncated_adapter_weights(pristine, tmp_path, capsys, command):
    run = tmp_path / "lora"
    shutil.copytree(pristine / "lora", run)
    weights = run / "adapter" / "adapter_model.safetensors"
    size = weights.stat().st_size
    damage(weights, "truncate")
    before = snapshot(tmp_path)
    line = one_line(argv_for(command, run, tmp_path), capsys)
    name = "train" if command == "teacher" else command
    assert line == (f"kdlora {name}: error: {weights}: truncated ({size // 2:,} of {size:,} bytes); the kdlora run "
                    "folder is damaged: re-run it, or pass --no-verify to load anyway")
    line = one_line(argv_for(command, run, tmp_path) + ["--no-verify"], capsys)
    assert line.startswith(f"kdlora {name}: error: {run / 'adapter'}: cannot load the adapter (SafetensorError: ")
    assert snapshot(tmp_path) == before


def test_missing_base_config(pristine, tmp_path, capsys):
    run = tmp_path / "lora"
    shutil.copytree(pristine / "lora", run)
    (run / "base" / "config.json").unlink()
    line = one_line(["predict", str(run), "a great film"], capsys)
    assert line == (f"kdlora predict: error: {run / 'base' / 'config.json'}: missing; the kdlora run folder is "
                    "damaged: re-run it, or pass --no-verify to load anyway")
    line = one_line(["predict", str(run), "a great film", "--no-verify"], capsys)
    assert line.startswith(f"kdlora predict: error: {run / 'base'}: cannot load the adapter's base model "
                           "(ValueError: Unrecognized model")


@pytest.mark.parametrize("command", ["predict", "export"])
def test_metrics_without_the_expected_keys(pristine, tmp_path, capsys, command):
    bare = tmp_path / "bare"  # a folder holding only a metrics.json of other keys
    bare.mkdir()
    (bare / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
    line = one_line(argv_for(command, bare, tmp_path), capsys)
    assert line.startswith(f"kdlora {command}: error: {bare}: ") and "run.json" in line
    run = tmp_path / "fft"  # a whole run whose metrics.json was rewritten by hand
    shutil.copytree(pristine / "fft", run)
    written = (run / "metrics.json").stat().st_size
    (run / "metrics.json").write_text('{"status": "done"}')  # 18 bytes
    line = one_line(argv_for(command, run, tmp_path), capsys)
    assert line == (f"kdlora {command}: error: {run / 'metrics.json'}: truncated (18 of {written:,} bytes); the "
                    "kdlora run folder is damaged: re-run it, or pass --no-verify to load anyway")
    line = one_line(argv_for(command, run, tmp_path) + ["--no-verify"], capsys)
    assert line == (f"kdlora {command}: error: {run / 'metrics.json'}: no training config in it (key 'config'); "
                    "not written by `kdlora train`: re-run it")


def test_demo_checks_its_output_folder_before_training(tmp_path, monkeypatch, capsys):
    from kdlora.demo import run_demo

    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    install_fake_snippets(tmp_path / "cache")  # the data is there: only the output folder is wrong
    (tmp_path / "a-file").write_text("not a folder\n")
    out = tmp_path / "a-file" / "demo"
    with pytest.raises(UserError, match=r"a-file/demo: cannot create the output folder \(.*a-file is a file\)"):
        run_demo(out, train_samples=None, epochs=1, max_length=16, progress=True, tiny=True)
    assert capsys.readouterr().out == ""  # no "[demo] seed 42: fft ..." line: nothing trained
    line = one_line(["demo", "--out", str(out)], capsys)
    assert line == f"kdlora demo: error: {out}: cannot create the output folder ({tmp_path / 'a-file'} is a file)"


def test_kd_lora_without_a_teacher_says_so_before_any_data(tmp_path, capsys):
    """No --data-dir: the data would come from the hub, which these tests cannot reach; the teacher comes first."""
    line = one_line(["train", "--task", "sst2", "--family", "bert", "--method", "kd-lora", "--tiny",
                     "--out", str(tmp_path / "student")], capsys)
    assert line == "kdlora train: error: method kd-lora distils from a trained FFT teacher: pass --teacher RUN_DIR"
    assert not (tmp_path / "student").exists()
