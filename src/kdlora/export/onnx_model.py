"""Write a transformers classifier as ONNX (dynamic batch and sequence axes) and quantise it to int8.

The TorchScript exporter (`dynamo=False`) traces the model in one pass and needs no extra package; the graph keeps
`batch` and `sequence` dynamic on every input, so one file serves any batch and length. int8 is ONNX Runtime's
dynamic quantisation: a well-kept library, no calibration data (activations are quantised per batch at run time),
and its int8 MatMul kernels use VNNI/AMX where the CPU has them. Weights are quantised per output channel, which
keeps a merged LoRA update's few large columns from setting one scale for the whole matrix.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path

ONNX_OPSET = 17
"""The ONNX opset written: LayerNormalization is a single op from 17 on."""

INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


def input_names(model, tokenizer) -> list[str]:
    """The inputs both the tokenizer produces and the model's forward takes, in a fixed order."""
    accepted = inspect.signature(model.forward).parameters
    return [n for n in INPUT_ORDER if n in tokenizer.model_input_names and n in accepted]


def write_onnx(model, tokenizer, path: Path) -> list[str]:
    """Trace `model` (eval mode) to `path` with sample inputs from `tokenizer`; returns the graph's input names."""
    names = input_names(model, tokenizer)
    # two texts of different lengths: the traced graph sees padding and a batch above one
    sample = tokenizer(["a short text", "a somewhat longer text to pad the first"], padding=True,
                       return_tensors="pt")
    trace_onnx(model, {name: sample[name] for name in names}, path)
    return names


def trace_onnx(model, sample: dict, path: Path) -> None:
    """Trace `model` on the `sample` inputs (name -> tensor, in the graph's input order) to `path`; the output
    is `logits`, and every input's batch and sequence axes stay dynamic."""
    import torch

    names = list(sample)

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(**dict(zip(names, tensors, strict=True))).logits

    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    wrapper = Logits().eval()  # the exporter restores the wrapper's training flag on every submodule afterwards
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches on shapes: the axes stay dynamic
        torch.onnx.export(wrapper, tuple(sample.values()), str(path), dynamo=False, input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=ONNX_OPSET)
    model.eval()


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime dynamic int8 quantisation of `source`'s weights (per channel) into `target`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice about pre-processing at WARNING on the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
