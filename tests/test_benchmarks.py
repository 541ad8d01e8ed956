"""The pure parts of the benchmark scripts: the GPU check's table and the precision benchmark's verdicts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_check import comparison  # noqa: E402
from main_job import LEVERS, experiment_text, variants, with_settings  # noqa: E402
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


def test_main_job_variants_turn_each_lever_on_alone_and_all_off_or_as_shipped():
    found = variants()
    assert list(found) == ["off", "shipped", "teacher-bf16", "warm-start", "bench-eval-64"]
    on = {name: [change is lever.on for change, lever in zip(changes, LEVERS, strict=True)]
          for name, changes in found.items()}
    assert on == {"off": [False, False, False], "shipped": [True, True, False], "teacher-bf16": [True, False, False],
                  "warm-start": [False, True, False], "bench-eval-64": [False, False, True]}


def test_main_job_writes_a_levers_settings_into_the_experiment():
    import tomllib

    text = "[train.params]\nepochs = 2\n\n[bench]\neval_size = 128\nseed = 0\n"
    changed = tomllib.loads(with_settings(with_settings(text, "bench", {"eval_size": 64}), "train.params",
                                          {"teacher_precision": "fp32"}))
    assert changed == {"train": {"params": {"epochs": 2, "teacher_precision": "fp32"}},
                       "bench": {"eval_size": 64, "seed": 0}}
    off = tomllib.loads(experiment_text(variants()["off"]))  # the bundled experiment, every lever off
    assert off["train"]["params"]["teacher_precision"] == "fp32" and off["bench"]["eval_size"] == 128
