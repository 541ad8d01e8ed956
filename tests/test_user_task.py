"""A user's own CSV (string labels, their own column names) and their own model folder, end to end through the CLI:
FFT, LoRA, KD-LoRA with a student cut from the trained teacher, a checkpoint teacher, predict and export."""

import json

import pandas as pd
import pytest
import torch

from kdlora.cli import main
from kdlora.data.encode import tiny_tokenizer
from kdlora.families import FAMILIES

torch.set_num_threads(1)

RANK = 8
GOOD = ["a good film", "very good", "great great", "the movie is great", "good good good", "a great movie"]
BAD = ["a bad film", "very bad", "bad bad", "the movie is bad", "not good at all", "a bad movie"]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A 2-layer, 32-wide BERT saved as a model folder, and train/dev CSVs with columns `review`, `verdict`."""
    root = tmp_path_factory.mktemp("user")
    torch.manual_seed(0)
    model = FAMILIES["bert"].teacher.build(num_labels=2, tiny=True)
    model.save_pretrained(root / "my-encoder")
    tiny_tokenizer().save_pretrained(root / "my-encoder")
    rows = [(t, "thumbs up") for t in GOOD] + [(t, "thumbs down") for t in BAD]
    frame = pd.DataFrame(rows * 2, columns=["review", "verdict"]).sample(frac=1, random_state=0)
    frame.to_csv(root / "train.csv", index=False)
    frame.head(8).to_csv(root / "dev.csv", index=False)
    return root


def train(user, out, method, *extra):
    lr = "5e-3" if method == "fft" else "5e-2"  # random tiny weights: LoRA needs large steps to leave the prior
    code = main(["train", "--train-file", str(user / "train.csv"), "--validation-file", str(user / "dev.csv"),
                 "--text-columns", "review", "--label-column", "verdict", "--method", method, "--epochs", "4",
                 "--batch-size", "4", "--learning-rate", lr, "--rank", str(RANK), "--device", "cpu", "--quiet",
                 "--out", str(out), *extra])
    return code, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def teacher(user):
    return train(user, user / "fft", "fft", "--model", str(user / "my-encoder"), "--test-file", str(user / "dev.csv"))


def test_fft_on_the_users_model_and_labels(user, teacher):
    code, metrics = teacher
    assert set(metrics["test_metrics"]) == {"accuracy", "macro_f1"}
    assert code == 0 and metrics["status"] == "done"
    assert metrics["task"] == "custom" and metrics["family"] == "my-encoder"
    assert metrics["label_names"] == ["thumbs down", "thumbs up"]  # sorted
    assert set(metrics["metrics"]) == {"accuracy", "macro_f1"}
    assert metrics["trainable_params"] == metrics["total_params"] and metrics["lora_targets"] is None


def test_lora_adapts_query_and_value_and_trains_the_new_head(user, tmp_path):
    code, metrics = train(user, tmp_path / "lora", "lora", "--model", str(user / "my-encoder"))
    assert code == 0 and metrics["lora_targets"] == ["query", "value"]
    assert metrics["trained_modules"] == ["classifier"]
    layers, hidden = 2, 32
    assert metrics["adapter_params"] == layers * 2 * (hidden * RANK + RANK * hidden)
    assert metrics["trainable_params"] == metrics["adapter_params"] + (hidden * 2 + 2)  # + classifier


def test_kd_lora_student_cut_from_the_trained_teacher_predicts_the_users_names(user, teacher, tmp_path, capsys):
    code, metrics = train(user, tmp_path / "kd", "kd-lora", "--model", str(user / "my-encoder"), "--student",
                          "derive:1", "--teacher", str(user / "fft"))
    assert code == 0 and metrics["model"] == f"layers 0 of {user / 'fft'}"
    layers, hidden = 1, 32
    assert metrics["adapter_params"] == layers * 2 * (hidden * RANK + RANK * hidden)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "kd"), "a great movie", "a bad film"]) == 0
    labels = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert len(labels) == 2 and set(labels) <= {"thumbs up", "thumbs down"}


def test_any_checkpoint_teacher_with_matching_labels(user, teacher, tmp_path):
    assert main(["export", str(user / "fft"), "--out", str(tmp_path / "exported")]) == 0
    exported = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert exported["id2label"] == {"0": "thumbs down", "1": "thumbs up"}
    code, metrics = train(user, tmp_path / "kd", "kd-lora", "--model", str(user / "my-encoder"), "--student",
                          "derive:0,1", "--teacher", str(tmp_path / "exported"))
    assert code == 0 and metrics["model"] == f"layers 0,1 of {tmp_path / 'exported'}"


def test_teacher_with_other_labels_names_both_sets(user, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    other = AutoModelForSequenceClassification.from_pretrained(str(user / "my-encoder"))
    other.config.id2label, other.config.label2id = {0: "no", 1: "yes"}, {"no": 0, "yes": 1}
    other.save_pretrained(tmp_path / "other")
    tiny_tokenizer().save_pretrained(tmp_path / "other")
    code = main(["train", "--train-file", str(user / "train.csv"), "--validation-file", str(user / "dev.csv"),
                 "--text-columns", "review", "--label-column", "verdict", "--method", "kd-lora", "--model",
                 str(user / "my-encoder"), "--teacher", str(tmp_path / "other"), "--quiet", "--out",
                 str(tmp_path / "kd")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert (f"--teacher {tmp_path / 'other'}: teacher has labels no, yes; this run is task custom with 2 labels "
            "(thumbs down, thumbs up)") in err


def test_model_without_attention_through_the_cli(user, tmp_path, capsys):
    from transformers import FNetConfig, FNetForSequenceClassification

    FNetForSequenceClassification(FNetConfig(hidden_size=32, num_hidden_layers=1, intermediate_size=64,
                                             vocab_size=1000)).save_pretrained(tmp_path / "fnet")
    tiny_tokenizer().save_pretrained(tmp_path / "fnet")
    code = main(["train", "--train-file", str(user / "train.csv"), "--validation-file", str(user / "dev.csv"),
                 "--text-columns", "review", "--label-column", "verdict", "--method", "lora", "--model",
                 str(tmp_path / "fnet"), "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "fnet: no attention query/value Linear layers found" in err
    assert "pass --lora-targets" in err
