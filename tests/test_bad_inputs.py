"""Bad input that ended in a traceback, or said nothing, each tried through the CLI (in-process, or a subprocess where
the mistake is in the environment every import reads): exit 2, exactly one line on stderr naming the mistake, no
traceback, and no file under the test's folder written or changed (no run folder, no results store, no study).

One row per case of issue 25's list; `test_the_table_covers_the_issues_list` counts them.
"""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from damage_helpers import snapshot
from kdlora.cli import main
from train_helpers import DATA

torch.set_num_threads(1)

TRAIN_CSV = "review,verdict\n" + "".join(f"{t},{v}\n" for t, v in [
    ("a good film", "pos"), ("a bad film", "neg"), ("very good", "pos"), ("awful", "neg")] * 2)
FILES = {
    "train.csv": TRAIN_CSV,
    "dev.csv": TRAIN_CSV,
    "header-only.csv": "review,verdict\n",
    "repeated.csv": "review,verdict,review\na good film,pos,x\nawful,neg,y\n",
    "mixed.csv": "review,verdict\na good film,1\nawful,neg\nvery good,pos\n",
}
FILE_TASK = ["--train-file", "{w}/train.csv", "--validation-file", "{w}/dev.csv", "--text-columns", "review",
             "--label-column", "verdict"]
TINY = ["--method", "fft", "--family", "bert", "--tiny", "--device", "cpu", "--precision", "fp32", "--epochs", "1",
        "--batch-size", "4", "--quiet", "--out", "{w}/run"]
SST2 = ["train", "--task", "sst2", "--data-dir", str(DATA / "sst2"), "--method", "lora", "--family", "bert",
        "--tiny", "--device", "cpu", "--precision", "fp32", "--epochs", "2", "--batch-size", "8", "--quiet",
        "--save-checkpoints"]
EXPERIMENT = """
name = "bad"
[train]
tasks = ["reviews"]
families = ["bert"]
methods = ["fft"]
seeds = [1]
[train.params]
tiny = true
device = "cpu"
precision = "fp32"
epochs = 1
[tasks.reviews]
train_file = "train.csv"
validation_file = "dev.csv"
text_columns = "review"
label_column = "verdict"
"""
SWEEP = ["sweep", "{w}/exp.toml", "--db", "{w}/s.db", "--no-progress"]
SEARCH = [*SWEEP, "--search", "optuna", "--trials", "1"]


def _with(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


# case -> (argv, what the experiment file says (None: none), environment, the one line's expected text)
CASES = {
    "a header-only validation file": (
        ["train", *[a.replace("dev.csv", "header-only.csv") for a in FILE_TASK], *TINY], None, {},
        "header-only.csv: no data rows"),
    "a header-only test file": (
        ["train", *FILE_TASK, "--test-file", "{w}/header-only.csv", *TINY], None, {},
        "header-only.csv: no data rows"),
    "predict --file with bytes that are not UTF-8": (
        ["predict", "{pristine}/fft", "--file", "{w}/latin1.txt"], None, {},
        "latin1.txt: not UTF-8 text (byte 0xe9 at offset 9); save it as UTF-8"),
    "[search] step = \"a\"": (
        SEARCH, EXPERIMENT + '[search]\nlearning_rate = { low = 1e-4, high = 1e-3, step = "a" }\n', {},
        "[search] learning_rate: step = 'a' is not a positive number"),
    "[search] log = true with a step": (
        SEARCH, EXPERIMENT + "[search]\nlearning_rate = { low = 1e-4, high = 1e-3, log = true, step = 1e-4 }\n",
        {}, "[search] learning_rate: a step and log = true cannot go together"),
    "[search] a range of whole numbers with step = 0.5": (
        SEARCH, EXPERIMENT + "[search]\nepochs = { low = 1, high = 3, step = 0.5 }\n", {},
        "[search] epochs: step = 0.5 in a range of whole numbers (low 1, high 3) must be a whole number"),
    "[search] low = -inf": (
        SEARCH, EXPERIMENT + "[search]\nlearning_rate = { low = -inf, high = 1e-3 }\n", {},
        "[search] learning_rate = {'low': -inf, 'high': 0.001}: low and high must be finite numbers"),
    "a truncated checkpoint on --resume": (
        [*SST2, "--out", "{w}/checkpointed", "--resume"], None, {},
        "checkpointed/checkpoints/last/model.safetensors: truncated (4,928 of 9,856 bytes); the checkpoint is damaged: "
        "remove {w}/checkpointed/checkpoints to start afresh"),
    "KDLORA_METHODS naming a module that is not there": (
        ["runs", "--db", "{w}/s.db"], None, {"KDLORA_METHODS": "no_such_methods"},
        "KDLORA_METHODS=no_such_methods: cannot import the method module 'no_such_methods' (No module named "
        "'no_such_methods'); fix or unset KDLORA_METHODS"),
    "a garbled KDLORA_SEARCH_TRIAL (which every run of a sweep would fail on)": (
        SWEEP, EXPERIMENT, {"KDLORA_SEARCH_TRIAL": "{not json"},
        "KDLORA_SEARCH_TRIAL='{not json': not a trial a kdlora search set"),
    "a disk that fills while the run writes": (
        ["train", *FILE_TASK, *TINY], None, {},
        "run: cannot write (No space left on device); nothing was written there"),
    "a column name written twice": (
        ["train", *[a.replace("train.csv", "repeated.csv") for a in FILE_TASK], *TINY], None, {},
        "repeated.csv: header row, column 'review': named twice (which one is meant?); rename one"),
    "a label column mixing numbers and words": (
        ["train", *[a.replace("train.csv", "mixed.csv") for a in FILE_TASK], *TINY], None, {},
        "mixed.csv: column 'verdict': labels mix numbers and words ('1', 'neg'): write every class the same way"),
    "a sweep whose data folder is not there": (
        SWEEP, _with(_with(EXPERIMENT, 'tasks = ["reviews"]', 'tasks = ["sst2"]'), "epochs = 1\n",
                     'epochs = 1\ndata_dir = "{w}/no-such-folder"\n'), {},
        "exp.toml: train sst2 bert fft s1: {w}/no-such-folder: data folder not found"),
    "a sweep whose label column is not there": (
        SWEEP, _with(EXPERIMENT, 'label_column = "verdict"', 'label_column = "rating"'), {},
        "exp.toml: train reviews bert fft s1: {w}/train.csv: header row, column 'rating': no such column"),
    "a sweep whose validation file is header-only": (
        SWEEP, _with(EXPERIMENT, 'validation_file = "dev.csv"', 'validation_file = "header-only.csv"'), {},
        "exp.toml: train reviews bert fft s1: {w}/header-only.csv: no data rows"),
    "a sweep whose positive label is not a label": (
        SWEEP, EXPERIMENT + 'metric = "f1"\npositive_label = "great"\n', {},
        "positive-label 'great': not a label of {w}/train.csv (its labels: neg, pos)"),
    "a sweep refused for its flags (--jobs 0)": (
        [*SWEEP, "--jobs", "0"], EXPERIMENT, {}, "--jobs: 0 is not a positive integer"),
    "a search refused for its flags (no --trials)": (
        [*SWEEP, "--search", "optuna"], EXPERIMENT + "[search]\nlearning_rate = { low = 1e-4, high = 1e-3 }\n", {},
        "--search optuna needs --trials N (N >= 1)"),
}
IN_A_SUBPROCESS = {"KDLORA_METHODS naming a module that is not there"}
"""Read by every import of kdlora.methods: the test process has imported it already."""


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A tiny LoRA run on the sst2 fixture that kept its checkpoints (24 rows, batch 8: 3 steps an epoch)."""
    out = tmp_path_factory.mktemp("checkpointed") / "run"
    assert main([*SST2, "--out", str(out)]) == 0
    return out


def _prepare(work: Path, case: str, experiment: str | None, checkpointed: Path) -> None:
    for name, text in FILES.items():
        (work / name).write_text(text)
    (work / "latin1.txt").write_bytes("great caf\u00e9 film\n".encode("latin-1"))  # é: byte 0xe9 after 9 bytes
    if experiment is not None:
        (work / "exp.toml").write_text(experiment.replace("{w}", str(work)))
    if case == "a truncated checkpoint on --resume":
        shutil.copytree(checkpointed, work / "checkpointed")
        for finished in ("metrics.json", "run.json"):  # killed before it finished: what --resume continues
            (work / "checkpointed" / finished).unlink(missing_ok=True)
        weights = work / "checkpointed" / "checkpoints" / "last" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys, monkeypatch, pristine,
                                                        checkpointed):
    argv, experiment, env, expected = CASES[case]
    work = tmp_path / "w"
    work.mkdir()
    _prepare(work, case, experiment, checkpointed)
    argv = [a.replace("{w}", str(work)).replace("{pristine}", str(pristine)) for a in argv]
    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    before, names = snapshot(tmp_path), sorted(p.name for p in work.iterdir())
    if case in IN_A_SUBPROCESS:
        done = subprocess.run([sys.executable, "-m", "kdlora", *argv], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=300)
        code, err = done.returncode, done.stderr
    else:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        if case == "a disk that fills while the run writes":
            import kdlora.rundir

            def full(path, data):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

            monkeypatch.setattr(kdlora.rundir, "write_json", full)
        code, err = main(argv), capsys.readouterr().err
    lines = err.splitlines()
    assert "Traceback" not in err
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"kdlora {argv[0]}: error: "), lines[0]
    assert expected.replace("{w}", str(work)) in lines[0], lines[0]
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in work.iterdir()) == names  # no folder left either, not even an empty one


def test_the_table_covers_the_issues_list():
    # 2 header-only files, predict --file, 4 [search] tables, a truncated checkpoint, KDLORA_METHODS,
    # KDLORA_SEARCH_TRIAL, a full disk, a repeated column, mixed labels, 4 sweep data mistakes, 2 refused commands
    assert len(CASES) == 2 + 1 + 4 + 1 + 1 + 1 + 1 + 1 + 1 + 4 + 2


def test_load_run_predict_takes_a_string_as_one_text(pristine):
    """Finding: `load_run(...).predict("a text")` labelled each character of the string."""
    from kdlora import load_run

    run = load_run(pristine / "fft")
    [one] = run.predict("a great film")
    assert one["text"] == "a great film" and one == run.predict(["a great film"])[0]
