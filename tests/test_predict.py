import pytest
import torch

from kdlora.cli import main
from kdlora.errors import UserError
from kdlora.predict import predict
from kdlora.train import run_training
from train_helpers import tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "run"
    run_training(tiny_config(method="lora"), out, progress=False)
    return out


def test_predict_returns_a_label_name_and_its_probability(run_dir):
    rows = predict(run_dir, ["a great film", "a bad film", "x"])
    assert [r["text"] for r in rows] == ["a great film", "a bad film", "x"]
    assert all(r["label"] in ("negative", "positive") and 0.5 <= r["score"] <= 1.0 for r in rows)


def test_cli_prints_one_line_per_text_from_args_and_file(run_dir, tmp_path, capsys):
    (tmp_path / "texts.txt").write_text("very good\n\nnot good\n")
    assert main(["predict", str(run_dir), "a great film", "--file", str(tmp_path / "texts.txt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2] for line in lines] == ["a great film", "very good", "not good"]
    assert all(line.split("\t")[0] in ("negative", "positive") for line in lines)


def test_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["predict", str(tmp_path), "text"]) == 2
    assert capsys.readouterr().err.strip() == f"kdlora predict: error: {tmp_path}: neither a kdlora run " \
                                               "folder nor an exported model (no run.json or export.json)"
    with pytest.raises(UserError, match="takes 1 text"):
        predict(run_dir, ["one\ttwo"])
    assert main(["predict", str(run_dir)]) == 2
