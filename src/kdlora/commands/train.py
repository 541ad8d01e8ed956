"""Fine-tune one (task, family, method, rank, seed) and write RUN_DIR/metrics.json plus the model or adapter.

  kdlora train --task sst2 --family bert --method fft --out runs/bert-fft
  kdlora train --task sst2 --family bert --method kd-lora --teacher runs/bert-fft --out runs/bert-kd
  kdlora train --task movie-snippets --family minilm --method lora --max-train-samples 2000 --out runs/ml
  kdlora train --train-file train.csv --validation-file dev.csv --text-columns review --label-column stars \
      --model bert-base-uncased --method kd-lora --student derive:6 --teacher runs/fft --out runs/kd
  kdlora train --dataset imdb --validation-split test --text-columns text --model bert-base-uncased \
      --method lora --out runs/imdb      # or --dataset ./my-folder (save_to_disk, or train/validation files)

Every setting can also come from --config FILE (TOML, JSON or YAML, by suffix; the keys of an experiment's
[train.params], plus task, family, method, rank, seed, teacher; flags win). Exit status 0 when the run is done,
1 when it collapsed (non-finite loss or constant dev predictions: the reason is printed and recorded).
Multi-GPU: `accelerate launch -m kdlora train ...`.

Like people train: `--precision bf16` (mixed precision), `--grad-accum 4`, `--eval-steps 50 --save-checkpoints`
(then `--resume` after a kill), `--report-to tensorboard,mlflow`, `--track-energy`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from kdlora.config import RunSettings, TrainConfig, method_help
from kdlora.errors import UserError
from kdlora.files import add_no_verify_argument
from kdlora.methods import METHODS, settings_classes
from kdlora.rundir import fill_defaults
from kdlora.settings import add_settings_arguments, settings_from_args
from kdlora.train import run_training

HELP = "fine-tune one run (FFT, LoRA or KD-LoRA) and record its metrics"
_FIXED = ("task", "family", "method")


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="folder for metrics.json and the model")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML (.toml), JSON or YAML file with any of the settings below, by their names "
                             "(learning_rate = 3e-4): the keys of an experiment's [train.params]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--resume", action="store_true",
                        help="continue the killed run in --out from its last checkpoint (same settings)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the finished run in --out (its files and checkpoints); without it, a finished "
                             "run there is an error")
    add_no_verify_argument(parser)
    # the run's own settings, then every registered method's (a plug-in's too): one flag each
    add_settings_arguments(parser, RunSettings, *settings_classes(), keep_defaults=False,
                           choices={"method": tuple(METHODS)},
                           helps={"method": f"The fine-tuning method: {method_help()}."})


def _read_config_file(path: str) -> dict:
    """The settings in a TOML (by suffix), JSON or YAML file; a bad file or an unknown key is a UserError naming
    the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if Path(path).suffix.lower() == ".toml":
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{path}: not valid TOML ({exc})") from None
    else:
        import yaml

        try:
            values = yaml.safe_load(text)  # JSON is YAML too
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid JSON or YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of settings")
    known = TrainConfig.setting_names()
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if isinstance(value, dict | list):  # a grid axis or a table belongs in an experiment file
            raise UserError(f"{path}: {key} = {value!r} is not a single value (one run takes one)")
    return values


def run(args) -> int:
    values = settings_from_args(set(TrainConfig.setting_names()), args,
                                _read_config_file(args.config) if args.config else {})
    fill_defaults(values)
    for key in _FIXED:
        if key not in values:
            raise UserError(f"--{key} is required")
    result = run_training(TrainConfig.from_dict(values), args.out, progress=not args.quiet, verify=args.verify,
                          resume=args.resume, overwrite=args.overwrite)
    metric_text = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    print(f"{result['status']}: {result['task']} {result['family']} {result['method']}: {metric_text or 'no metrics'}"
          f" | {result['train_seconds']:.1f} s | {result['trainable_params']:,} of {result['total_params']:,} "
          f"params train -> {args.out}/metrics.json")
    if result["positive_label"] is not None:
        print(f"f1: positive class {result['positive_label']!r} (--positive-label to choose another)")
    if result["lora_targets"]:
        print(f"model: {result['model']}; LoRA on {', '.join(result['lora_targets'])}; also training: "
              f"{', '.join(result['trained_modules'])}")
    if result["transfer_examples"]:
        how = "KD plus the teacher's hard label" if values.get("transfer_hard_label") else "the KD term alone"
        print(f"transfer: {result['transfer_examples']:,} unlabelled rows the teacher labelled "
              f"({result['transfer_source']}), beside {result['train_examples']:,} labelled; their loss: {how}")
    if result["teacher_resident"]:
        print(f"teacher: ran beside the student on every batch for {result['hidden_distillation']['terms']}; its "
              f"memory is in the peak figure ({result['peak_memory_mb']} MB)")
    if result["energy_kwh"] is not None:
        print(f"energy: {result['energy_kwh'] * 1000:.3f} Wh, {result['emissions_g_co2eq']:.3f} g CO2-eq "
              f"({result['energy_method']}, grid {result['energy_country']})")
    if result["reason"]:
        print(f"reason: {result['reason']}")
    return 0 if result["status"] == "done" else 1
