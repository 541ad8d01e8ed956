"""Write a trained run as one deployable model, LoRA adapters merged, then score it on the run's dev split beside
the run's PyTorch fp32 model (the figures go into OUT/export.json):

  kdlora export runs/ml-kd --out exported/                         plain transformers folder, fp32 safetensors
  kdlora export runs/ml-kd --out exported-bf16/ --precision bf16   bf16 weights (CPUs with AVX512-BF16 or AMX)
  kdlora export runs/ml-kd --out onnx-int8/ --format onnx --quantize int8
  kdlora predict onnx-int8/ "A gorgeous, moving film."             an ONNX folder predicts without torch
"""

from __future__ import annotations

from kdlora.files import add_no_verify_argument
from kdlora.settings import add_settings_arguments

HELP = "merge a run's adapters and save a deployable model (safetensors or ONNX, fp32/bf16/int8), scored on dev"


def add_arguments(parser) -> None:
    from kdlora.export import EXPORT_PRECISIONS, FORMATS, QUANTIZATIONS, ExportSettings

    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `kdlora train`")
    add_no_verify_argument(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the model, tokenizer and export.json")
    add_settings_arguments(parser, ExportSettings,
                           choices={"format": FORMATS, "precision": EXPORT_PRECISIONS, "quantize": QUANTIZATIONS})
    parser.add_argument("--no-score", action="store_true", help="skip scoring the export on the run's dev split")


def run(args) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line per result, no loading bars
    from kdlora.export import ExportSettings, export_run

    settings = ExportSettings(args.format, args.precision, args.quantize)
    info = export_run(args.run_dir, args.out, settings, score=not args.no_score, verify=args.verify)
    form = f"{info['format']} {info['precision']}" + (" int8" if info["quantize"] == "int8" else "")
    print(f"{form} model written to {args.out} ({info['size_bytes'] / 1e6:.1f} MB)")
    if "agreement" in info:
        print(f"dev {info['metric']} on {info['dev_examples']} {info['dev_split']} examples: "
              f"{info['accuracy']:.4f} exported, {info['reference_accuracy']:.4f} PyTorch fp32; "
              f"predictions agree on {info['agreement']:.2%}")
    return 0
