import pytest

from kdlora.bench.runner import MEASURED, plan, run_bench, worker_job
from kdlora.bench.settings import BenchSettings
from kdlora.cli import main
from kdlora.errors import UserError


def test_default_plan_counts_every_rank_and_measures_one_per_method():
    jobs = plan(BenchSettings())
    assert len(jobs) == 3 * (1 + 4 + 4)
    measured = [j.name for j in jobs if j.measure]
    assert measured == [f"{f}/{m}" for f in ("bert", "roberta", "deberta")
                        for m in ("fft", "lora/r8", "kd-lora/r8")]
    assert sum(j.measure for j in plan(BenchSettings(all_ranks=True))) == 3 * (1 + 4 + 4)
    assert not any(j.measure for j in plan(BenchSettings(params_only=True)))


@pytest.mark.parametrize("change,message", [
    (dict(families=("bert", "gpt2")), "unknown family 'gpt2'"),
    (dict(methods=("qlora",)), "unknown method 'qlora'"),
    (dict(ranks=(8, 0)), "ranks: 0 is not a positive integer"),
    (dict(device="tpu"), "unknown device 'tpu'"),
    (dict(batch_size=0), "batch_size: 0"),
    (dict(pad_to=64), "pad_to: 64"),
])
def test_bad_settings_are_user_errors(change, message):
    with pytest.raises(UserError, match=message):
        BenchSettings(**change)


@pytest.mark.parametrize("argv,message", [
    (["--families", "bert,gpt2"], "unknown family 'gpt2'"),
    (["--methods", "qlora"], "unknown method 'qlora'"),
    (["--ranks", "8,-1"], "ranks: -1 is not a positive integer"),
    (["--ranks", "eight"], "--ranks: must be integers separated by commas"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_cli_mistakes_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    try:
        code = main(["bench", "--params-only", "--out", str(tmp_path), *argv])
    except SystemExit as exc:  # argparse's own type errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_one_failed_configuration_keeps_the_other_rows():
    seen = []

    def launch(job):
        seen.append(job)
        if job["method"] == "lora":
            return {"error": "OutOfMemoryError: CUDA out of memory"}
        return {k: 1.5 for k in MEASURED} | {"memory_kind": "cpu-peak-rss-delta"}

    result = run_bench(BenchSettings(families=("minilm",), ranks=(8, 16), tiny=True), progress=False,
                       launch=launch)
    assert [(j["method"], j["rank"]) for j in seen] == [("fft", None), ("lora", 8), ("kd-lora", 8)]
    assert seen[0] == worker_job(BenchSettings(families=("minilm",), ranks=(8, 16), tiny=True),
                                 plan(BenchSettings(families=("minilm",), tiny=True))[0])
    rows = {(r["method"], r["rank"]): r for r in result["rows"]}
    assert rows["lora", 8]["error"] == "OutOfMemoryError: CUDA out of memory"
    assert rows["lora", 8]["eval_seconds"] is None and rows["lora", 8]["adapter_params"] == 2 * 2 * (32 * 8 + 8 * 32)
    assert rows["fft", None]["eval_seconds"] == 1.5 and rows["kd-lora", 8]["peak_memory_mb"] == 1.5
    assert rows["lora", 16]["error"] is None and rows["lora", 16]["eval_seconds"] is None
    assert result["config"]["measured_ranks"] == [8]
    assert result["config"]["memory_kind"] == "cpu-peak-rss-delta"


def test_params_only_cli_prints_exact_counts(capsys, tmp_path):
    assert main(["bench", "--params-only", "--families", "bert", "--ranks", "8,64", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lora_line = next(line for line in out.splitlines() if line.startswith("| BERT-base ") and "| LoRA " in line)
    assert lora_line.split("|")[3:5] == [" 0.296450M   ", " 2.360834M   "]
    assert "294,912" in out and "147,456" in out and "2,359,296" in out
    # counts only: no Table II with empty memory/time cells for `kdlora analyze` to reject
    assert not (tmp_path / "table-ii.csv").exists()
    assert (tmp_path / "params.csv").read_text().splitlines()[0] == "Model,Method,Rank 8,Rank 64,Model Family"
    assert f"wrote {tmp_path}/params.csv and" in out


def test_cuda_without_a_gpu_is_a_user_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU"):
        run_bench(BenchSettings(device="cuda", families=("minilm",), tiny=True), progress=False,
                  launch=lambda job: pytest.fail("no worker may start"))


def test_workers_fork_from_one_server_that_imported_the_libraries_once():
    import multiprocessing.forkserver

    from kdlora.bench.runner import PRELOADED, run_worker

    settings = BenchSettings(families=("minilm",), methods=("kd-lora",), tiny=True, eval_size=4)
    [job] = [j for j in plan(settings) if j.measure]
    first = run_worker(worker_job(settings, job))
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    second = run_worker(worker_job(settings, job))
    assert "error" not in first and "error" not in second
    assert first["memory_kind"] == second["memory_kind"] == "cpu-peak-rss-delta"
    assert first["eval_tokens"] == second["eval_tokens"] and first["peak_memory_mb"] > 0
    assert server is not None and multiprocessing.forkserver._forkserver._forkserver_pid == server
    assert multiprocessing.forkserver._forkserver._preload_modules == list(PRELOADED)

