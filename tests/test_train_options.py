"""Training like people train: precision, gradient accumulation, trackers read back, energy."""

import json

import pytest
import torch
import yaml

import kdlora.train.tracking
from kdlora.cli import main
from kdlora.distill import kd_loss
from kdlora.train import run_training
from train_helpers import DATA, tiny_config

torch.set_num_threads(1)
CLI = ["train", "--task", "sst2", "--family", "bert", "--method", "fft", "--tiny", "--device", "cpu",
       "--data-dir", str(DATA / "sst2"), "--quiet", "--epochs", "1"]


def test_kd_loss_is_float32_from_bf16_logits():
    student = torch.tensor([[1.0, -2.0, 0.5], [0.25, 0.75, -1.0]])
    teacher = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, -0.5]])
    labels = torch.tensor([0, 1])
    low = kd_loss(student.bfloat16(), teacher.bfloat16(), labels)
    assert low.dtype == torch.float32
    # these values are exact in bf16, so the loss must equal the float32 one
    assert torch.equal(low, kd_loss(student, teacher, labels))


@pytest.mark.parametrize("method", ["fft", "lora"])
def test_bf16_training_where_the_cpu_supports_it(monkeypatch, tmp_path, method):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    result = run_training(tiny_config(method=method, precision="bf16"), tmp_path, progress=False)
    assert result["precision"] == "bf16" and result["environment"]["mixed_precision"] == "bf16"
    assert result["config"]["precision"] == "bf16"
    assert result["run_key"] != tiny_config(method=method).key()
    assert result["steps"] == 6 and 0.0 <= result["score"] <= 1.0
    weights = next((tmp_path / ("model" if method == "fft" else "adapter")).glob("*.safetensors"))
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(weights).values()} == {torch.float32}  # master weights stay fp32


def test_a_bf16_kd_run_computes_its_teacher_logits_in_bf16_when_told_auto(monkeypatch, tmp_path):
    """Issue 27: `teacher_precision` fp32 by default (every stored run's); auto is the run's precision and keys the
    run apart."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    run_training(tiny_config("sst2", "minilm", "fft"), tmp_path / "fft", progress=False)
    kd = dict(teacher=str(tmp_path / "fft"), precision="bf16")
    auto = run_training(tiny_config("sst2", "minilm", "kd-lora", teacher_precision="auto", **kd), tmp_path / "auto",
                        progress=False)
    fp32 = run_training(tiny_config("sst2", "minilm", "kd-lora", **kd), tmp_path / "fp32", progress=False)
    assert (auto.teacher_logits["precision"], auto.teacher_logits["source"]) == ("bf16", "computed")
    assert (fp32.teacher_logits["precision"], fp32.teacher_logits["source"]) == ("fp32", "computed")  # not bf16's
    assert "teacher_precision" not in tiny_config("sst2", "minilm", "kd-lora", **kd).identity()
    assert auto.run_key != fp32.run_key == tiny_config("sst2", "minilm", "kd-lora", **kd).key()
    # FFT reads no teacher: the setting does not make it another run
    assert tiny_config(teacher_precision="auto").key() == tiny_config().key()


@pytest.mark.parametrize(("argv", "message"), [
    (["--precision", "fp16"], "--precision fp16 needs a CUDA device"),
    (["--precision", "bf16"], "--precision bf16: this CPU (no AVX512-BF16 or AMX) has no bf16 support"),
    (["--precision", "int8"], "config: bad value for precision: 'int8'"),
    (["--grad-accum", "0"], "config: bad value for grad_accum: 0"),
    (["--report-to", "wandb"], "config: bad value for report_to: 'wandb'"),
])
def test_bad_training_options_are_one_line(monkeypatch, tmp_path, capsys, argv, message):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert main([*CLI, "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow"])
def test_a_missing_tracker_extra_is_one_line(monkeypatch, tmp_path, capsys, tracker):
    real = kdlora.train.tracking.importlib.util.find_spec
    monkeypatch.setattr(kdlora.train.tracking.importlib.util, "find_spec", lambda name: None if name == tracker
                        else real(name))
    assert main([*CLI, "--out", str(tmp_path), "--report-to", tracker]) == 2
    assert f"--report-to {tracker} needs the `{tracker}` extra: pip install 'kdlora[{tracker}]'" in \
        capsys.readouterr().err


def test_grad_accum_takes_one_step_per_n_batches(tmp_path):
    result = run_training(tiny_config(batch_size=2, grad_accum=3), tmp_path, progress=False)
    assert result["steps"] == 4  # 24 examples / batch 2 = 12 batches, 3 per optimiser step
    assert result["effective_batch_size"] == 2 * 3 * 1
    assert result["config"]["grad_accum"] == 3 and result["run_key"] != tiny_config(batch_size=2).key()


def test_trackers_log_loss_lr_evaluations_and_config(monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tiny_config(eval_steps=3, report_to="tensorboard,mlflow")  # 6 steps; 1 warm-up step (ceil 0.6)
    result = run_training(config, tmp_path, progress=False)
    # linear decay after one warm-up step: lr after step s is 1e-3 * (6 - s) / 5
    expected_lr = [1e-3 * (6 - s) / 5 for s in range(1, 7)]
    expected_eval = [(h["step"], h["score"]) for h in result["history"]]
    assert [step for step, _ in expected_eval] == [3, 6]

    events = EventAccumulator(str(tmp_path / "tracking" / "kdlora"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx(expected_lr)
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("eval/accuracy")] == expected_eval
    hparams = yaml.safe_load(next((tmp_path / "tracking" / "kdlora").glob("*/hparams.yml")).read_text())
    assert hparams["precision"] == "fp32" and hparams["batch_size"] == 4 and hparams["pretrained"] == "none"

    client = MlflowClient((tmp_path / "tracking" / "mlruns").as_uri())
    [experiment] = [e for e in client.search_experiments() if e.name == "kdlora"]
    [run] = client.search_runs([experiment.experiment_id])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/lr")] == pytest.approx(expected_lr)
    history = client.get_metric_history(run.info.run_id, "eval/accuracy")
    assert [(m.step, pytest.approx(m.value)) for m in history] == expected_eval
    assert run.data.params["grad_accum"] == "1" and run.data.params["task"] == "sst2"


def test_energy_is_stored_with_the_run(tmp_path):
    result = run_training(tiny_config(track_energy=True), tmp_path, progress=False)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["energy_kwh"] == result["energy_kwh"] > 0
    assert stored["emissions_g_co2eq"] == result["emissions_g_co2eq"] > 0
    assert stored["energy_country"] == "USA" and stored["energy_method"]


def test_the_report_shows_energy_beside_time_and_memory(tmp_path):
    from kdlora.analysis.store_report import write_study_report
    from kdlora.store import Store

    with Store(tmp_path / "r.db") as store:
        for seed, kwh in ((1, 0.001), (2, 0.003)):  # median 0.002 kWh = 2.000 Wh
            fields = {"task": "sst2", "family": "bert", "method": "fft", "rank": None, "seed": seed}
            store.start(f"k{seed}", "train", f"train sst2 bert fft s{seed}", {"seed": seed}, str(tmp_path), fields)
            store.finish(f"k{seed}", {**fields, "status": "done", "reason": None, "metrics": {"accuracy": 0.9},
                                      "score": 0.9, "train_seconds": 10.0 * seed, "peak_memory_mb": 100.0,
                                      "memory_kind": "cpu-peak-rss-process", "energy_kwh": kwh,
                                      "emissions_g_co2eq": 400 * kwh, "energy_method": "estimated (CPU: cpu_load)"})
        write_study_report(store, tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    # train s: median of 10, 20; g CO2-eq: median of 0.4, 1.2
    assert ("| sst2 | bert | FFT | – | – | 90.00 | 90.00 ± 0.00 | 2 | 0 | 0 | 0 | 15.0 | 100.0 | 2.000 | 0.800 |"
            in report)
    assert "Energy and emissions: codecarbon, offline (estimated (CPU: cpu_load))" in report


def test_bench_tracks_the_energy_of_each_evaluation():
    from kdlora.bench.runner import plan, worker_job
    from kdlora.bench.settings import BenchSettings
    from kdlora.bench.worker import measure

    settings = BenchSettings(families=("bert",), methods=("kd-lora",), ranks=(8,), tiny=True, eval_size=40,
                             batch_size=2, train_seq_len=8, track_energy=True)
    [job] = [j for j in plan(settings) if j.measure]
    row = measure(worker_job(settings, job))  # in this process: the worker's measurement without its start-up
    assert row["eval_energy_kwh"] > 0 and row["eval_g_co2eq"] > 0
    # 40 predictions: per 1,000 is 25 times the run's figure (kWh -> Wh: x 1,000)
    assert row["eval_wh_per_1000"] == pytest.approx(row["eval_energy_kwh"] * 1000 * 25)
    assert row["eval_g_co2eq_per_1000"] == pytest.approx(row["eval_g_co2eq"] * 25)
    assert row["energy_method"]


def test_grouping_by_length_sorts_each_group_and_puts_the_longest_batch_first():
    from kdlora.train.loop import grouped_by_length

    # groups of 4 examples, batches of 2; lengths by example: 0:1 1:8 2:2 3:7 | 4:3 5:6 6:4 7:5
    assert grouped_by_length(list(range(8)), [1, 8, 2, 7, 3, 6, 4, 5], 4, 2) == [1, 3, 2, 0, 5, 7, 6, 4]
    # the longest example (4, length 9) is in the third batch: it swaps places with the first
    assert grouped_by_length(list(range(8)), [1, 2, 3, 4, 9, 5, 6, 7], 4, 2) == [4, 7, 1, 0, 3, 2, 6, 5]


def test_a_length_grouped_epoch_is_a_seeded_permutation_that_pads_less():
    from kdlora.train.loop import EpochShuffle

    lengths = [12 + (i * 37) % 53 for i in range(640)]  # 12..64 tokens, as the snippets
    grouped, plain = EpochShuffle(640, 42, lengths, 32), EpochShuffle(640, 42)
    order = list(grouped)
    assert sorted(order) == list(range(640)) and order == list(EpochShuffle(640, 42, lengths, 32))
    grouped.set_epoch(2)
    assert list(grouped) != order  # another epoch, another order

    def padded(sequence):  # tokens after dynamic padding: each batch padded to its longest
        return sum(32 * max(lengths[i] for i in sequence[s:s + 32]) for s in range(0, 640, 32))

    assert padded(order) < 0.8 * padded(list(plain))


def test_grouping_by_length_keys_a_run_apart_only_when_on():
    assert "group_by_length" not in tiny_config().identity()
    assert tiny_config(group_by_length=True).key() != tiny_config().key()
