"""`kdlora bench --model X --student Y|derive:N`: exact counts of any pair from a config.json or folder, on the meta
device (no weights), through the CLI and the Python API."""

import json

import pytest
from transformers import BertConfig, DistilBertConfig

import kdlora
from kdlora.cli import main

HIDDEN, LAYERS, RANK = 64, 4, 8


@pytest.fixture
def configs(tmp_path):
    BertConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=128,
               vocab_size=100).save_pretrained(tmp_path / "teacher")
    DistilBertConfig(dim=HIDDEN, n_layers=1, n_heads=2, hidden_dim=128, vocab_size=100).save_pretrained(
        tmp_path / "student")
    return tmp_path


def _rows(out):
    return {r["method"]: r for r in json.loads((out / "bench.json").read_text())["rows"]}


def test_derived_student_counts_from_a_config_json(configs, capsys):
    out = configs / "bench"
    assert main(["bench", "--model", str(configs / "teacher" / "config.json"), "--student", "derive:2",
                 "--params-only", "--ranks", str(RANK), "--no-progress", "--out", str(out)]) == 0
    rows = _rows(out)
    classifier = HIDDEN * 2 + 2
    assert rows["lora"]["adapter_params"] == LAYERS * 2 * (HIDDEN * RANK + RANK * HIDDEN)
    assert rows["kd-lora"]["adapter_params"] == 2 * 2 * (HIDDEN * RANK + RANK * HIDDEN)
    assert rows["lora"]["trainable_params"] == rows["lora"]["adapter_params"] + classifier
    layer = 4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * HIDDEN * 128 + 128 + HIDDEN + 2 * 2 * HIDDEN  # attn, FFN, 2 norms
    assert rows["fft"]["total_params"] - rows["kd-lora"]["total_params"] == (LAYERS - 2) * layer
    assert "teacher (layers 0,2)" in capsys.readouterr().out


def test_own_student_folder_through_the_api(configs):
    result = kdlora.bench_pair(configs / "teacher", configs / "student", ranks=(RANK,))
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["kd-lora"]["model"] == str(configs / "student")
    # DistilBERT: q_lin and v_lin in its one layer; pre_classifier and classifier train
    assert rows["kd-lora"]["adapter_params"] == 1 * 2 * (HIDDEN * RANK + RANK * HIDDEN)
    assert rows["kd-lora"]["trainable_params"] == rows["kd-lora"]["adapter_params"] + (HIDDEN * HIDDEN + HIDDEN) + \
        (HIDDEN * 2 + 2)


def test_unknown_model_is_one_line(tmp_path, capsys):
    assert main(["bench", "--model", str(tmp_path / "nowhere"), "--params-only", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--model {tmp_path / 'nowhere'}: no config.json found" in err
