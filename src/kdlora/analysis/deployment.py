"""The deployment table: per family, the FFT teacher in fp32 eager PyTorch as 1.00x, then the KD-LoRA student in
every inference form `kdlora bench` measured (runtime, precision, quantisation): its speedup, its size on disk,
the dev score of a trained run where the store has one, and the score given up against the teacher.

Speed and size come from bench rows (random weights: they do not depend on the values), the throughput of each
form over the teacher's. Scores come from train runs (medians over seeds, averaged over the tasks both methods
have; see `tradeoff.family_tradeoffs`), as scored in training: fp32, or a bf16 / fp16 run's dev under autocast (its
`dev_precision`; the report names them; such a run also records its saved fp32 model's `fp32_score`). Every form of
the student shows that run's score; what a form itself gives up is measured by `kdlora export` (its export.json,
against the saved model in fp32) and benchmarks/deploy.py.
Never imports training code.
"""

from __future__ import annotations

from pathlib import Path

from kdlora.analysis.tradeoff import PAPER_FORM, pareto_plot
from kdlora.bench.forms import row_form
from kdlora.methods import paper_trio

SPEEDUP_LABEL = "inference speedup vs the FFT teacher, fp32 eager (×)"


def form_name(form: tuple[str, str, str]) -> str:
    runtime, precision, quantize = form
    runtime = "ONNX Runtime" if runtime == "onnxruntime" else "PyTorch"
    return f"{runtime} {quantize if quantize != 'none' else precision}"


def deployment_table(trades: list[dict], bench_rows: list[dict]) -> list[dict]:
    """Rows (family, model, role, form, speedup, size_mb, score, given_up_points) for every family whose teacher
    was benched in the paper's form with a throughput; the student at its first measured rank, in every form."""
    fft, _, kd = (m.name for m in paper_trio())
    scores = {}
    for t in trades:
        if t.get("score") and t["methods"][2] == kd:
            scores.setdefault(t["family"], t["score"])
    table = []
    for family in dict.fromkeys(r["family"] for r in bench_rows):
        mine = [r for r in bench_rows if r["family"] == family and r.get("throughput_per_s")]
        teacher = next((r for r in mine if r["method"] == fft and row_form(r) == PAPER_FORM), None)
        if teacher is None:
            continue
        score = scores.get(family) or {}
        students = [r for r in mine if r["method"] == kd]
        students = [r for r in students if r["rank"] == students[0]["rank"]] if students else []
        for role, row, method in [("teacher", teacher, fft)] + [("student", r, kd) for r in students]:
            given_up = None
            if role == "student" and score.get(fft) is not None and score.get(kd) is not None:
                given_up = 100 * (score[fft] - score[kd])
            table.append({"family": family, "model": row["model"], "role": role, "method": method,
                          "form": form_name(row_form(row)),
                          "speedup": row["throughput_per_s"] / teacher["throughput_per_s"],
                          "size_mb": row.get("size_mb"), "score": score.get(method), "given_up_points": given_up})
    return table


def _precisions_said(precisions) -> str:
    said = [p if p == "fp32" else f"{p} autocast" for p in sorted(precisions)] or ["fp32"]
    return " and ".join(said)


def deployment_plot(table: list[dict], path: str | Path) -> Path | None:
    """Score against speedup, one point per (model, form) with a score, the Pareto front marked; None if no point."""
    points = [{"label": f"{r['model']} {r['form']}", "method": r["method"], "cost": r["speedup"], "score": r["score"]}
              for r in table if r["score"] is not None]
    if not points:
        return None
    return pareto_plot(points, "speedup", path, xlabel=SPEEDUP_LABEL, higher_is_better=True)


def markdown(table: list[dict], plot: str | None, dev_precisions=("fp32",)) -> list[str]:
    """The report's deployment section; `dev_precisions`: what the train runs' dev scores were scored in."""
    if not table:
        return ["No family's FFT teacher was benched with a throughput (PyTorch fp32): no deployment table."]
    lines = ["Speed and size from `kdlora bench` (`--runtime/--precision/--quantize`; random weights, each form in "
             "its own process); score: the dev score of the trained runs (PyTorch, as scored in training: "
             f"{_precisions_said(dev_precisions)}; median over seeds, %), the "
             "same for every form of the student — what a form itself gives up is in `kdlora export`'s export.json. "
             "Given up: points of score below the FFT teacher.", "",
             "| family | model | form | speedup | size MB | score % | given up (points) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in table:
        score = "–" if r["score"] is None else f"{100 * r['score']:.1f}"
        given = "–" if r["given_up_points"] is None else f"{r['given_up_points']:.1f}"
        size = "–" if r["size_mb"] is None else f"{r['size_mb']:.1f}"
        lines.append(f"| {r['family']} | {r['model']} | {r['form']} | {r['speedup']:.2f}× | {size} | {score} | "
                     f"{given} |")
    if all(r["form"] == form_name(PAPER_FORM) for r in table):
        lines += ["", "Only the paper's form (PyTorch fp32) was benched: `kdlora bench --runtime pytorch,onnxruntime "
                  "--quantize none,int8` (and `--precision fp32,bf16` on a CPU with bf16 units) adds the deployed "
                  "forms."]
    if plot:
        lines += ["", f"![score vs inference speedup]({plot})"]
    return lines
