"""The settings of one training run, validated once when made, and the run's key.

A run's settings are its own (`RunSettings`: task, model, data, schedule, precision, ...) and those of every
registered method (`kdlora.methods`: LoRA's rank, KD's temperature, AdaLoRA's budget, a plug-in's own), read as one
flat namespace: `config.rank`, `config.temperature`. A method's settings stay in the method's own file; the
registry is read when a config is made, so a method registered later (a plug-in) brings its settings, flags and
experiment keys with it. A settings class may also have `canonical(values)` (writes its values one way when a config
is made), `READ_BY` (who reads it: any other method given one of its settings is a UserError, not a silent no-op)
and `CONTENT_KEYED` (its settings naming a file, keyed by the file's content): the transfer settings have all three.

The key (`TrainConfig.key()`, `identity()`) holds what decides the run and nothing that only watches it. So that
adding a setting or a method never changes the key of a run already stored, a setting enters it only when it was
part of every key from the start (`FIRST_KEYED`, kept as it was), or when the run reads it (a run setting, or its
method's) and it differs from its default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from kdlora.data.file_tasks import file_task, spec_of
from kdlora.data.tasks import TASKS, get_task
from kdlora.errors import UserError
from kdlora.families import get_family
from kdlora.keys import run_key
from kdlora.methods import METHODS, get_method, settings_classes
from kdlora.precision import AUTO, PRECISIONS, resolve_precision
from kdlora.settings import coerce, field_default, field_hints

TRACKERS = ("tensorboard", "mlflow")
"""Experiment trackers `report_to` may name (accelerate's trackers of those names)."""

OBSERVERS = ("save_checkpoints", "report_to", "track_energy")
"""Settings that watch a run without changing what it computes: never part of its key."""

FIRST_KEYED = ("task", "family", "method", "seed", "epochs", "learning_rate", "batch_size", "max_length",
               "max_train_samples", "max_eval_samples", "warmup_ratio", "weight_decay", "patience", "teacher",
               "online_teacher", "student_init", "data_dir", "pretrained", "tiny", "device", "model", "student",
               "lora_targets", "train_file", "validation_file", "test_file", "text_columns", "label_column",
               "task_type", "metric", "precision", "grad_accum", "eval_steps",
               "rank", "lora_alpha", "lora_dropout", "use_rslora", "temperature", "kd_alpha")
"""The settings every run's key held, whatever its method, when the first stores were written: kept in every key
as they were, so those stores keep their keys (tests/test_run_keys.py opens one). Never add to it."""

RETIRED = {"use_dora": False}
"""Settings that left (DoRA became a method) and the value every key held for them: put back into every key."""


def method_setting_fields() -> dict[str, dataclasses.Field]:
    """Every registered method's settings fields by name, read from the registry now (plug-ins included)."""
    return {f.name: f for cls in settings_classes() for f in dataclasses.fields(cls)}


@dataclass(kw_only=True)
class RunSettings:
    """What every training run is set by, whatever its method. Each field's docstring is its CLI help."""

    task: str
    """GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli) or movie-snippets / movie-snippets-rating;
    with --train-file, the name of your task (default `custom`); with --dataset, its name (default the dataset's)."""
    family: str
    """Model family: bert, roberta, deberta, or minilm (offline real weights); with --model, a label for the
    model pair in reports (default: the model's name)."""
    method: str
    """The fine-tuning method, one of the registry's (`kdlora.methods`; the CLI's help lists them)."""
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
    group_by_length: bool = False
    """Batches of similar length (the Trainer's group_by_length): each epoch's random order cut into groups of 50
    batches, each group sorted by length, so dynamic padding pads less; the order still depends only on seed and
    epoch (a resumed run sees the same batches)."""
    save_checkpoints: bool = False
    """At each evaluation save RUN_DIR/checkpoints/last (and best): trainable weights, optimiser, scheduler, RNG
    states and the data position, so that `--resume` continues a killed run."""
    report_to: str | None = None
    """Trackers, comma-separated: tensorboard (RUN_DIR/tensorboard), mlflow ($MLFLOW_TRACKING_URI, else a file
    store in RUN_DIR/mlruns): per-step loss and learning rate, every evaluation, the config as hyper-parameters."""
    track_energy: bool = False
    """Measure energy (kWh) and emissions (g CO2-eq) with codecarbon's offline tracker (extra `energy`)."""


@dataclass(kw_only=True, init=False)
class TrainConfig(RunSettings):
    """Everything that decides one training run: its `RunSettings` and the settings of every registered method
    (`method_settings`, read flat: `config.rank`), each method's at its default unless given. Validated when
    made; `key()` identifies the run in the results store."""

    method_settings: dict = field(default_factory=dict, repr=False)
    """Every registered method's settings by name (this run's method reads its own; the others ride along)."""

    def __init__(self, *, method_settings: dict | None = None, **values):
        known = method_setting_fields()
        given = {**(method_settings or {}), **{k: values.pop(k) for k in list(values) if k in known}}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise UserError(f"config: unknown key {unknown[0]!r}")
        object.__setattr__(self, "method_settings",
                           {name: given.get(name, field_default(f)) for name, f in known.items()})
        for cls in settings_classes():  # a settings class may write its values one way (0 samples: none)
            if hasattr(cls, "canonical"):
                cls.canonical(self.method_settings)
        super().__init__(**values)
        self._validate()

    def __getattr__(self, name: str):
        settings = self.__dict__.get("method_settings")
        if settings is not None and name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name != "method_settings" and name in self.__dict__.get("method_settings", {}):
            self.method_settings[name] = value
        else:
            object.__setattr__(self, name, value)

    def _validate(self) -> None:
        """Validate once, when made: a UserError naming the first bad key and value."""
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
        method = get_method(self.method)
        for settings in method.settings:  # the method checks the settings it reads
            checks.update(settings.checks(self))
        for settings in (cls for cls in settings_classes() if hasattr(cls, "READ_BY") and cls not in method.settings):
            given = next((f.name for f in dataclasses.fields(settings)
                          if self.method_settings[f.name] != field_default(f)), None)
            if given is not None:  # a setting that changes what is trained must not be dropped without a word
                raise UserError(f"--{given.replace('_', '-')} is for {settings.READ_BY}, not method {self.method}")
        for key, ok in checks.items():
            if not ok:
                raise UserError(f"config: bad value for {key}: {getattr(self, key)!r}")

    def file_spec(self):
        """The spec of a task from data: a `FileTaskSpec` (--train-file ...) or a `DatasetSpec` (--dataset ...),
        else None; incomplete settings raise."""
        return spec_of(self)

    def task_spec(self):
        """The `Task` this run trains on: a built-in one by name, or the one its files define (read here)."""
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
    def setting_names(cls) -> list[str]:
        """Every setting a config takes by name: the run's own, then every registered method's."""
        return [f.name for f in dataclasses.fields(RunSettings)] + list(method_setting_fields())

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from plain values (JSON, YAML, CLI); unknown keys and wrong types are UserErrors."""
        names = cls.setting_names()
        unknown = sorted(set(values) - set(names) - {"method_settings"})
        if unknown:
            raise UserError(f"config: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
        missing = [f.name for f in dataclasses.fields(RunSettings)
                   if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            raise UserError(f"config: missing key {missing[0]!r}")
        hints = field_hints(RunSettings, *settings_classes())
        return cls(**{k: coerce(k, v, hints[k]) for k, v in values.items() if k != "method_settings"})

    def to_dict(self) -> dict:
        """Every setting by name, flat (a run folder's and the store's record of it)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(RunSettings)}
        return {**values, **self.method_settings}

    def reads(self) -> set[str]:
        """The settings this run reads: its own and its method's."""
        own = {f.name for f in dataclasses.fields(RunSettings)}
        return own | {f.name for cls in get_method(self.method).settings for f in dataclasses.fields(cls)}

    def identity(self) -> dict:
        """What tells this run apart in the store: `FIRST_KEYED` as always, plus every other setting the run
        reads at a value other than its default, with `RETIRED` put back; a task from files by its files'
        content hash, not their paths (edited data is a new run; the same data elsewhere is not), and so a file a
        method's setting names (its settings class's `CONTENT_KEYED`: the transfer file); one from a dataset by its
        splits' fingerprints, not its name. What only watches a run (`OBSERVERS`) is never in it."""
        values, reads = self.to_dict(), self.reads()
        defaults = {f.name: field_default(f) for f in dataclasses.fields(RunSettings)}
        defaults.update({name: field_default(f) for name, f in method_setting_fields().items()})
        kept = {k: values[k] for k in FIRST_KEYED}
        kept.update({k: v for k, v in values.items() if k not in FIRST_KEYED and k not in OBSERVERS
                     and k in reads and v != defaults[k]})
        kept = {**RETIRED, **kept}
        for settings in get_method(self.method).settings:
            for name in getattr(settings, "CONTENT_KEYED", ()):
                if kept.get(name) is not None:
                    from kdlora.data.file_tasks import sha256_of

                    kept[f"{name}_sha256"] = sha256_of(kept.pop(name))
        spec = self.file_spec()
        if spec is not None:
            kept = {k: v for k, v in kept.items() if k not in spec.LOCATION}
            kept[spec.FINGERPRINT] = spec.fingerprint()
        return kept

    def key(self, num_processes: int = 1) -> str:
        """The run's key in the results store (`kdlora.keys.run_key` of `identity()` and the number of training
        processes, which multiplies the effective batch)."""
        return run_key("train", self.identity(), num_processes)


def method_help() -> str:
    """The `--method` help: each registered method's name and what it is, from the registry."""
    return "; ".join(f"{m.name} ({m.summary})" for m in METHODS.values())
