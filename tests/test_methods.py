"""The method registry: one plug-in per method, read by train, sweep, bench and report; the new methods' exact
counts, their training (AdaLoRA's budget hook and regulariser) and merged == unmerged."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlora.cli import main
from kdlora.config import TrainConfig
from kdlora.errors import UserError
from kdlora.families import FAMILIES
from kdlora.methods import METHODS, get_method
from kdlora.modeling import count
from kdlora.params import ParamCounts
from kdlora.rundir import load_model, load_tokenizer
from kdlora.train import run_training
from train_helpers import DATA, tiny_config

SRC = Path(__file__).resolve().parents[1] / "src" / "kdlora"

# BERT-base: 12 layers, width 768; DistilBERT: 6 layers. Query and value adapted, rank 8. Heads: BERT's classifier
# 768 x 2 + 2 = 1,538; DistilBERT's pre_classifier 768 x 768 + 768 and classifier 1,538 = 592,130.
BERT_HEAD, DISTIL_HEAD = 768 * 2 + 2, 768 * 768 + 768 + 768 * 2 + 2
LORA_PAIR = 768 * 8 + 8 * 768                      # A (r x in) + B (out x r) of one adapted matrix
EXACT = {  # method -> adapter parameters of BERT-base / DistilBERT at rank 8
    "student-lora": 6 * 2 * LORA_PAIR,             # the KD-LoRA student's adapters, no KD: 147,456
    "dora": 12 * 2 * (LORA_PAIR + 768),            # + one magnitude weight per output feature: 313,344
    "kd-dora": 6 * 2 * (LORA_PAIR + 768),          # 156,672
    "adalora": 12 * 2 * (LORA_PAIR + 8),           # + r singular values (lora_E, r x 1): 295,104
    "kd-adalora": 6 * 2 * (LORA_PAIR + 8),         # 147,552
}
TOTAL = {"teacher": 109_483_778, "student": 66_955_010}  # adapters merged: the plain models (test_bench_params)


@pytest.mark.parametrize("name", list(EXACT))
def test_new_methods_have_exact_counts_with_their_own_adapter_parameters(name):
    method = METHODS[name]
    head = DISTIL_HEAD if method.role == "student" else BERT_HEAD
    assert count(FAMILIES["bert"], method, 8) == ParamCounts(EXACT[name], EXACT[name] + head, TOTAL[method.role])
    assert EXACT["dora"] == 313_344 and EXACT["adalora"] == 295_104 and EXACT["student-lora"] == 147_456


def test_registry_names_labels_colours_and_settings_are_the_cli_and_config():
    assert len({m.label for m in METHODS.values()}) == len({m.colour for m in METHODS.values()}) == len(METHODS)
    assert get_method("KD-AdaLoRA").name == "kd-adalora" and get_method("student_lora").name == "student-lora"
    names = set(TrainConfig.setting_names())
    assert {"rank", "lora_alpha", "kd_alpha", "temperature", "target_rank", "orth_reg_weight"} <= names
    with pytest.raises(UserError, match="bad value for target_rank: 9"):  # above the initial rank 8
        TrainConfig(task="sst2", family="bert", method="adalora", target_rank=9)


def test_runs_stored_before_the_methods_became_plug_ins_keep_their_keys():
    """AdaLoRA's new fields at their defaults stay out of a key and the retired `use_dora = false` is put back, so
    the key is the hash of exactly what TrainConfig held before."""
    from kdlora.keys import run_key

    config = TrainConfig(task="sst2", family="bert", method="lora")
    before = {k: v for k, v in config.to_dict().items()
              if k not in ("target_rank", "adalora_tinit", "adalora_tfinal", "adalora_delta_t", "orth_reg_weight",
                           "save_checkpoints", "report_to", "track_energy", "positive_label", "dataset",
                           "dataset_revision", "train_split", "validation_split", "test_split", "loraplus_lr_ratio",
                           "vera_d_initial", "vera_projection_seed", "transfer_file", "transfer_samples",
                           "transfer_hard_label", "kd_hidden_weight", "kd_layers", "kd_hidden_loss",
                           "kd_attention_weight", "teacher_precision",
                           "group_by_length")}
    assert config.key() == run_key("train", {**before, "use_dora": False}, 1)
    assert TrainConfig(task="sst2", family="bert", method="adalora", target_rank=2).key() != \
        TrainConfig(task="sst2", family="bert", method="adalora").key()


def test_no_method_name_or_list_outside_methods():
    """The registry is the only list: no method name as a string literal in the package outside methods/
    (README-like docstrings and the bundled experiment files are text for people, not lists the code reads)."""
    import ast

    names = set(METHODS) | {m.label for m in METHODS.values()}
    found = []
    for path in SRC.rglob("*.py"):
        if "methods" in path.relative_to(SRC).parts:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        found += [f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings]
    assert found == []


def test_analysis_imports_the_registry_without_torch():
    code = "import sys, kdlora.analysis.store_report, kdlora.analysis.plots; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _same_logits_merged_and_not(run_dir):
    batch = load_tokenizer(run_dir)(["a great film", "not good at all"], padding=True, return_tensors="pt")
    with torch.no_grad():
        unmerged = load_model(run_dir)(**batch).logits
        merged = load_model(run_dir, merged=True)(**batch).logits
    assert torch.allclose(unmerged, merged, atol=1e-5)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "fft"
    run_training(tiny_config(method="fft"), out, progress=False)
    return out


# tiny BERT (width 32, rank 8): teacher 2 layers, student 1 layer; query and value adapted
TINY_PAIR = 32 * 8 + 8 * 32
TINY = {"student-lora": 1 * 2 * TINY_PAIR, "kd-dora": 1 * 2 * (TINY_PAIR + 32), "kd-adalora": 1 * 2 * (TINY_PAIR + 8),
        "dora": 2 * 2 * (TINY_PAIR + 32), "adalora": 2 * 2 * (TINY_PAIR + 8)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["student-lora", "kd-dora", "kd-adalora"])
def test_student_methods_train_save_and_merge(tmp_path, teacher, name):
    method = METHODS[name]
    config = tiny_config(method=name, teacher=str(teacher) if method.distills else None)
    result = run_training(config, tmp_path / "run", progress=False)
    assert result.status == "done" and result.method == name and result.adapter_params == TINY[name]
    assert result.teacher_logits is not None if method.distills else result.teacher_logits is None
    _same_logits_merged_and_not(tmp_path / "run")


def scored_as(monkeypatch, scores: tuple, seen: list | None = None) -> None:
    """Dev scores of the run's evaluations in turn are `scores` (which epoch is the best is then the test's choice);
    with `seen`, each evaluation appends (the first dev batch's inputs, the model's logits on them, its AdaLoRA rank
    pattern as ranks kept per matrix)."""
    import kdlora.train.loop as fit_module

    real_evaluate, count = fit_module.evaluate, [0]

    def evaluate(model, loaders, task, accelerator):
        result = real_evaluate(model, loaders, task, accelerator)
        if seen is not None:
            batch = next(iter(next(iter(loaders.values()))))
            inputs = {k: v for k, v in batch.items() if k not in ("idx", "labels")}
            model.eval()
            with torch.no_grad():
                logits = model(**inputs).logits.clone()
            model.train()
            pattern = model.peft_config["default"].rank_pattern or {}
            seen.append((inputs, logits, {name.replace(".default", ""): sum(mask) for name, mask in pattern.items()}))
        result.score = scores[count[0]]
        count[0] += 1
        return result

    monkeypatch.setattr(fit_module, "evaluate", evaluate)


def test_adalora_steps_its_budget_to_the_target_and_records_it(tmp_path, monkeypatch):
    # 24 sst2 fixture examples / batch 4 = 6 optimiser steps an epoch, 2 epochs: 12 steps; tinit int(0.1 x 12) = 1,
    # tfinal int(0.2 x 12) = 2: the budget is fixed at step 12 - 2 = 10; the last epoch is made the best
    scored_as(monkeypatch, (0.5, 0.9))
    examples = len((DATA / "sst2" / "train.tsv").read_text().splitlines()) - 1
    result = run_training(tiny_config(method="adalora", epochs=2), tmp_path / "run", progress=False)
    steps = 2 * -(-examples // 4)
    budget = result.method_details
    assert result.steps == budget["total_step"] == steps == 12 and result.best_epoch == 2
    assert (budget["tinit"], budget["tfinal"]) == (int(0.1 * steps), int(0.2 * steps))
    # 2 layers x (query, value) = 4 matrices: initial rank 8 each, target 4 on average
    assert (budget["initial_budget"], budget["target_budget"]) == (4 * 8, 4 * 4)
    assert budget["final_budget"] == 4 * 4 and len(budget["ranks_kept"]) == 4
    _same_logits_merged_and_not(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["method_details"]["final_budget"] == 16


def test_adalora_saves_the_model_it_scored_when_the_best_epoch_is_not_the_last(tmp_path, monkeypatch):
    """3 epochs of 6 steps (24 examples / batch 4): the budget shrinks from 4 x 8 = 32 ranks after step
    int(0.1 x 18) = 1 to 4 x 4 = 16, fixed at step 18 - int(0.2 x 18) = 15; at epoch 1's end (step 6) it is
    16 + 16 x (1 - 5/14)^3 = 20 (PEFT's cubic schedule). Epoch 1 is made the best: the saved adapter must be the one
    scored then (its weights cut to its own rank pattern, not to the final one)."""
    seen = []
    scored_as(monkeypatch, (0.9, 0.5, 0.1), seen)
    result = run_training(tiny_config(method="adalora", epochs=3), tmp_path / "run", progress=False)
    assert result.best_epoch == 1 and result.steps == 18 and len(seen) == 3
    (inputs, at_best, best_ranks), (_, at_end, end_ranks) = seen[0], seen[2]
    assert (sum(best_ranks.values()), sum(end_ranks.values())) == (20, 16)  # the budget moved after the best
    assert {k.replace(".default", ""): v for k, v in result.method_details["ranks_kept"].items()} == best_ranks
    with torch.no_grad():
        saved = load_model(tmp_path / "run")(**inputs).logits
    assert torch.allclose(saved, at_best, atol=1e-5)
    assert not torch.allclose(saved, at_end, atol=1e-5)


def test_adalora_loss_adds_its_orthogonal_regulariser():
    from types import SimpleNamespace

    from kdlora.methods.base import task_loss
    from kdlora.modeling import adaptation

    torch.manual_seed(0)
    method = METHODS["adalora"]
    base = FAMILIES["bert"].teacher.build(tiny=True)
    model = method.prepare(base, adaptation(base), method.default_settings(8), total_steps=10)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                param.zero_()  # P Pᵀ = Qᵀ Q = 0: each term is ||-I_8||_F = sqrt(8)
    batch = {"input_ids": torch.tensor([[2, 5, 6, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "labels": torch.tensor([1])}
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = method.loss(model, outputs, batch, settings=SimpleNamespace(orth_reg_weight=0.5))
    assert torch.isclose(loss - task_loss(outputs.logits, batch["labels"], False), torch.tensor(0.5 * 8 ** 0.5))


@pytest.mark.slow
def test_a_toy_method_runs_through_train_sweep_report_and_bench(tmp_path, toy, capsys):
    data = str(DATA / "sst2")
    assert main(["train", "--task", "sst2", "--family", "bert", "--method", "toy-lora", "--tiny", "--data-dir", data,
                 "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["method"], metrics["adapter_params"]) == ("toy-lora", 2 * 2 * TINY_PAIR)
    experiment = tmp_path / "toy.toml"
    experiment.write_text(f'name = "toy"\n[train]\ntasks = ["sst2"]\nfamilies = ["bert"]\nmethods = ["toy-lora"]\n'
                          f'[train.params]\ntiny = true\nepochs = 1\nbatch_size = 4\ndevice = "cpu"\n'
                          f'data_dir = "{data}"\n')
    db = str(tmp_path / "r.db")
    assert main(["sweep", str(experiment), "--db", db, "--no-progress"]) == 0
    assert main(["report", "--db", db, "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "BERT-base Toy-LoRA" in report
    capsys.readouterr()
    assert main(["bench", "--params-only", "--tiny", "--families", "bert", "--methods", "toy-lora", "--ranks", "8",
                 "--out", str(tmp_path / "bench"), "--no-progress"]) == 0
    assert f"{2 * 2 * TINY_PAIR:,}" in capsys.readouterr().out


def test_student_lora_on_a_derived_student_is_cut_from_the_sweeps_fft_teacher():
    """Finding: a sweep gave only distilling methods a teacher, so student-lora on minilm (whose student is cut
    from the trained FFT teacher) failed with "pass --teacher"; on DistilBERT it needs none."""
    from kdlora.experiment import parse_experiment
    from kdlora.sweep.backends import REAL
    from kdlora.sweep.expand import expand

    for family, taught in (("minilm", True), ("bert", False)):
        specs = expand(parse_experiment(f'name = "a"\n[train]\ntasks = ["sst2"]\nfamilies = ["{family}"]\n'
                                        'methods = ["student-lora"]\n'), REAL)
        assert [s.fields["method"] for s in specs] == (["fft", "student-lora"] if taught else ["student-lora"])
        assert specs[-1].needs == ((specs[0].key,) if taught else ())  # the keys it waits for
