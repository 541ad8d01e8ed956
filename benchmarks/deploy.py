"""The deployed student against the teacher, side by side in one run: speed per form, and what each form costs in
accuracy on a trained demo-task run.

    PYTHONPATH=src python benchmarks/deploy.py [--families bert,minilm] [--rounds 5] [--out DIR]

1. Speed. Per family: the FFT teacher in fp32 eager PyTorch (= 1.00x) against the KD-LoRA student (adapters merged
   away, so the plain student architecture) in each form `kdlora export` writes: PyTorch fp32, PyTorch bf16 (only
   where the CPU has AVX512-BF16 or AMX: emulated bf16 is slower than fp32 and says nothing about deployment),
   ONNX Runtime fp32 and ONNX Runtime int8 (dynamic, per channel); the teacher in ONNX Runtime int8 too. Random
   weights from the bundled configs (speed does not depend on the values), batch 32 x 64 tokens; --fused adds the
   student as ONNX Runtime's fused transformer graph (fp32, int8); --static the student in ONNX Runtime static
   int8 (QDQ, activations calibrated on a few batches); --compile the student through torch.compile (inductor,
   frozen weights so oneDNN packs them for the CPU's matrix units) in fp32 and, with bf16 units, bf16. Every model sits
   in this one process and takes a batch in turn, the start rotating each round, so load from other processes
   falls on all of them alike; each call's wall time and the process's CPU time are both kept (one thread per
   model: on a shared machine the CPU-time ratio is the steadier one). Size on disk is the form's weights file.
2. Accuracy. A shortened `kdlora demo` (MiniLM-L6 FFT teacher, then KD-LoRA on the 3-layer student cut from it,
   movie snippets, `--train-samples` sentences, 2 epochs, max length 64, every dev sentence), then `kdlora export`
   of the student in each form: its dev accuracy, the PyTorch fp32 student's, the agreement of their predictions,
   and the teacher's dev accuracy. bf16's accuracy is measured on any CPU (torch emulates the same numerics).
Goals (issue 11): best exported student >= 8x the teacher's fp32 eager throughput, <= 1 point of dev accuracy
given up, agreement >= 99 % (bf16) and >= 97 % (int8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from kdlora.bench.environment import describe_environment, load_average
from kdlora.bench.evalset import first_plain_id
from kdlora.bench.forms import inference_runner
from kdlora.families import get_family
from kdlora.precision import bf16_supported

STUDENT_FORMS = [("pytorch", "fp32", "none"), ("pytorch", "bf16", "none"), ("onnxruntime", "fp32", "none"),
                 ("onnxruntime", "fp32", "int8")]
TEACHER_FORMS = [("pytorch", "fp32", "none"), ("onnxruntime", "fp32", "int8")]
FUSED_FORMS = [("onnxruntime-fused", "fp32", "none"), ("onnxruntime-fused", "fp32", "int8")]
"""--fused: ONNX Runtime's transformer optimiser (attention, GELU, LayerNorm fused into single ops) before the
optional int8 quantisation; measured here only, to see whether `kdlora export` should write it."""
STATIC_FORMS = [("onnxruntime-static", "fp32", "int8")]
"""--static: int8 weights and activations with calibrated scales (QDQ), against the dynamic quantisation's per-batch
activation scales; measured here only."""
COMPILED_FORMS = [("pytorch-compiled", "fp32", "none"), ("pytorch-compiled", "bf16", "none")]
"""--compile: torch.compile (inductor, freezing) of the student; measured here only."""
GOALS = {"speedup": 8.0, "points_given_up": 1.0, "agreement_bf16": 0.99, "agreement_int8": 0.97}


def _batch(vocab_size: int, batch: int, tokens: int, seed: int) -> dict:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(first_plain_id(vocab_size), vocab_size, (batch, tokens), generator=gen),
            "attention_mask": torch.ones(batch, tokens, dtype=torch.long)}


def _onnx_runner(path: Path, threads: int):
    """(run, to_inputs, size_bytes) of the ONNX model at `path` in an ONNX Runtime CPU session (`path` may go once
    this returns: the session holds the model)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    run = lambda feeds: session.run(["logits"], feeds)[0]  # noqa: E731
    return run, (lambda b: {k: v.numpy() for k, v in b.items()}), path.stat().st_size


def fused_runner(model, quantize: str, sample: dict, threads: int):
    """(run, to_inputs, size_bytes) of `model` traced to ONNX, fused by ONNX Runtime's transformer optimiser and,
    for int8, quantised like `kdlora export` does (dynamic, per channel)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from kdlora.export.onnx_model import trace_onnx

    with tempfile.TemporaryDirectory(prefix="kdlora-fused-") as folder:
        path = Path(folder) / "model.onnx"
        trace_onnx(model, {k: v[:2] for k, v in sample.items()}, path)
        fused = optimize_model(str(path), model_type="bert", num_heads=model.config.num_attention_heads,
                               hidden_size=model.config.hidden_size)
        path = Path(folder) / "fused.onnx"
        fused.save_model_to_file(str(path))
        if quantize == "int8":
            # the fused ops are outside ONNX's domain, so shape inference cannot type their outputs: say float
            quantize_dynamic(str(path), str(Path(folder) / "fused-int8.onnx"), weight_type=QuantType.QInt8,
                             per_channel=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            path = Path(folder) / "fused-int8.onnx"
        return _onnx_runner(path, threads)


def static_runner(model, sample: dict, threads: int):
    """(run, to_inputs, size_bytes) of `model` traced to ONNX and quantised statically: int8 weights (per channel)
    and int8 activations whose scales were calibrated on batches like `sample` (QDQ format, unsigned activations
    and signed weights: the pair x86's VNNI and AMX int8 instructions take)."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from kdlora.export.onnx_model import trace_onnx

    class Batches(CalibrationDataReader):
        def __init__(self):
            vocab = model.config.vocab_size
            self.feeds = iter([{k: v.numpy() for k, v in _batch(vocab, 8, sample["input_ids"].shape[1], seed).items()}
                               for seed in range(100, 104)])

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="kdlora-static-") as folder:
        path = Path(folder) / "model.onnx"
        trace_onnx(model, {k: v[:2] for k, v in sample.items()}, path)
        quantized = Path(folder) / "static-int8.onnx"
        quantize_static(str(path), str(quantized), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return _onnx_runner(quantized, threads)


def compiled_runner(model, precision: str, sample: dict):
    """(run, to_inputs, size_bytes) of `model` in PyTorch `precision` (`inference_runner`'s form and size) through
    torch.compile (inductor with frozen weights: constant-folded and pre-packed by oneDNN, the path to AMX on a
    Xeon); compiled on the first call."""
    import torch
    import torch._inductor.config as inductor

    _, to_inputs, size = inference_runner(model, ("pytorch", precision, "none"), sample)  # casts `model` in place
    inductor.freezing = True
    compiled = torch.compile(model)
    return (lambda batch: compiled(**batch).logits), to_inputs, size


def speed(family_name: str, rounds: int, batch: int, tokens: int, threads: int, fused: bool = False,
          static: bool = False, compiled: bool = False) -> list[dict]:
    """Seconds per batch of every (role, form) of one family, interleaved; throughput and speedup vs the teacher."""
    import torch

    family = get_family(family_name)
    forms = [("teacher", f) for f in TEACHER_FORMS] + [("student", f) for f in STUDENT_FORMS
                                                        if f[1] != "bf16" or bf16_supported("cpu")]
    forms += [("student", f) for f in FUSED_FORMS] if fused else []
    forms += [("student", f) for f in STATIC_FORMS] if static else []
    forms += [("student", f) for f in COMPILED_FORMS if f[1] != "bf16" or bf16_supported("cpu")] if compiled else []
    runners = {}
    for role, form in forms:
        architecture = family.architecture(role)
        torch.manual_seed(0)
        model = architecture.build(2).eval()
        sample = _batch(model.config.vocab_size, batch, tokens, seed=1)
        if form[0] == "onnxruntime-fused":
            run, to_inputs, size = fused_runner(model, form[2], sample, threads)
        elif form[0] == "onnxruntime-static":
            run, to_inputs, size = static_runner(model, sample, threads)
        elif form[0] == "pytorch-compiled":
            run, to_inputs, size = compiled_runner(model, form[1], sample)
        else:
            run, to_inputs, size = inference_runner(model, form, sample, threads)
        runners[role, form] = (run, to_inputs(sample), size, architecture.display_name)
    keys = list(runners)
    wall, cpu = {key: [] for key in keys}, {key: [] for key in keys}
    warm_up = {}
    with torch.inference_mode():
        for key in keys:  # warm-up: first calls allocate and pick kernels (and compile, for --compile)
            start = time.perf_counter()
            runners[key][0](runners[key][1])
            warm_up[key] = time.perf_counter() - start
        for i in range(rounds):
            for key in keys[i % len(keys):] + keys[:i % len(keys)]:
                run, inputs = runners[key][:2]
                start, start_cpu = time.perf_counter(), time.process_time()
                run(inputs)
                wall[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
    medians = {key: statistics.median(wall[key]) for key in keys}
    cpu_medians = {key: statistics.median(cpu[key]) for key in keys}
    base, cpu_base = medians["teacher", TEACHER_FORMS[0]], cpu_medians["teacher", TEACHER_FORMS[0]]
    return [{"family": family_name, "role": role, "model": runners[role, form][3], "runtime": form[0],
             "precision": form[1], "quantize": form[2], "median_batch_s": round(medians[role, form], 4),
             "throughput_per_s": round(batch / medians[role, form], 1), "speedup": round(base / medians[role, form], 2),
             "median_batch_cpu_s": round(cpu_medians[role, form], 4),
             "cpu_speedup": round(cpu_base / cpu_medians[role, form], 2),
             "size_mb": round(runners[role, form][2] / 1e6, 1), "first_call_s": round(warm_up[role, form], 2)}
            for role, form in keys]


def accuracy(folder: Path, train_samples: int) -> dict:
    """Train the shortened demo's teacher and student, export the student in each form; the scores."""
    import kdlora.precision
    from kdlora.config import TrainConfig
    from kdlora.export import ExportSettings, export_run
    from kdlora.train import run_training

    common = dict(task="movie-snippets", family="minilm", seed=42, epochs=2, max_train_samples=train_samples,
                  max_length=64, batch_size=32, device="cpu")
    def trained(config, out: Path) -> dict:
        """The run in `out` when a finished one of this config is there already (a rerun keeps it), else a new one."""
        done = out / "metrics.json"
        if done.is_file():
            metrics = json.loads(done.read_text())
            if TrainConfig.from_dict(metrics["config"]).to_dict() == config.to_dict():
                return metrics
        return run_training(config, out, progress=False, overwrite=True)

    started = time.perf_counter()
    teacher = trained(TrainConfig(method="fft", **common), folder / "fft")
    student = trained(TrainConfig(method="kd-lora", teacher=str(folder / "fft"), **common), folder / "kd")
    train_seconds = time.perf_counter() - started
    kdlora.precision.bf16_supported = lambda device=None: True  # scoring only: emulated bf16 has the same numerics
    forms = {}
    for runtime, precision, quantize in STUDENT_FORMS:
        settings = ExportSettings("safetensors" if runtime == "pytorch" else "onnx", precision, quantize)
        info = export_run(folder / "kd", folder / f"export-{runtime}-{precision}-{quantize}", settings)
        forms[f"{runtime}/{precision}/{quantize}"] = {k: info[k] for k in ("accuracy", "reference_accuracy",
                                                                          "agreement", "size_bytes", "dev_examples")}
    return {"teacher_accuracy": teacher["metrics"]["accuracy"], "student_accuracy": student["metrics"]["accuracy"],
            "train_samples": train_samples, "train_seconds": round(train_seconds, 1), "forms": forms}


def verdicts(speeds: list[dict], scores: dict | None) -> list[str]:
    """The goals, met or not, in words."""
    lines = []
    for family in sorted({r["family"] for r in speeds}):
        exported = [r for r in speeds if r["family"] == family and r["role"] == "student" and r["runtime"] != "pytorch"
                    or r["family"] == family and r["role"] == "student" and r["precision"] == "bf16"]
        for figure, what in (("speedup", "wall"), ("cpu_speedup", "CPU time")):
            best = max(exported, key=lambda r: r[figure])
            met = "met" if best[figure] >= GOALS["speedup"] else "not met"
            lines.append(f"{family}: best student form {best['runtime']} {best['precision']} {best['quantize']} "
                         f"{best[figure]:.2f}x the teacher's fp32 eager throughput by {what} (goal >= 8x: {met})")
    for name, form in (scores or {}).get("forms", {}).items():
        given_up = 100 * (form["reference_accuracy"] - form["accuracy"])
        goal = GOALS.get(f"agreement_{'int8' if 'int8' in name else name.split('/')[1]}")
        agreement = f"agreement {form['agreement']:.2%}" + (
            f" (goal >= {goal:.0%}: {'met' if form['agreement'] >= goal else 'not met'})" if goal else "")
        lines.append(f"minilm student {name}: dev accuracy {form['accuracy']:.4f} vs {form['reference_accuracy']:.4f} "
                     f"fp32 student, {given_up:+.2f} points given up (goal <= 1: "
                     f"{'met' if given_up <= GOALS['points_given_up'] else 'not met'}); {agreement}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default="bert,minilm", help="comma-separated families (speed part)")
    parser.add_argument("--rounds", type=int, default=5, help="timed batches per model, interleaved")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--train-samples", type=int, default=1000, help="demo sentences the accuracy part trains on")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per model, PyTorch and ONNX Runtime alike (default 1: on a shared machine a "
                             "descheduled second thread stalls eager PyTorch's every parallel region)")
    parser.add_argument("--no-accuracy", action="store_true", help="speed only")
    parser.add_argument("--fused", action="store_true",
                        help="also time the student as ONNX Runtime's fused transformer graph, fp32 and int8")
    parser.add_argument("--static", action="store_true",
                        help="also time the student in ONNX Runtime static int8 (calibrated activations, QDQ)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the student through torch.compile (inductor, frozen weights), fp32 and bf16")
    parser.add_argument("--out", default="deploy-results",
                        help="folder for deploy.json, and runs/ (the trained teacher and student, their exports)")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    import torch

    torch.set_num_threads(args.threads)
    environment = describe_environment("cpu")
    started = time.perf_counter()
    speeds = [row for f in args.families.split(",") if f
              for row in speed(f, args.rounds, args.batch, args.tokens, args.threads, args.fused, args.static,
                               args.compile)]
    speed_seconds = time.perf_counter() - started
    for row in speeds:
        print(json.dumps(row))
    scores = None
    if not args.no_accuracy:
        scores = accuracy(Path(args.out) / "runs", args.train_samples)
        print(json.dumps(scores, indent=1))
    environment["load_average_end"] = load_average()
    result = {"speed": speeds, "accuracy": scores, "verdicts": verdicts(speeds, scores), "environment": environment,
              "settings": vars(args), "seconds": {"speed": round(speed_seconds),
                                                  "total": round(time.perf_counter() - started)}}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "deploy.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("\n".join(result["verdicts"]))
    print(f"load average {environment['load_average_start']} -> {environment['load_average_end']}; "
          f"{environment['cpu_model']}; {result['seconds']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
