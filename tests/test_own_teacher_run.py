"""A user's own model folder end to end: its FFT teacher run decides the KD-LoRA student's model and label, bench
rows and trained runs carry the same label, and a run's adapter loads with PEFT's own loader alone."""

import json

import pytest
import torch

from kdlora.cli import main
from kdlora.data.encode import tiny_tokenizer
from kdlora.families import FAMILIES

TEACHER_LAYERS, STUDENT_LAYERS = 4, 2
TEXTS = [("a good film", "up"), ("a bad film", "down"), ("very good", "up"), ("very bad", "down")] * 3


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A 4-layer, 32-wide BERT saved as `x/model` (a weights folder named by the folder above it), a CSV task, and
    an FFT teacher run of it."""
    root = tmp_path_factory.mktemp("own")
    torch.manual_seed(0)
    model = FAMILIES["bert"].teacher.build(num_labels=2, tiny=True, num_hidden_layers=TEACHER_LAYERS)
    model.save_pretrained(root / "x" / "model")
    tiny_tokenizer().save_pretrained(root / "x" / "model")
    (root / "train.csv").write_text("review,verdict\n" + "".join(f"{t},{v}\n" for t, v in TEXTS))
    assert _train(root, root / "fft", "--method", "fft", "--model", str(root / "x" / "model")) == 0
    return root


def _train(root, out, *extra):
    return main(["train", "--train-file", str(root / "train.csv"), "--validation-file", str(root / "train.csv"),
                 "--text-columns", "review", "--label-column", "verdict", "--epochs", "1", "--batch-size", "4",
                 "--device", "cpu", "--quiet", "--out", str(out), *extra])


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def student(own):
    """A KD-LoRA student of 2 layers cut from the 4-layer teacher run."""
    code = _train(own, own / "kd", "--method", "kd-lora", "--model", str(own / "x" / "model"), "--teacher",
                  str(own / "fft"), "--student", f"derive:{STUDENT_LAYERS}")
    assert code == 0
    return own / "kd"


def test_the_teacher_run_names_the_students_model_and_label(own, tmp_path):
    # only --teacher RUN and --student derive:2: no --model, no --family
    code = _train(own, tmp_path / "kd", "--method", "kd-lora", "--teacher", str(own / "fft"), "--student",
                  f"derive:{STUDENT_LAYERS}")
    assert code == 0
    metrics = _metrics(tmp_path / "kd")
    assert metrics["family"] == _metrics(own / "fft")["family"] == "x"
    assert metrics["config"]["model"] == str(own / "x" / "model")
    assert metrics["model"] == f"layers 0,2 of {own / 'fft'}"


def test_bench_rows_and_trained_runs_carry_the_same_label(own, capsys):
    out = own / "bench"
    assert main(["bench", "--model", str(own / "x" / "model"), "--student", f"derive:{STUDENT_LAYERS}",
                 "--params-only", "--ranks", "8", "--no-progress", "--out", str(out)]) == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert {row["family"] for row in rows} == {_metrics(own / "fft")["family"]} == {"x"}


def test_a_runs_adapter_loads_with_peft_alone(student):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    from kdlora.rundir import load_model

    loaded = AutoPeftModelForSequenceClassification.from_pretrained(str(student / "adapter")).eval()
    assert loaded.config.num_hidden_layers == STUDENT_LAYERS  # not the 4-layer teacher it was cut from
    tokenizer = AutoTokenizer.from_pretrained(str(student / "adapter"))
    batch = tokenizer(["a good film", "very bad"], return_tensors="pt", padding=True)
    with torch.no_grad():
        # the same weights through the same kernels: exact
        assert torch.equal(loaded(**batch).logits, load_model(student)(**batch).logits)


def test_a_garbled_teacher_run_is_one_line_when_it_names_the_model(own, tmp_path, capsys):
    import shutil

    shutil.copytree(own / "fft", tmp_path / "fft")
    (tmp_path / "fft" / "metrics.json").write_bytes(b'{"status": "\x9a"}')  # not UTF-8
    code = _train(own, tmp_path / "kd", "--method", "kd-lora", "--teacher", str(tmp_path / "fft"), "--student",
                  f"derive:{STUDENT_LAYERS}")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'fft' / 'metrics.json'}: not valid JSON (not UTF-8 text at byte 12)" in err
    assert not (tmp_path / "kd").exists()
