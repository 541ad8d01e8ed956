import json
import math

import pytest
import torch

import kdlora.train.loop
import kdlora.train.run
from kdlora.families import FAMILIES
from kdlora.metrics import compute_metrics, unpack_predictions
from kdlora.train import run_training
from kdlora.train.loop import prediction_flags
from train_helpers import tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A tiny FFT teacher run per family (sst2 fixture), shared by the LoRA and KD-LoRA tests."""
    root = tmp_path_factory.mktemp("teachers")
    return {name: (root / name, run_training(tiny_config(family=name), root / name, progress=False))
            for name in sorted(FAMILIES)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fft_trains_every_weight_and_writes_the_run(teachers, family):
    run_dir, result = teachers[family]
    assert result["status"] == "done"
    assert result["trainable_params"] == result["total_params"] and result["adapter_params"] == 0
    assert json.loads((run_dir / "metrics.json").read_text())["run_key"] == result["run_key"]
    assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "tokenizer").is_dir()
    assert result["steps"] == 6 and result["warmup_steps"] == math.ceil(0.1 * 6)  # 24 examples, batch 4
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0 and result["score"] == result["metrics"]["accuracy"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", ["lora", "kd-lora"])
def test_lora_methods_save_a_peft_adapter(teachers, family, method, tmp_path):
    teacher_dir, teacher = teachers[family]
    result = run_training(tiny_config(family=family, method=method, teacher=str(teacher_dir), rank=4),
                          tmp_path / "run", progress=False)
    assert result["status"] == "done"
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert 0 < result["adapter_params"] < result["trainable_params"] < result["total_params"]
    if method == "kd-lora":
        assert result["total_params"] < teacher["total_params"]  # the smaller student
        assert result["teacher_logit_seconds"] > 0
    else:
        # the teacher's model plus its adapters: the head counted once (PEFT's frozen copy of it is not the model)
        assert result["total_params"] == teacher["total_params"] + result["adapter_params"]


def test_a_run_keeps_its_best_dev_predictions_and_gold_labels_for_paired_tests(teachers):
    run_dir, result = teachers["bert"]
    kept = result["dev_predictions"]
    predictions, labels = unpack_predictions(kept)
    assert (kept["split"], kept["metric"], kept["classes"], kept["positive_class"]) == ("validation", "accuracy", 2, 1)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]  # the fixture's dev.tsv, in order
    assert sum(predictions == labels) / 10 == result["metrics"]["accuracy"]  # the best evaluation's predictions
    written = (run_dir / "metrics.json").read_text()
    assert json.loads(written)["dev_predictions"] == kept
    assert f'"labels": "{kept["labels"]}"' in written  # one line, not one per example


def test_best_checkpoint_is_the_best_dev_score_and_warmup_follows_real_steps(tmp_path):
    result = run_training(tiny_config(epochs=3, warmup_ratio=0.5, learning_rate=5e-3), tmp_path, progress=False)
    scores = [h["score"] for h in result["history"]]
    assert result["steps"] == 18 and result["warmup_steps"] == 9
    assert result["score"] == max(scores) and result["best_epoch"] == scores.index(max(scores)) + 1


def test_mnli_scores_matched_and_mismatched(tmp_path):
    result = run_training(tiny_config("mnli", family="deberta"), tmp_path, progress=False)
    metrics = result["metrics"]
    assert {"matched_accuracy", "mismatched_accuracy", "accuracy"} <= set(metrics)
    assert result["score"] == pytest.approx((metrics["matched_accuracy"] + metrics["mismatched_accuracy"]) / 2)
    predictions, labels = unpack_predictions(result["dev_predictions"])  # the first dev split's: matched
    assert result["dev_predictions"]["split"] == "validation_matched" and len(labels) == 9
    assert sum(predictions == labels) / 9 == metrics["matched_accuracy"]


def test_regression_task_and_online_teacher(teachers, tmp_path):
    fft = run_training(tiny_config("stsb", family="roberta"), tmp_path / "fft", progress=False)
    assert set(fft["metrics"]) == {"pearson", "spearman", "pearson_spearman"}
    predictions, labels = unpack_predictions(fft["dev_predictions"])  # values to 7 significant digits
    assert predictions.dtype == float and len(predictions) == len(labels) == 8
    assert compute_metrics("stsb", predictions, labels)["pearson_spearman"] == \
        pytest.approx(fft["metrics"]["pearson_spearman"], abs=1e-5)
    kd = run_training(tiny_config("stsb", family="roberta", method="kd-lora", teacher=str(tmp_path / "fft"),
                                  online_teacher=True), tmp_path / "kd", progress=False)
    assert kd["status"] == "done" and "pearson_spearman" in kd["metrics"]
    assert kd["teacher_logits"]["source"] == "online"


def test_non_finite_loss_is_a_collapsed_run_not_an_exception(tmp_path, monkeypatch):
    nan = torch.tensor(float("nan"), requires_grad=True)
    monkeypatch.setattr(kdlora.train.loop, "forward_loss", lambda *a, **k: nan)
    result = run_training(tiny_config(), tmp_path, progress=False)
    assert result["status"] == "collapsed" and result["reason"] == "non-finite loss (nan) at step 1"
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "collapsed"
    assert not (tmp_path / "model").exists()


def test_constant_predictions_are_flags_and_majority_class_is_named():
    # dev labels 0, 1, 1: class 1 is the majority
    assert prediction_flags([1, 1, 1], [0, 1, 1], regression=False) == ["constant_predictions", "majority_class"]
    assert prediction_flags([0, 0, 0], [0, 1, 1], regression=False) == ["constant_predictions"]
    assert prediction_flags([0.5, 0.5], [1.0, 2.0], regression=True) == ["constant_predictions"]
    assert prediction_flags([0, 1, 1], [0, 1, 1], regression=False) == []


def test_kd_lora_without_teacher_is_a_user_error(tmp_path):
    from kdlora.errors import UserError

    with pytest.raises(UserError, match="pass --teacher RUN_DIR"):
        run_training(tiny_config(method="kd-lora"), tmp_path, progress=False)


def test_cli_train_writes_metrics_and_prints_a_summary(tmp_path, capsys):
    from kdlora.cli import main

    code = main(["train", "--task", "sst2", "--family", "bert", "--method", "lora", "--tiny", "--epochs", "1",
                 "--data-dir", str(tiny_config().data_dir), "--out", str(tmp_path), "--quiet", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("done: sst2 bert lora: accuracy")
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["tiny"] is True


def test_cli_config_file_errors_are_one_line(tmp_path, capsys):
    from kdlora.cli import main

    (tmp_path / "run.yaml").write_text("task: sst2\nfamily: bert\nmethod: lora\nrnak: 8\n")
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kdlora train: error: {tmp_path / 'run.yaml'}: unknown key 'rnak'") and err.count("\n") == 1
    assert main(["train", "--family", "bert", "--method", "lora", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "kdlora train: error: --task is required\n"
    assert not (tmp_path / "out").exists()


def test_cli_config_file_in_toml_takes_train_params_keys_and_flags_win(tmp_path, capsys):
    from kdlora.cli import main

    data = tiny_config().data_dir
    (tmp_path / "run.toml").write_text(f'''task = "sst2"\nfamily = "bert"\nmethod = "lora"\ntiny = true
data_dir = "{data}"\ndevice = "cpu"\nepochs = 1\nrank = 4\nlora_alpha = 8\nlearning_rate = 3e-4\nseed = 7\n''')
    assert main(["train", "--config", str(tmp_path / "run.toml"), "--seed", "9", "--out", str(tmp_path / "out"),
                 "--quiet"]) == 0
    config = json.loads((tmp_path / "out" / "metrics.json").read_text())["config"]
    assert (config["rank"], config["lora_alpha"], config["learning_rate"], config["seed"]) == (4, 8, 3e-4, 9)
    capsys.readouterr()
    (tmp_path / "grid.toml").write_text('task = "sst2"\nlearning_rate = [1e-4, 3e-4]\n')
    assert main(["train", "--config", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "out2")]) == 2
    assert capsys.readouterr().err == (f"kdlora train: error: {tmp_path / 'grid.toml'}: learning_rate = [0.0001, "
                                       "0.0003] is not a single value (one run takes one)\n")
    (tmp_path / "bad.toml").write_text('task = "sst2\n')
    assert main(["train", "--config", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "out2")]) == 2
    assert capsys.readouterr().err.startswith(f"kdlora train: error: {tmp_path / 'bad.toml'}: not valid TOML")
    assert not (tmp_path / "out2").exists()


def test_tiny_model_learns_the_toy_task_and_early_stopping_ends_it(tmp_path):
    result = run_training(tiny_config(family="minilm", epochs=10, learning_rate=1e-2, patience=2), tmp_path,
                          progress=False)
    assert result["status"] == "done" and result["score"] == 1.0
    # stops `patience` evaluations after the best one, all of them after warm-up (6 steps)
    assert len(result["history"]) == result["best_epoch"] + 2 < 10
    assert result["history"][result["best_epoch"]]["step"] > result["warmup_steps"]


def test_student_and_pretrained_flags_and_cuda_must_exist(tmp_path):
    from kdlora.cli import build_parser
    from kdlora.errors import UserError

    args = build_parser().parse_args(["train", "--task", "sst2", "--family", "bert", "--method", "kd-lora",
                                      "--pretrained", "some/folder", "--student", "derive:3", "--out", "x"])
    assert args.pretrained == "some/folder" and args.student == "derive:3"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            run_training(tiny_config(device="cuda"), tmp_path, progress=False)


def test_a_non_finite_loss_on_another_process_stops_this_one(tmp_path, monkeypatch):
    """Finding: each process checked only its own loss, so the others went on (and waited forever)."""
    import accelerate

    monkeypatch.setattr(accelerate.Accelerator, "reduce", lambda self, tensor, reduction="sum": tensor + 1)
    result = run_training(tiny_config(), tmp_path, progress=False)
    assert (result.status, result.steps) == ("collapsed", 0)
    assert result.reason == "non-finite loss on 1 of 1 processes at step 1"


def test_teacher_logits_are_made_by_the_main_process_first(teachers, tmp_path, monkeypatch):
    """Finding: every process computed (and wrote) the teacher-logit cache at once."""
    import contextlib

    import accelerate

    events = []

    @contextlib.contextmanager
    def main_first(self):
        events.append("enter")
        yield
        events.append("exit")

    real = kdlora.train.run.teacher_source_for
    monkeypatch.setattr(accelerate.Accelerator, "main_process_first", main_first)
    monkeypatch.setattr(kdlora.train.run, "teacher_source_for",
                        lambda *a, **k: events.append("teacher") or real(*a, **k))
    run_training(tiny_config(method="kd-lora", teacher=str(teachers["bert"][0])), tmp_path, progress=False)
    assert events == ["enter", "teacher", "exit"]


def test_memory_is_named_as_the_bench_names_it_and_is_the_runs_own(teachers):
    """Finding: train runs reported the lifetime ru_maxrss (imports, earlier runs, the teacher) under another name."""
    import psutil

    _, result = teachers["bert"]
    assert result.memory_kind == "cpu-peak-rss-delta"
    assert 0 < result.peak_memory_mb < psutil.Process().memory_info().rss / 2**20


def test_the_saved_best_model_reproduces_the_recorded_dev_score_exactly(tmp_path):
    from kdlora.data.encode import encode
    from kdlora.data.loaders import load_split
    from kdlora.data.tasks import get_task
    from kdlora.metrics import compute_metrics, task_score
    from kdlora.rundir import load_model, load_tokenizer
    from kdlora.train.teacher import predict_logits

    result = run_training(tiny_config(method="lora", epochs=3, learning_rate=5e-3), tmp_path, progress=False)
    task = get_task("sst2")
    dev = load_split(task, "validation", tiny_config().data_dir)
    model, tokenizer = load_model(tmp_path), load_tokenizer(tmp_path)
    logits = predict_logits(model, encode(dev, tokenizer, tiny_config().max_length), tokenizer)
    metrics = compute_metrics(task, logits.argmax(-1).tolist(), dev.labels)
    assert metrics == result.metrics and task_score(task, metrics) == result.score
    assert result.score == max(h["score"] for h in result.history)


def test_the_dev_subset_does_not_change_with_the_seed():
    """Finding: seeds drew different dev subsets, so they differed in what they were scored on, not only training."""
    from kdlora.data.tasks import get_task
    from kdlora.train import load_data

    one, two = (load_data(tiny_config(seed=s, max_train_samples=12, max_eval_samples=5), get_task("sst2"))
                for s in (1, 2))
    assert one["validation"].ids == two["validation"].ids and len(one["validation"]) == 5
    assert one["train"].ids != two["train"].ids  # training still follows the seed


def window_gradients(monkeypatch) -> list:
    """Every optimiser step's gradients as the loop clips them (a list that fills as training runs), with dropout
    off in the model trained (so that two batchings of the same examples compute the same)."""
    import accelerate

    import kdlora.train.start

    seen, real_start, real_clip = [], kdlora.train.start.starting_model, accelerate.Accelerator.clip_grad_norm_

    def starting_model(*args, **kwargs):
        start = real_start(*args, **kwargs)
        for module in start.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return start

    def clip(self, parameters, *args, **kwargs):
        parameters = list(parameters)
        seen.append([p.grad.clone() for p in parameters])
        return real_clip(self, parameters, *args, **kwargs)

    monkeypatch.setattr(kdlora.train.start, "starting_model", starting_model)
    monkeypatch.setattr(accelerate.Accelerator, "clip_grad_norm_", clip)
    return seen


def test_a_short_last_accumulation_window_is_the_mean_over_its_examples(tmp_path, monkeypatch):
    """Finding: accelerate divides every batch's loss by the full window's batch count, so a short last window
    weighed less. 22 examples at batch 4 accumulated over 4 batches are windows of 16 and 6 examples (batches
    4+4+4+4 and 4+2), the same examples in the same order as batch 16 with no accumulation (batches 16 and 6):
    each window's gradient must be the mean over its examples, so both give the same two gradients."""
    seen = window_gradients(monkeypatch)
    run_training(tiny_config(method="fft", max_train_samples=22, batch_size=4, grad_accum=4), tmp_path / "a",
                 progress=False)
    accumulated, seen[:] = list(seen), []
    run_training(tiny_config(method="fft", max_train_samples=22, batch_size=16), tmp_path / "b", progress=False)
    assert len(accumulated) == len(seen) == 2
    for mine, reference in zip(accumulated, seen, strict=True):
        for a, b in zip(mine, reference, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
