"""The pure parts of the benchmark scripts: the GPU check's table, the precision benchmark's verdicts and the
distillation ablation's grid and cost table."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from distill_ablation import cost_rows, experiment_text, variants  # noqa: E402
from gpu_check import comparison  # noqa: E402
from precision import verdicts  # noqa: E402


def test_the_gpu_checks_table_sets_ours_beside_the_papers():
    bench = {"rows": [
        {"family": "bert", "method": "kd-lora", "precision": "bf16", "peak_memory_mb": 250.0,
         "memory_kind": "cuda-max-memory-allocated", "eval_seconds": 0.5, "error": None},
        {"family": "bert", "method": "lora", "rank": 16, "eval_seconds": None, "peak_memory_mb": None},
    ]}
    [line] = comparison(bench)  # the unmeasured rank-16 row is left out
    # the paper's Table II: DistilBERT-base KD-LoRA, 296.8MB, 5.36s
    assert line["paper_model"] == "DistilBERT-base"
    assert (line["paper_memory_mb"], line["paper_seconds"]) == (296.8, 5.36)
    assert (line["precision"], line["peak_memory_mb"], line["eval_seconds"]) == ("bf16", 250.0, 0.5)


def test_precision_verdicts_take_the_worst_row_and_the_accuracy_gap():
    figures = {"rows": [{"train": {"speedup": 2.3}, "eval": {"speedup": 4.0}},
                        {"train": {"speedup": 1.9}, "eval": {"speedup": 3.6}}],
               "demo": {"fp32/fft": {"accuracy": 0.800}, "bf16/fft": {"accuracy": 0.796},
                        "fp32/kd-lora": {"accuracy": 0.780}, "bf16/kd-lora": {"accuracy": 0.770}}}
    lines = {what: (value, met) for what, value, _, met in verdicts(figures)}
    assert lines["bf16 / fp32 train speedup (worst of 2)"] == (1.9, False)
    assert lines["bf16 / fp32 eval speedup (worst of 2)"] == (3.6, True)
    gap_fft, met_fft = lines["demo fft: |bf16 - fp32| dev accuracy, points"]
    gap_kd, met_kd = lines["demo kd-lora: |bf16 - fp32| dev accuracy, points"]
    assert round(gap_fft, 6) == 0.4 and met_fft  # 80.0 - 79.6 points
    assert round(gap_kd, 6) == 1.0 and not met_kd  # 78.0 - 77.0 points


def test_precision_verdicts_without_rows_say_not_measured():
    lines = verdicts({"skipped": "no bf16 units"})
    assert [(value, met) for _, value, _, met in lines] == [(None, None), (None, None)]


def test_the_ablations_variants_skip_hidden_states_where_no_method_has_them():
    assert list(variants(["all", 2000], True, 1.0, {"transfer_samples"})) == [
        "transfer all", "transfer all, hard label", "transfer 2000", "transfer 2000, hard label"]
    with_hidden = variants(["all"], False, 0.5, {"kd_hidden_weight"})
    assert with_hidden == {"transfer all": {"transfer_samples": "all"}, "hidden 0.5": {"kd_hidden_weight": 0.5},
                           "hidden 0.5, transfer all": {"kd_hidden_weight": 0.5, "transfer_samples": "all"}}


def test_the_ablations_experiment_file_is_the_main_jobs_with_kd_loras_own_settings(tmp_path):
    from kdlora.experiment import load_experiment
    from kdlora.sweep.backends import REAL
    from kdlora.sweep.expand import expand

    main_job = load_experiment("default").train
    text = experiment_text("t", ["kd-lora"], [42, 43], main_job.params, main_job.by_precision,
                           {"transfer_samples": 2000, "transfer_hard_label": True})
    (tmp_path / "t.toml").write_text(text)
    experiment = load_experiment(tmp_path / "t.toml")
    assert experiment.train.params == main_job.params and experiment.train.by_precision == main_job.by_precision
    specs = expand(experiment, REAL)
    assert [s.fields["method"] for s in specs] == ["fft", "kd-lora", "fft", "kd-lora"]  # each seed's teacher first
    assert specs[1].config["transfer_samples"] == 2000 and specs[1].config["transfer_hard_label"] is True
    assert specs[0].config["transfer_samples"] is None  # the teacher: no transfer data


def test_the_ablations_cost_table_takes_medians_per_variant():
    def record(method, seconds, memory, teacher, **config):
        return {"config": {"method": method, **config}, "train_seconds": seconds, "peak_memory_mb": memory,
                "teacher_logit_seconds": teacher, "partial_cost": False}

    rows = cost_rows([record("kd-lora", 10.0, 300.0, 2.0), record("kd-lora", 14.0, 310.0, 4.0),
                      record("kd-lora", 30.0, 400.0, 9.0, transfer_samples="all"),
                      record("kd-lora", 34.0, 420.0, 1.0, transfer_samples="all"),
                      record("kd-lora", 50.0, 430.0, 1.0, transfer_samples="all", transfer_hard_label=True)])
    assert rows == [
        {"variant": "kd-lora", "runs": 2, "train_seconds": 12.0, "peak_memory_mb": 305.0, "teacher_logit_seconds": 3.0},
        {"variant": "kd-lora (transfer all)", "runs": 2, "train_seconds": 32.0, "peak_memory_mb": 410.0,
         "teacher_logit_seconds": 5.0},
        {"variant": "kd-lora (transfer all, hard label)", "runs": 1, "train_seconds": 50.0, "peak_memory_mb": 430.0,
         "teacher_logit_seconds": 1.0}]
