"""Settings of training runs and of the bench: typed dataclasses validated once, whose field docstrings are the
CLI help.

`TrainConfig` decides one training run (its `key()` is the run's identity in the results store); `BenchSettings`
decides what `kdlora bench` measures; `add_settings_arguments` turns any settings dataclass into argparse flags, so
every command's flags and help come from one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import get_type_hints

from kdlora.errors import UserError
from kdlora.families import PAPER_FAMILIES, get_family
from kdlora.methods import AdaLoraSettings, LoraPlusSettings, VeraSettings, get_method, paper_methods, settings_classes
from kdlora.precision import AUTO, PRECISIONS, resolve_precision

TRACKERS = ("tensorboard", "mlflow")
"""Experiment trackers `report_to` may name (accelerate's trackers of those names)."""

OBSERVERS = ("save_checkpoints", "report_to", "track_energy")
"""TrainConfig fields that watch a run without changing what it computes: not part of its key."""

LATER_FIELDS = {"positive_label": None,
                **{f.name: f.default for cls in (AdaLoraSettings, LoraPlusSettings, VeraSettings)
                   for f in dataclasses.fields(cls)},
                "dataset": None, "dataset_revision": None, "train_split": None, "validation_split": None,
                "test_split": None}
"""TrainConfig fields added after runs were stored, and their defaults: at the default they are left out of the
key, so the runs stored before keep theirs."""

RETIRED_FIELDS = {"use_dora": False}
"""Fields that left TrainConfig (DoRA is a method now) and the value every run keyed without them had: put back
into the key, so the runs stored before keep theirs."""


def keyed_settings(values: dict) -> dict:
    """A config dict less what is not part of a run's key (`OBSERVERS`, `LATER_FIELDS` at their defaults), with
    `RETIRED_FIELDS` put back."""
    kept = {k: v for k, v in values.items()
            if k not in OBSERVERS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    return {**RETIRED_FIELDS, **kept}


@dataclass(kw_only=True)
class TrainConfig(*settings_classes()):
    """Everything that decides one training run; `key()` identifies it in the results store. The methods' own
    settings (LoRA's rank, KD's temperature, AdaLoRA's budget, ...) are its bases, from the method registry."""

    task: str
    """GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli) or movie-snippets / movie-snippets-rating;
    with --train-file, the name of your task (default `custom`); with --dataset, its name (default the dataset's)."""
    family: str
    """Model family: bert, roberta, deberta, or minilm (offline real weights); with --model, a label for the
    model pair in reports (default: the model's name)."""
    method: str
    """fft (full fine-tuning of the teacher), lora (LoRA on the teacher), kd-lora (LoRA on the student + KD),
    student-lora (LoRA on the student, no KD), dora / kd-dora, adalora / kd-adalora, pissa / kd-pissa,
    lora-plus / kd-lora-plus, vera / kd-vera (see `kdlora.methods`)."""
    seed: int = 42
    """Seed of initialisation, data order, dropout and subsampling."""
    epochs: int = 3
    """Passes over the training data."""
    learning_rate: float | None = None
    """Peak learning rate; default per method and data size: FFT 2e-5, the LoRA methods 5e-4 on GLUE; on the small
    movie-snippet data (~150 steps) FFT 1e-4, on the teacher 2e-3, on the student 3e-3, because 2e-5 leaves FFT
    under-trained."""
    batch_size: int = 32
    """Examples per batch (per device under accelerate)."""
    max_length: int = 128
    """Truncate inputs to this many tokens; batches pad only to their longest example."""
    max_train_samples: int | None = None
    """Train on a seeded random subset of this many examples."""
    max_eval_samples: int | None = None
    """Score dev on a seeded random subset of this many examples."""
    warmup_ratio: float = 0.1
    """Share of the real number of optimiser steps spent warming the learning rate up linearly."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    patience: int | None = None
    """Stop after this many evaluations (one per epoch) without a better dev score, counted after warm-up only."""
    teacher: str | None = None
    """kd-lora: run folder of the trained FFT teacher (its logits supervise the student; a derived student is cut
    from it)."""
    online_teacher: bool = False
    """kd-lora: run the teacher on every batch instead of caching its logits once."""
    student_init: str = "trained"
    """Derived students (minilm): cut from the `trained` FFT teacher or from the `pretrained` teacher weights."""
    data_dir: str | None = None
    """Local GLUE data: a GLUE TSV folder, or train/validation CSV or JSONL files with named columns."""
    pretrained: str | None = None
    """Weights (hub name or folder) of the model the method trains, instead of the family's default."""
    tiny: bool = False
    """Random tiny model and tokenizer (tests, smoke runs)."""
    device: str | None = None
    """cpu or cuda; default: whatever accelerate picks."""
    model: str | None = None
    """Any encoder (hub name or folder) instead of the family's: what FFT and LoRA fine-tune, and whose cut the
    KD-LoRA student is."""
    student: str | None = None
    """kd-lora with --model: a hub name or folder, `derive:N` (N evenly spaced layers of the teacher) or
    `derive:I,J,K` (those layers); default derive:half. With --teacher RUN it is cut from the trained teacher."""
    lora_targets: str | None = None
    """Comma-separated module names LoRA adapts; default: PEFT's for the model type, else the attention's query
    and value projections."""
    dataset: str | None = None
    """A dataset by name, NAME[:CONFIG] (`imdb`, `nyu-mll/glue:sst2`; the hub where reachable), or a local folder
    (written by save_to_disk, or of train/validation CSV, JSON or Parquet files), loaded with `datasets`; its
    columns by --text-columns and --label-column (default `label`). The training split decides the labels."""
    dataset_revision: str | None = None
    """--dataset from the hub: the branch, tag or commit to load."""
    train_split: str | None = None
    """--dataset: the split to train on, or a slice of one (`train[:90%]`); default train."""
    validation_split: str | None = None
    """--dataset: the dev split scored after every epoch (or a slice: `train[90%:]`); default validation."""
    test_split: str | None = None
    """--dataset: a split scored once with the best checkpoint (e.g. test, when its rows have labels)."""
    train_file: str | None = None
    """Your task's training file (CSV, TSV, JSONL or Parquet); it decides the labels."""
    validation_file: str | None = None
    """Your task's dev file, scored after every epoch."""
    test_file: str | None = None
    """Your task's test file, scored once with the best checkpoint."""
    text_columns: str | None = None
    """The input text column, or two separated by a comma (a pair task)."""
    label_column: str | None = None
    """The label column: class names or numbers (classes are sorted), or values for regression."""
    task_type: str | None = None
    """classification or regression; default: regression when the labels are non-integer numbers."""
    metric: str | None = None
    """Headline metric: accuracy, macro_f1, f1, mcc (classification) or pearson_spearman (regression); default
    accuracy (macro-F1 reported too) or pearson_spearman."""
    positive_label: str | None = None
    """--metric f1: the class F1 counts as positive (default: the second label in sorted order, e.g. `1` of 0/1,
    `pos` of neg/pos); the output names it."""
    precision: str = "fp32"
    """fp32, or bf16 / fp16 mixed precision (accelerate's autocast; master weights, loss and KD softmax stay fp32).
    fp16 needs CUDA; bf16 a GPU or CPU with bf16 units (AVX512-BF16 or AMX). auto: bf16 where the device computes
    it natively, else fp32 (resolved when the config is made, so the run's key names what ran)."""
    grad_accum: int = 1
    """Accumulate gradients over this many batches per optimiser step: effective batch = batch x N x processes."""
    eval_steps: int | None = None
    """Also score dev every N optimiser steps (always at each epoch's end); patience counts these evaluations."""
    save_checkpoints: bool = False
    """At each evaluation save RUN_DIR/checkpoints/last (and best): trainable weights, optimiser, scheduler, RNG
    states and the data position, so that `--resume` continues a killed run."""
    report_to: str | None = None
    """Trackers, comma-separated: tensorboard (RUN_DIR/tensorboard), mlflow ($MLFLOW_TRACKING_URI, else a file
    store in RUN_DIR/mlruns): per-step loss and learning rate, every evaluation, the config as hyper-parameters."""
    track_energy: bool = False
    """Measure energy (kWh) and emissions (g CO2-eq) with codecarbon's offline tracker (extra `energy`)."""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise a UserError naming the first bad key and value."""
        from kdlora.data.tasks import TASKS, get_task
        from kdlora.families import get_family
        from kdlora.methods import get_method

        if self.file_spec() is None:
            self.task = get_task(self.task).name
        elif self.task.strip().lower() in TASKS:
            raise UserError(f"task {self.task!r} is built in; give your file task another name (--task NAME)")
        if self.model is None:
            self.family = get_family(self.family).name
        elif not self.family.strip():
            raise UserError("config: family may not be empty")
        self.method = get_method(self.method).name
        if self.student is not None and self.model is None:
            raise UserError("--student needs --model (the named families bring their own student)")
        if self.precision == AUTO:
            self.precision = resolve_precision(AUTO, self.device)
        checks = {
            "epochs": self.epochs > 0, "batch_size": self.batch_size > 0, "max_length": self.max_length >= 8,
            "learning_rate": self.learning_rate is None or self.learning_rate > 0,
            "max_train_samples": self.max_train_samples is None or self.max_train_samples > 0,
            "max_eval_samples": self.max_eval_samples is None or self.max_eval_samples > 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1, "weight_decay": self.weight_decay >= 0,
            "patience": self.patience is None or self.patience > 0,
            "student_init": self.student_init in ("trained", "pretrained"),
            "device": self.device in (None, "cpu", "cuda"),
            "precision": self.precision in PRECISIONS, "grad_accum": self.grad_accum > 0,
            "eval_steps": self.eval_steps is None or self.eval_steps > 0,
            "report_to": all(name in TRACKERS for name in self.trackers),
        }
        for settings in settings_classes():  # each method's settings check their own fields
            checks.update(settings.checks(self))
        for key, ok in checks.items():
            if not ok:
                raise UserError(f"config: bad value for {key}: {getattr(self, key)!r}")

    def file_spec(self):
        """The spec of a task from data: a `FileTaskSpec` (--train-file ...) or a `DatasetSpec` (--dataset ...),
        else None; incomplete settings raise."""
        from kdlora.data.file_tasks import spec_of

        return spec_of(self)

    def task_spec(self):
        """The `Task` this run trains on: a built-in one by name, or the one its files define (read here)."""
        from kdlora.data.file_tasks import file_task
        from kdlora.data.tasks import get_task

        spec = self.file_spec()
        return get_task(self.task) if spec is None else file_task(self.task, spec)

    @property
    def trackers(self) -> tuple[str, ...]:
        """The tracker names of `report_to`, in order."""
        return tuple(part.strip() for part in (self.report_to or "").split(",") if part.strip())

    @property
    def lr(self) -> float:
        """The learning rate in effect (the per-method default when none was given)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return get_method(self.method).learning_rates["small" if self.task_spec().small_data else "glue"]

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from plain values (JSON, YAML, CLI); unknown keys and wrong types are UserErrors."""
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserError(f"config: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            raise UserError(f"config: missing key {missing[0]!r}")
        clean = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
        return cls(**clean)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The config as the store tells runs apart: a task from files by its files' content hash, not their paths
        (edited data is a new run; the same data elsewhere is not), one from a dataset by its splits' fingerprints.
        What only watches a run (checkpoints kept, trackers, energy) is left out: the same run watched differently
        is the same run."""
        values = keyed_settings(self.to_dict())
        spec = self.file_spec()
        if spec is not None:
            values = {k: v for k, v in values.items() if k not in spec.LOCATION}
            values[spec.FINGERPRINT] = spec.fingerprint()
        return values

    def key(self, num_processes: int = 1) -> str:
        """The run's identity and its key in the results store: sha256 of the canonical JSON of `identity()`
        (precision included) and of the number of training processes, which multiplies the effective batch."""
        return run_key(self.identity(), num_processes)


def run_key(values: dict, num_processes: int = 1) -> str:
    """sha256 of the canonical JSON of a run's settings and its number of processes (see `TrainConfig.key`)."""
    canonical = json.dumps({"kind": "train", "config": values, "num_processes": num_processes}, sort_keys=True,
                           separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class BenchSettings:
    """What `kdlora bench` measures. Each field's docstring is its CLI help."""

    families: tuple[str, ...] = PAPER_FAMILIES
    """Model families (teacher -> student) to measure."""
    methods: tuple[str, ...] = paper_methods()
    """Methods: the paper's FFT and LoRA on the teacher, KD-LoRA on the student; any registered one (`kdlora
    train --help` lists them)."""
    ranks: tuple[int, ...] = (8, 16, 32, 64)
    """LoRA ranks: exact counts at every rank; memory and latency at the first unless --all-ranks."""
    device: str = "cpu"
    """Where to measure: cpu or cuda."""
    num_labels: int = 2
    """Classes of the classification head."""
    params_only: bool = False
    """Only the exact parameter counts (seconds): no training or timing."""
    all_ranks: bool = False
    """Measure memory and latency at every rank, not only the first."""
    pretrained: bool = False
    """Load real weights (hub names, or the family's offline package) instead of building from the bundled configs."""
    batch_size: int = 32
    """Training batch size of the memory measurement."""
    train_seq_len: int = 128
    """Training sequence length of the memory measurement (every sequence full length)."""
    train_steps: int = 1
    """Full-size training steps measured, after one short step that allocates the optimiser state."""
    eval_size: int = 1043
    """Sequences in the evaluation set (1,043: CoLA's dev set)."""
    eval_batch_size: int = 32
    """Evaluation batch size."""
    pad_to: int | None = None
    """Pad every evaluation sequence to this length (512 reproduces the official code); default: dynamic padding."""
    group_by_length: bool = True
    """Batch evaluation sequences of similar length together (less padding); --no-group-by-length batches in order."""
    seed: int = 0
    """Seed of the evaluation set, the training batch and the random weights."""
    threads: int | None = None
    """CPU threads per worker (default: PyTorch's, one per core)."""
    runtime: tuple[str, ...] = ("pytorch",)
    """Inference runtimes (alias --backend): pytorch (eager) and onnxruntime (the merged model traced to ONNX, CPU)."""
    precision: tuple[str, ...] = ("fp32",)
    """Precisions: fp32, bf16 (bf16 weights at inference, bf16 autocast in the training step; pytorch runtime, on a
    CPU with AVX512-BF16 or AMX or a CUDA GPU), auto (bf16 where the device computes it natively, else fp32)."""
    quantize: tuple[str, ...] = ("none",)
    """none, or int8: ONNX Runtime's dynamic int8 quantisation (onnxruntime runtime). Unsupported combinations of
    the three axes are skipped; a value in no supported one is an error."""
    tiny: bool = False
    """Tiny test-sized architectures (for tests and smoke runs; figures mean nothing)."""
    model: str | None = None
    """Any encoder instead of --families: a hub name, a folder or a config.json (counts need no weights)."""
    student: str | None = None
    """With --model: the KD-LoRA student, a hub name, folder or config.json, or derive:N / derive:I,J,K."""
    track_energy: bool = False
    """Energy (Wh) and emissions (g CO2-eq) of each evaluation, also per 1,000 predictions (codecarbon, offline;
    extra `energy`)."""

    def family_names(self) -> tuple[str, ...]:
        """The families measured: --families, or the one pair --model/--student name (registered here)."""
        if self.model is None:
            return self.families
        from kdlora.families import model_pair

        return (model_pair(self.model, self.student).name,)

    def validate(self) -> BenchSettings:
        """Check every field once; UserError naming the field and value. Returns self."""
        if self.student is not None and self.model is None:
            raise UserError("--student needs --model")
        if self.track_energy:
            from kdlora.meters import require_energy

            require_energy()
        for name in self.family_names():
            get_family(name)
        for name in self.methods:
            get_method(name)
        if not self.families or not self.methods or not self.ranks:
            raise UserError("families, methods and ranks must each name at least one")
        for rank in self.ranks:
            if rank <= 0:
                raise UserError(f"ranks: {rank} is not a positive integer")
        if self.device not in ("cpu", "cuda"):
            raise UserError(f"device: unknown device {self.device!r} (cpu or cuda)")
        for name in ("num_labels", "batch_size", "train_seq_len", "train_steps", "eval_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name}: {getattr(self, name)} is not a positive integer")
        if self.threads is not None and self.threads <= 0:
            raise UserError(f"threads: {self.threads} is not a positive integer")
        self.precision = tuple(dict.fromkeys(resolve_precision(p, self.device) for p in self.precision))
        self.forms()
        if self.pad_to is not None and self.pad_to < 128:
            raise UserError(f"pad_to: {self.pad_to} is shorter than the longest evaluation sentence (128 tokens)")
        return self

    def forms(self) -> list[tuple[str, str, str]]:
        """The supported (runtime, precision, quantize) combinations of the three axes (UserError if a value is in
        none; see `kdlora.bench.forms`)."""
        from kdlora.bench.forms import plan_forms

        return plan_forms(self.runtime, self.precision, self.quantize, self.device)


def _coerce(key: str, value, hint):
    """`value` as the field's type (bool, int, float, str, or None where allowed), else a UserError."""
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise UserError(f"config: {key} may not be empty")
    for kind in (bool, int, float, str):
        if kind.__name__ in text.replace("None", ""):
            break
    if kind is bool and not isinstance(value, bool):
        raise UserError(f"config: {key} must be true or false, got {value!r}")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float | str)):
        raise UserError(f"config: {key} must be a number, got {value!r}")
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"config: {key} must be {kind.__name__}, got {value!r}") from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise UserError(f"config: {key} must be a whole number, got {value!r}")
    return converted


def field_docs(cls=TrainConfig) -> dict[str, str]:
    """Each dataclass field's docstring (the string under it in the class body): the CLI's help text.

    Used for every settings dataclass (`TrainConfig`, `BenchSettings`), so field docs and `--help` never diverge.
    """
    import ast
    import inspect
    import textwrap

    docs = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):  # a method's settings too
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:], strict=False):
            if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and \
                    isinstance(after.value, ast.Constant):
                docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def _comma_list(kind):
    """An argparse type: `a,b,c` as a tuple of `kind`."""
    def parse(text: str) -> tuple:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        try:
            return tuple(kind(part) for part in parts)
        except ValueError:
            words = {int: "integers", float: "numbers"}.get(kind, "names")
            raise argparse.ArgumentTypeError(f"must be {words} separated by commas, got {text!r}") from None
    parse.__name__ = f"comma-separated {kind.__name__}"
    return parse


def add_settings_arguments(parser, cls, *, keep_defaults: bool = True, hidden: tuple[str, ...] = (),
                           aliases: dict[str, list[str]] | None = None,
                           choices: dict[str, tuple] | None = None) -> None:
    """Add one `--flag` per field of the settings dataclass `cls`; each field's docstring is its help.

    keep_defaults: the parser's defaults are the dataclass's; when False every flag defaults to None, so settings
    from a file can fill what the command line left out (`kdlora train --config`). Booleans are `--flag` (and
    `--no-flag` when the default is true); tuples are comma lists; `hidden` fields take no help line; `choices`
    limits a scalar field to the values given.
    """
    docs, hints, aliases, choices = field_docs(cls), get_type_hints(cls), aliases or {}, choices or {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        names = ["--" + f.name.replace("_", "-"), *aliases.get(f.name, [])]
        hint = str(hints[f.name])
        help_text = argparse.SUPPRESS if f.name in hidden else docs.get(f.name, "")
        parser_default = default if keep_defaults else None
        if "bool" in hint:
            action = argparse.BooleanOptionalAction if default is True else "store_true"
            parser.add_argument(*names, dest=f.name, action=action, default=parser_default, help=help_text)
            continue
        kind = int if "int" in hint else float if "float" in hint else str
        options = {"type": kind, **({"choices": choices[f.name]} if f.name in choices else {})}
        if "tuple" in hint:
            options = {"type": _comma_list(kind), "metavar": "A,B"}
            shown = f" (default: {','.join(map(str, default))})" if default else ""
        else:
            shown = "" if default is None else f" (default: {default})"
        if help_text is not argparse.SUPPRESS:
            help_text = (help_text + shown).replace("%", "%%")
        parser.add_argument(*names, dest=f.name, default=parser_default, help=help_text, **options)


def settings_from_args(cls, args: argparse.Namespace, values: dict | None = None) -> dict:
    """The fields of `cls` that `args` sets (not None), over `values` (settings read from a file, say)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {**(values or {}), **{k: v for k, v in vars(args).items() if k in names and v is not None}}
