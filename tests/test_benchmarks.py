"""The pure parts of the benchmark scripts (the GPU check's table, the precision benchmark's verdicts, the
distillation ablation's grid and cost table, the peers' ratios, the MFU table), and tiny smoke runs of peers.py
and mfu.py."""

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import main_job  # noqa: E402
import mfu  # noqa: E402
import peers  # noqa: E402
import pytest  # noqa: E402
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

    default = load_experiment("default").train
    text = experiment_text("t", ["kd-lora"], [42, 43], default.params, default.by_precision,
                           {"transfer_samples": 2000, "transfer_hard_label": True})
    (tmp_path / "t.toml").write_text(text)
    experiment = load_experiment(tmp_path / "t.toml")
    assert experiment.train.params == default.params and experiment.train.by_precision == default.by_precision
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


def _run(config, seed, wall, dev, params=1090, **extra):
    return {"method": "kd-lora", "config": config, "seed": seed, "wall_seconds": wall, "dev": dev, "dev_last": dev,
            "train_examples_per_s": extra.get("eps", 100.0), "peak_rss_mb": extra.get("mb", 1000.0),
            "trainable_params": params}


def test_peers_summary_takes_medians_and_the_dev_spread():
    runs = [_run("kdlora", 42, 40.0, 0.78), _run("kdlora", 43, 50.0, 0.79), _run("kdlora", 44, 44.0, 0.80),
            {"method": "kd-lora", "config": "trainer-best", "seed": 42, "error": "exit 1: boom", "wall_seconds": 3.0}]
    table = peers.summary(runs)
    ours = table["kd-lora"]["kdlora"]
    assert (ours["wall_seconds"], ours["dev"], ours["seeds"]) == (44.0, 0.79, 3)  # medians of three seeds
    assert ours["dev_spread"] == pytest.approx(0.80 - 0.78)
    assert table["kd-lora"]["trainer-best"]["wall_seconds"] is None  # its one run failed


def test_peers_ratios_are_kdlora_over_each_trainer_configuration():
    runs = [_run("kdlora", 42, 40.0, 0.790, eps=150.0, mb=900.0), _run("kdlora", 43, 40.0, 0.780, eps=150.0, mb=900.0),
            _run("trainer-defaults", 42, 80.0, 0.785, eps=60.0, mb=1200.0),
            _run("trainer-defaults", 43, 80.0, 0.785, eps=60.0, mb=1200.0),
            _run("trainer-best", 42, 36.0, 0.765, eps=200.0, mb=900.0, params=1091),
            _run("trainer-best", 43, 36.0, 0.765, eps=200.0, mb=900.0, params=1091)]
    defaults, best = peers.ratio_rows(peers.summary(runs))
    # kdlora's medians: 40 s, 150 ex/s, 900 MB, dev (0.790 + 0.780) / 2 = 0.785, spread 1 point
    assert defaults["wall_speedup"] == 80.0 / 40.0 and defaults["met"]  # 2.0x >= 1.5x
    assert (defaults["examples_per_s"], defaults["memory"]) == (150.0 / 60.0, 900.0 / 1200.0)
    assert defaults["dev_points"] == pytest.approx(0.0) and defaults["dev_within_noise"] is True
    assert best["wall_speedup"] == 36.0 / 40.0 and not best["met"]  # 0.9x < 1.0x
    assert best["dev_points"] == pytest.approx(2.0) and best["dev_within_noise"] is False  # 78.5 - 76.5 > 1 point
    assert best["params_equal"] is False
    lines = peers.ratio_lines([defaults, best])
    assert lines[1] == ("kd-lora   trainer-defaults    2.00x   1.5x   2.50x   0.75x    +0.00  met; dev within the "
                        "seeds' spread")
    assert lines[2].endswith("NOT met; dev gap beyond the seeds' spread; TRAINABLE PARAMETERS DIFFER")


def test_peers_ratios_with_one_seed_do_not_judge_noise_and_say_a_run_failed():
    runs = [_run("kdlora", 42, 40.0, 0.79), _run("trainer-defaults", 42, 60.0, 0.80)]
    defaults, best = peers.ratio_rows(peers.summary(runs))
    assert defaults["dev_within_noise"] is None and defaults["wall_speedup"] == 1.5 and defaults["met"]
    assert best == {"method": "kd-lora", "versus": "trainer-best", "missing": True}


def test_peak_memory_is_read_from_proc_status():
    assert peers.peak_kb("Name:\tpython\nVmPeak:\t 900 kB\nVmHWM:\t  524288 kB\nVmRSS:\t 1000 kB\n") == 524288
    assert peers.peak_kb("Name:\tgone\n") == 0


def test_mfu_utilisation_and_table():
    # 8.6016 GFLOP in 2 s = 4.3008 GFLOP/s: 0.1 % of 4.3008 TFLOP/s (bf16), 1.6 % of 0.2688 TFLOP/s (fp32)
    part = {"flops": 8.6016e9, "seconds": 2.0}
    use = mfu.utilisation(part, "bf16", {"bf16": 4.3008e12, "fp32": 0.2688e12})
    assert use["tflops"] == pytest.approx(0.0043008)
    assert use["mfu"] == pytest.approx(0.001) and use["mfu_by_peak"]["fp32"] == pytest.approx(0.016)
    no_unit = mfu.utilisation(part, "bf16", {"bf16": None, "fp32": 0.2688e12})
    assert no_unit["mfu"] is None
    row = {"method": "lora", "precision": "bf16", "train": part, "eval": part, "train_utilisation": use,
           "eval_utilisation": no_unit}
    header, train, evaluation = mfu.table_lines([row])
    assert train == "lora          train  bf16            8.6     2.00    0.004    0.1%     0.1%     1.6%"
    assert evaluation.split()[-3:] == ["n/a", "n/a", "1.6%"]


@pytest.mark.slow
def test_mfu_smoke_on_tiny_models(tmp_path, capsys):
    out = tmp_path / "mfu.json"
    assert mfu.main(["--tiny", "--methods", "fft,kd-lora", "--steps", "1", "--train-samples", "40",
                     "--precision", "fp32", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert [r["method"] for r in figures["rows"]] == ["fft", "kd-lora"]
    for row in figures["rows"]:
        assert row["train"]["flops"] > 0 and row["eval"]["real_tokens"] <= row["eval"]["padded_tokens"]
        assert row["eval"]["sequences"] == 40
    assert "fp32 peak" in capsys.readouterr().out


@pytest.mark.slow
def test_peers_smoke_on_tiny_models(tmp_path):
    """KD-LoRA through all three configurations (and kdlora's FFT teacher first), one process each."""
    out = tmp_path / "peers.json"
    proc = subprocess.run([sys.executable, str(Path(peers.__file__)), "--tiny", "--methods", "kd-lora", "--epochs",
                           "1", "--precision", "fp32", "--work", str(tmp_path / "runs"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert [(r["config"], r["method"]) for r in figures["runs"]] == [
        ("kdlora", "kd-lora"), ("trainer-defaults", "kd-lora"), ("trainer-best", "kd-lora")]
    assert {r["trainable_params"] for r in figures["runs"]} == {1090}  # the same adapter and head everywhere
    assert all(r["peak_rss_mb"] > 0 and r["teacher_logit_seconds"] > 0 for r in figures["runs"])
    assert [r["versus"] for r in figures["ratios"]] == ["trainer-defaults", "trainer-best"]
    assert "kdlora vs" in proc.stdout and "load average" in proc.stdout


def test_main_job_variants_turn_each_lever_on_alone_and_all_off_or_as_shipped():
    found = main_job.variants()
    assert list(found) == ["off", "shipped", "teacher-bf16", "warm-start", "bench-eval-64"]
    on = {name: [change is lever.on for change, lever in zip(changes, main_job.LEVERS, strict=True)]
          for name, changes in found.items()}
    assert on == {"off": [False, False, False], "shipped": [True, True, False], "teacher-bf16": [True, False, False],
                  "warm-start": [False, True, False], "bench-eval-64": [False, False, True]}


def test_main_job_writes_a_levers_settings_into_the_experiment():
    import tomllib

    text = "[train.params]\nepochs = 2\n\n[bench]\neval_size = 128\nseed = 0\n"
    bench = main_job.with_settings(text, "bench", {"eval_size": 64})
    changed = tomllib.loads(main_job.with_settings(bench, "train.params", {"teacher_precision": "fp32"}))
    assert changed == {"train": {"params": {"epochs": 2, "teacher_precision": "fp32"}},
                       "bench": {"eval_size": 64, "seed": 0}}
    off = tomllib.loads(main_job.experiment_text(main_job.variants()["off"]))  # the bundled experiment, every lever off
    assert off["train"]["params"]["teacher_precision"] == "fp32" and off["bench"]["eval_size"] == 128
