"""The inference forms a bench row measures: runtime x precision x quantisation.

The runtime is what executes the merged model (eager PyTorch or ONNX Runtime); "backend" is not used for it, so
that it cannot be confused with the sweep's `Backends` seam (`kdlora.sweep.backends`).

    pytorch      fp32  none    eager PyTorch: the paper's setting, the row Table II shows
    pytorch      bf16  none    bf16 weights (a CPU with AVX512-BF16 or AMX, or a CUDA GPU); bf16 autocast training
    onnxruntime  fp32  none    the merged model traced to ONNX, in ONNX Runtime on the CPU
    onnxruntime  fp32  int8    the same, weights quantised by ONNX Runtime's dynamic int8 (`kdlora export`'s)

Not supported, each with its reason (`form_problem`): int8 in PyTorch (torch.ao's dynamic quantisation is a
second int8 path to keep; ONNX Runtime's is the one `kdlora export` writes) and bf16 in ONNX Runtime (its CPU
kernels have no fast bf16 path). `inference_runner` turns a merged model into a callable over bench batches in a
form, and reports the form's size on disk.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kdlora.errors import UserError
from kdlora.precision import check_precision, torch_dtype

RUNTIMES = ("pytorch", "onnxruntime")
QUANTIZATIONS = ("none", "int8")
DEFAULT_FORM = ("pytorch", "fp32", "none")
"""The paper's form (eager PyTorch, fp32, not quantised): the row Table II and the trade-offs use."""


def row_form(row: dict) -> tuple[str, str, str]:
    """A bench row's (runtime, precision, quantize). Rows written before these axes existed are PyTorch fp32, and
    rows written before the axis was called `runtime` name it `backend`."""
    runtime = row.get("runtime") or row.get("backend") or DEFAULT_FORM[0]
    return runtime, row.get("precision") or DEFAULT_FORM[1], row.get("quantize") or DEFAULT_FORM[2]


def form_problem(runtime: str, precision: str, quantize: str) -> str | None:
    """Why kdlora does not measure this (runtime, precision, quantize), or None when it does."""
    if quantize == "int8" and runtime != "onnxruntime":
        return "int8 runs in ONNX Runtime only (runtime onnxruntime: its dynamic quantisation; PyTorch int8 is " \
               "not supported)"
    if precision != "fp32" and runtime == "onnxruntime":
        return f"{precision} runs in PyTorch only (runtime pytorch: ONNX Runtime's CPU kernels have no fast " \
               f"{precision} path)"
    return None


def plan_forms(runtimes, precisions, quantizations, device: str) -> list[tuple[str, str, str]]:
    """Every supported (runtime, precision, quantize) of the axes, in axis order; a UserError when a value given
    is in no supported form (the reason of its first combination) or the device cannot run it."""
    for name, values, allowed in (("runtime", runtimes, RUNTIMES), ("quantize", quantizations, QUANTIZATIONS)):
        for value in values:
            if value not in allowed:
                raise UserError(f"{name}: unknown {value!r} (choose from {', '.join(allowed)})")
    for precision in precisions:
        check_precision(precision, device)
    if "onnxruntime" in runtimes and device != "cpu":
        raise UserError("runtime onnxruntime: measured on the CPU only (--device cpu)")
    forms = [(r, p, q) for r in runtimes for p in precisions for q in quantizations]
    supported = [form for form in forms if form_problem(*form) is None]
    for axis, values in enumerate((runtimes, precisions, quantizations)):
        for value in values:
            if not any(form[axis] == value for form in supported):
                raise UserError(form_problem(*next(f for f in forms if f[axis] == value)))
    return supported


def inference_runner(model, form: tuple[str, str, str], sample: dict, threads: int | None = None):
    """(run, to_inputs, size_bytes): `run(to_inputs(batch))` is one forward pass of the merged `model` in `form`;
    `to_inputs` moves a batch into the form's inputs outside the timed call; `size_bytes` is the form on disk."""
    import torch

    runtime, precision, quantize = form
    with tempfile.TemporaryDirectory(prefix="kdlora-form-") as folder:
        if runtime == "pytorch":
            model = model.to(torch_dtype(precision))
            model.save_pretrained(folder)
            size = sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))

            def run(batch):
                return model(**batch).logits

            return run, lambda batch: batch, size
        import onnxruntime

        from kdlora.export.onnx_model import quantize_int8, trace_onnx

        path = Path(folder) / "model.onnx"
        trace_onnx(model, {k: v[:2] for k, v in sample.items()}, path)
        if quantize == "int8":
            quantize_int8(path, Path(folder) / "model-int8.onnx")
            path = Path(folder) / "model-int8.onnx"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # no busy-waiting between runs: spinning threads would take the cores from whatever runs next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        size = path.stat().st_size

    def run_onnx(feeds):
        return session.run(["logits"], feeds)[0]

    return run_onnx, lambda batch: {k: v.numpy() for k, v in batch.items()}, size
