"""Model cards: every run folder and export has a README.md that `huggingface_hub` parses back, whose figures are the
folder's own (metrics.json, export.json), which the manifest covers, and whose loading code runs as printed."""

import json
import re

import pandas as pd
import pytest
import torch
from huggingface_hub import ModelCard, metadata_load

from kdlora.card import run_card
from kdlora.cli import main
from kdlora.data.encode import tiny_tokenizer
from kdlora.errors import UserError
from kdlora.families import FAMILIES
from kdlora.rundir import check_run, load_model

torch.set_num_threads(1)

ROWS = [("a good film", "up"), ("very good", "up"), ("great great", "up"), ("a bad film", "down"),
        ("very bad", "down"), ("bad bad", "down")] * 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-layer BERT folder as --model, an FFT teacher on it, LoRA on it, and KD-LoRA on a student cut from the
    teacher (derive:1), each trained one epoch on a CSV task."""
    root = tmp_path_factory.mktemp("card")
    torch.manual_seed(0)
    FAMILIES["bert"].teacher.build(num_labels=2, tiny=True).save_pretrained(root / "encoder")
    tiny_tokenizer().save_pretrained(root / "encoder")
    pd.DataFrame(ROWS, columns=["review", "verdict"]).to_csv(root / "train.csv", index=False)
    common = ["--train-file", str(root / "train.csv"), "--validation-file", str(root / "train.csv"),
              "--text-columns", "review", "--label-column", "verdict", "--model", str(root / "encoder"),
              "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--quiet"]
    for name, extra in (("fft", ["--method", "fft"]), ("lora", ["--method", "lora"]),
                        ("kd", ["--method", "kd-lora", "--student", "derive:1", "--teacher", str(root / "fft")])):
        assert main(["train", *common, *extra, "--out", str(root / name)]) in (0, 1)
    return root


def metrics_of(folder):
    return json.loads((folder / "metrics.json").read_text())


def code_of(card_text: str) -> str:
    return re.search(r"```python\n(.*?)```", card_text, re.S).group(1)


def test_a_runs_card_parses_back_with_the_runs_own_figures(runs):
    metrics = metrics_of(runs / "lora")
    card = ModelCard.load(runs / "lora" / "README.md")
    assert metadata_load(runs / "lora" / "README.md")["library_name"] == "peft"
    assert card.data.base_model == str(runs / "encoder") and card.data.pipeline_tag == "text-classification"
    assert card.data.tags == ["kdlora", "lora"]
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results == {f"dev {k}, as trained (fp32)": v for k, v in metrics["metrics"].items()}
    assert {r.dataset_name for r in card.data.eval_results} == {"custom"}
    assert f"{metrics['trainable_params']:,} of {metrics['total_params']:,}" in card.text
    assert "- **adapters**: on query, value; also training classifier" in card.text
    assert f"- **method settings**: rank {metrics['rank']}, lora_alpha 16, lora_dropout 0.1, use_rslora False" \
        in card.text


def test_a_derived_students_base_model_is_the_teacher_it_was_cut_from(runs):
    card = ModelCard.load(runs / "kd" / "README.md")
    assert card.data.base_model == str(runs / "encoder")  # the student's layers are the encoder's, fine-tuned
    assert "knowledge-distillation" in card.data.tags and f"`{runs / 'fft'}`" in card.text
    assert "- **transfer data**: none" in card.text  # the teacher's logits on the labelled examples only
    assert ModelCard.load(runs / "fft" / "README.md").data.library_name == "transformers"


def test_the_manifest_covers_the_card(runs, tmp_path):
    import shutil

    assert {"README.md", "adapter/README.md"} <= set(check_run(runs / "lora")["files"])
    shutil.copytree(runs / "lora", tmp_path / "lora")
    (tmp_path / "lora" / "README.md").write_text("edited")
    with pytest.raises(UserError, match="README.md: truncated"):
        check_run(tmp_path / "lora")


@pytest.mark.parametrize("name", ["lora", "fft"])
def test_the_cards_loading_code_runs_and_gives_the_runs_model(runs, name):
    namespace = {}
    exec(code_of((runs / name / "README.md").read_text()), namespace)
    model, tokenizer = namespace["model"], namespace["tokenizer"]
    batch = tokenizer(["a good film", "very bad"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, load_model(runs / name, merged=True)(**batch).logits)
    assert model.config.id2label == {0: "down", 1: "up"}


def test_a_mixed_precision_runs_card_gives_fp32_and_as_trained_scores():
    # a bf16 run's metrics.json, as `kdlora train` writes it (built here: bf16 needs a CPU with bf16 units)
    metrics = {"status": "done", "reason": None, "flags": [], "task": "sst2", "family": "bert", "method": "kd-lora",
               "rank": 8, "seed": 1, "metrics": {"accuracy": 0.875}, "fp32_metrics": {"accuracy": 0.8125},
               "precision": "bf16", "model": "distilbert-base-uncased", "label_names": ["negative", "positive"],
               "train_examples": 100, "steps": 4, "best_epoch": 1, "learning_rate": 5e-4,
               "effective_batch_size": 32, "run_key": "k", "trainable_params": 3, "total_params": 4,
               "adapter_params": 2, "peak_memory_mb": 1.5, "memory_kind": "cpu-peak-rss-delta", "train_seconds": 2.0,
               "cost_covers": "whole run", "teacher_logits": {"source": "cache"}, "lora_targets": ["q_lin", "v_lin"],
               "config": {"task": "sst2", "family": "bert", "method": "kd-lora", "epochs": 1, "teacher": "runs/fft",
                          "temperature": 2.0, "kd_alpha": 0.5, "lora_alpha": 16}}
    card = ModelCard(run_card(metrics, {"kind": "adapter"}, "runs/kd"))
    assert card.data.base_model == "distilbert-base-uncased" and card.data.datasets == ["nyu-mll/glue"]
    assert [(r.metric_name, r.metric_value, r.dataset_config) for r in card.data.eval_results] == [
        ("dev accuracy, as trained (bf16)", 0.875, "sst2"), ("dev accuracy, fp32", 0.8125, "sst2")]
    assert "| metric | fp32 | as trained (bf16) |\n|---|---|---|\n| accuracy | 0.8125 | 0.8750 |" in card.text
    assert "75.00%" in card.text  # 3 of 4 parameters train


@pytest.mark.parametrize("form", [["--format", "safetensors"], ["--format", "onnx"]])
def test_an_exports_card_names_its_form_and_score_and_its_code_loads_it(runs, tmp_path, form):
    out = tmp_path / "export"
    assert main(["export", str(runs / "lora"), "--out", str(out), *form]) == 0
    info = json.loads((out / "export.json").read_text())
    assert "README.md" in info["files"]
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == ("onnx" if "onnx" in form else "transformers")
    exported = card.data.eval_results[0]
    assert (exported.metric_value, exported.metric_name) == (info["accuracy"], f"dev accuracy, exported "
                                                                               f"({info['format']} fp32)")
    assert [r.metric_value for r in card.data.eval_results[1:]] == list(metrics_of(runs / "lora")["metrics"].values())
    namespace = {}
    exec(code_of(card.content), namespace)
    if "onnx" in form:
        assert namespace["logits"].shape == (1, 2)
    else:
        assert namespace["model"].config.id2label == {0: "down", 1: "up"}
