import json

import pytest

import fake_backends  # tests/ is on sys.path (pytest's rootdir insertion)
from kdlora.analysis.store_report import write_study_report
from kdlora.cli import main
from kdlora.experiment import parse_experiment
from kdlora.store import Store
from kdlora.sweep.driver import run_sweep
from kdlora.sweep.executors import LocalExecutor

# sst2 on BERT-base (a Table I cell of the paper), seeds 1, 2, 13 (seed 13's LoRA run predicts one class: flagged),
# and a bench of the same family so the trade-off joins both
EXPERIMENT = """
name = "tiny-study"
[train]
tasks = ["sst2"]
families = ["bert"]
ranks = [8]
seeds = [1, 2, 13]
[bench]
families = ["bert", "roberta"]
ranks = [8, 16]
"""


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "r.db") as store:
        run_sweep(parse_experiment(EXPERIMENT), store, LocalExecutor(), fake_backends.BACKENDS, progress=False)
        yield store


def test_report_from_a_small_store(store, tmp_path):
    out = tmp_path / "report"
    results = write_study_report(store, out)
    assert results["runs"] == {"bench": {"done": 2}, "train": {"done": 9}}
    lora = next(a for a in results["aggregates"] if a["method"] == "lora")
    # fake scores: 0.88 + 0.01 * (seed % 3) - 0.001 * 8 -> seeds 1, 2, 13: 0.882, 0.892, 0.882 (flagged, counted)
    assert lora["n"] == 3 and lora["constant"] == 1 and lora["median"] == pytest.approx(0.882)
    assert results["flags"] == {"train_runs": 9, "done": 9, "constant_predictions": 1, "majority_class": 1,
                                "excluded": False}
    fft = next(a for a in results["aggregates"] if a["method"] == "fft")
    assert fft["median"] == pytest.approx(0.91)  # 0.91, 0.92, 0.91
    sst2 = next(r for r in results["table_i"]["rows"] if r["Task"] == "SST-2")
    assert sst2["BERT-base LoRA"] == pytest.approx(88.2)
    compared = {(c["row"], c["column"]): c for c in results["table_i_vs_paper"]}
    assert compared[("SST-2", "BERT-base LoRA")]["reported"] == 92.6
    assert compared[("SST-2", "BERT-base LoRA")]["difference"] == pytest.approx(88.2 - 92.6)
    [bert, roberta] = results["tradeoffs"]
    # kd-lora seeds 1, 2, 13: 0.862, 0.872, 0.862
    assert bert["ratios"]["score_vs_lora"] == pytest.approx(0.862 / 0.882)
    assert bert["ratios"]["inference_speed_vs_fft"] == pytest.approx(2.0) and roberta["score"] is None

    report = (out / "report.md").read_text()
    for heading in ("## Runs", "## Quality: Table I (measured)", "### Reported vs measured (Table I)",
                    "## Efficiency: Table II (measured)", "## Trade-off: score next to cost",
                    "## Deployment: the student in each form against the teacher"):
        assert heading in report
    assert "| SST-2 | Accuracy | 91.0 | 88.2 (1/3 constant) | 86.2 |" in report
    assert "1 of 9 train runs predict one constant class or value on dev (flag `constant_predictions`; 1 of them " \
        "the majority class" in report
    assert "KD-LoRA keeps 97.7 % of LoRA's score and 94.7 % of FFT's" in report
    # the fake bench gives every method a throughput of 100 sequences/s: the student runs at 1.00x the teacher
    assert [(d["role"], d["speedup"], d["given_up_points"]) for d in results["deployment"]][:2] == [
        ("teacher", 1.0, None), ("student", 1.0, pytest.approx(100 * (0.91 - 0.862)))]
    for name in ("pareto_memory.png", "pareto_inference.png", "pareto_params.png", "deployment.png"):
        assert f"(plots/{name})" in report and (out / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    table_ii = (out / "bench" / "table-ii.csv").read_text().splitlines()
    assert table_ii[0].startswith("Model,Method,Rank 8,Rank 16,Memory Usage,Inference Time")
    assert len(table_ii) == 1 + 6 and (out / "efficiency" / "report.md").is_file()
    assert json.loads((out / "results.json").read_text())["table_i"] == results["table_i"]


def test_exclude_flagged_leaves_them_out_and_says_so(store, tmp_path, capsys):
    out = tmp_path / "strict"
    assert main(["report", "--db", str(store.path), "--out", str(out), "--exclude-flagged"]) == 0
    report = (out / "report.md").read_text()
    assert "| SST-2 | Accuracy | 91.0 | 88.7 (1 flagged left out) | 86.2 |" in report  # 0.882 and 0.892 left
    assert "left out of every figure (--exclude-flagged)" in report


GRID = """
name = "grid"
[train]
tasks = ["sst2"]
families = ["bert"]
methods = ["fft", "lora"]
ranks = [8]
seeds = [1]
[train.params]
learning_rate = [0.001, 0.002, 0.003]
"""


def test_a_grid_is_every_configuration_and_top_k_median_selects(tmp_path, capsys):
    """Finding: experiments held one value per setting; no top-k protocol; a second value "superseded" the first."""
    with Store(tmp_path / "g.db") as store:
        run_sweep(parse_experiment(GRID), store, LocalExecutor(), fake_backends.BACKENDS, progress=False)
        assert sorted(r.label for r in store.runs(method="fft")) == [
            "train sst2 bert fft s1 learning_rate=0.001", "train sst2 bert fft s1 learning_rate=0.002",
            "train sst2 bert fft s1 learning_rate=0.003"]
        # fake FFT scores 0.90 + 0.01 + 10 * lr: 0.92, 0.93, 0.94; LoRA 0.88 + 0.01 - 0.008 + 10 * lr
        default = write_study_report(store, tmp_path / "default")
        assert [round(a["median"], 3) for a in default["configurations"]] == [0.92, 0.93, 0.94, 0.892, 0.902, 0.912]
        assert next(r for r in default["table_i"]["rows"] if r["Task"] == "SST-2")["BERT-base FFT"] == \
            pytest.approx(94.0)
    assert main(["report", "--db", str(tmp_path / "g.db"), "--out", str(tmp_path / "top"), "--select",
                 "top-k-median", "--k", "2"]) == 0
    top = json.loads((tmp_path / "top" / "results.json").read_text())
    sst2 = next(r for r in top["table_i"]["rows"] if r["Task"] == "SST-2")
    assert sst2["BERT-base FFT"] == pytest.approx(93.5) and sst2["BERT-base LoRA"] == pytest.approx(90.7)
    assert "the median of the top 2 configurations by dev score" in (tmp_path / "top" / "report.md").read_text()
    assert main(["report", "--db", str(tmp_path / "g.db"), "--out", str(tmp_path / "last"), "--select-epoch",
                 "last"]) == 0
    last = json.loads((tmp_path / "last" / "results.json").read_text())
    assert next(r for r in last["table_i"]["rows"] if r["Task"] == "SST-2")["BERT-base FFT"] == pytest.approx(93.5)


def test_report_command_and_experiment_filter(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KDLORA_BACKENDS", "fake_backends:BACKENDS")
    other = tmp_path / "other.toml"
    other.write_text(EXPERIMENT.replace("seeds = [1, 2, 13]", "seeds = [1]").replace("[bench]\n", "[bench]\n"
                                                                                     "eval_size = 7\n"))
    out = tmp_path / "only"
    assert main(["report", "--db", str(store.path), "--experiment", str(other), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out}/report.md"
    results = json.loads((out / "results.json").read_text())
    assert results["runs"] == {"train": {"done": 3}}  # its bench runs (eval_size 7) were never run
    assert "No bench runs in the store." in (out / "report.md").read_text()


def test_report_of_an_empty_store_and_failure_leaves_folder(tmp_path, monkeypatch):
    with Store(tmp_path / "e.db") as empty:
        results = write_study_report(empty, tmp_path / "out")
    assert results["aggregates"] == [] and "No finished train runs." in (tmp_path / "out" / "report.md").read_text()
    (tmp_path / "out" / "report.md").write_text("previous")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("kdlora.analysis.store_report._markdown", broken)
    with Store(tmp_path / "e.db") as empty, pytest.raises(RuntimeError):
        write_study_report(empty, tmp_path / "out")
    assert (tmp_path / "out" / "report.md").read_text() == "previous"


def test_a_resumed_runs_costs_are_left_out_and_said(tmp_path):
    """Finding: a resumed run's train_seconds, energy and peak memory covered only the segment after the resume."""
    with Store(tmp_path / "r.db") as store:
        for seed, seconds, memory, resumed in ((1, 10.0, 500.0, None), (2, 11.0, 520.0, None), (3, 2.0, 900.0, 6)):
            config = {"task": "sst2", "family": "bert", "method": "fft", "seed": seed}
            store.start(f"k{seed}", "train", f"train sst2 bert fft s{seed}", config, str(tmp_path / f"r{seed}"),
                        {"task": "sst2", "family": "bert", "method": "fft", "rank": None, "seed": seed})
            store.finish(f"k{seed}", {"status": "done", "score": 0.9, "metrics": {"accuracy": 0.9},
                                      "train_seconds": seconds, "peak_memory_mb": memory,
                                      "memory_kind": "cpu-peak-rss-delta", "resumed_at_step": resumed,
                                      "cost_covers": "after resume" if resumed else "whole run"})
        results = write_study_report(store, tmp_path / "report")
    [fft] = results["aggregates"]
    # the resumed seed 3 (2 s after its resume, 900 MB with the checkpoint loaded) counts for its score only
    assert (fft["n"], fft["partial_costs"], fft["train_seconds"], fft["peak_memory_mb"]) == (3, 1, 10.5, 510.0)
    assert results["resumed_costs_left_out"] == 1
    assert "1 resumed run: its training time, energy and peak memory cover only the segment after the resume" in \
        (tmp_path / "report" / "report.md").read_text()


def test_the_report_says_what_the_train_runs_ran(store):
    from kdlora.analysis.store_report import what_trained

    runs = store.runs()
    # the fake backends' configs: epochs 1 from the experiment, no limit on training sentences
    assert what_trained(runs) == "\nWhat the 9 train runs ran: max train samples all, epochs 1."
    trained = [r for r in runs if r.kind == "train"]
    for run, precision in zip(trained, ["bf16"] * 8 + ["fp32"], strict=True):
        run.config["precision"] = precision
        run.environment = {"cpu_model": "AMD EPYC", "precision_auto": "bf16",
                           "precision_auto_why": "this CPU computes bf16 natively: avx512_bf16"}
    assert what_trained(runs) == (
        "\nWhat the 9 train runs ran: precision bf16 / fp32, max train samples all, epochs 1, CPU AMD EPYC; "
        "precision auto there: bf16 (this CPU computes bf16 natively: avx512_bf16).")
    assert what_trained([r for r in runs if r.kind == "bench"]) == ""
    for run, together in zip(trained, [2, 2, 3, 1, 1, 1, 1, 1, 1], strict=True):
        run.result["parallel_runs"] = together  # as `--jobs` records it: the most runs at once while it ran
    assert what_trained(runs).endswith("; 3 of them ran beside other runs (`--jobs`, up to 3 at once), their seconds "
                                       "measured sharing the CPU.")
    for run in trained:
        run.result["parallel_runs"] = 1  # `--jobs 2`, but every run ran alone: no word of sharing
    assert what_trained(runs).endswith("CPU AMD EPYC; precision auto there: bf16 (this CPU computes bf16 natively: "
                                       "avx512_bf16).")
