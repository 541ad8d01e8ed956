"""Experiment files: a TOML grid of train runs (tasks x families x methods x ranks x seeds) and a bench section.

```toml
name = "default"
description = "what it is for"

[resources]            # what one run needs from an executor (Ray schedules by it)
num_cpus = 1
num_gpus = 0

[train]
tasks = ["movie-snippets"]
families = ["minilm"]
methods = ["fft", "lora", "kd-lora"]
ranks = [8]            # LoRA methods only; FFT runs once per (task, family, seed)
seeds = [42, 43]
teacher = "best"       # KD-LoRA's FFT teacher: the best configuration by dev score (default), or "first"

[train.params]         # any `kdlora train` setting, shared by every run; a list is a grid axis
epochs = 1
learning_rate = [1e-4, 3e-4]   # two configurations per (task, family, method, rank, seed)

[train.per_method.fft] # settings for one method only
learning_rate = 1e-4

[train.by_precision.fp32]  # settings where the runs' precision resolves to fp32 (`precision = "auto"` on a CPU
max_train_samples = 800    # without bf16 units): a main job can fit its time on either kind of machine

[bench]                # any `kdlora bench` setting; one bench run per family
families = ["bert", "roberta", "deberta"]

[search]               # ranges for `kdlora sweep EXP --search optuna` (see kdlora.sweep.search)
learning_rate = { low = 1e-4, high = 1e-3, log = true }
rank = [8, 16]

[tasks.reviews]        # a task from your files, used by name in [train] tasks like a built-in one
train_file = "data/train.csv"   # relative to this file
validation_file = "data/dev.csv"
text_columns = "review"         # or "question,answer" for a pair task
label_column = "verdict"

[tasks.imdb]           # a task from a dataset (`kdlora train --dataset`): a hub name or a folder relative to this file
dataset = "imdb"
validation_split = "test"
text_columns = "text"           # label_column defaults to "label"
```

A setting whose value is a list is an axis of the grid: the runs of a method are the product of its axes
(`[train.params]` and its `[train.per_method]` together, the latter winning), each a configuration of its own in
the store. `[train.by_precision.P]` applies where the precision in effect (`auto` resolved on this machine) is P,
between the two. A distilling method's teacher is an FFT run of the same task, family and seed: with
`teacher = "best"` (default) the FFT configuration with the best dev score, chosen when those runs are done (as the
paper's teacher is its best fine-tuned model); with `teacher = "first"` FFT's first configuration (list the teacher's
values first).

Loaded once, validated at the edge: an unknown key or a bad value is a UserError naming the file and the key.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from kdlora.data.dataset_tasks import DATASET_SETTINGS
from kdlora.data.file_tasks import FILE_SETTINGS, SHARED_SETTINGS
from kdlora.data.tasks import TASKS
from kdlora.errors import UserError
from kdlora.families import get_family
from kdlora.methods import get_method, paper_methods
from kdlora.precision import PRECISIONS, resolve_precision
from kdlora.search_space import parse_space

# Train settings the grid itself sets: they may not appear under [train.params].
GRID_KEYS = ("task", "family", "method", "rank", "seed", "teacher")
TEACHERS = ("best", "first")
"""Which FFT configuration a grid's distilling runs learn from: the best by dev score, or the first listed."""


@dataclass(frozen=True)
class Resources:
    """What one run asks of an executor."""

    num_cpus: float = 1
    """CPU cores per run (Ray's `num_cpus`)."""
    num_gpus: float = 0
    """GPUs per run (Ray's `num_gpus`; fractions share a GPU)."""


@dataclass(frozen=True)
class TrainGrid:
    """The train runs: every combination of the lists below, with shared and per-method settings."""

    tasks: tuple[str, ...]
    """Task names (`kdlora train --task`)."""
    families: tuple[str, ...]
    """Model families; each gives the teacher (FFT, LoRA) and the student (KD-LoRA)."""
    methods: tuple[str, ...] = paper_methods()
    """Methods; KD-LoRA's FFT teacher runs even when `fft` is not listed."""
    ranks: tuple[int, ...] = (8,)
    """LoRA ranks (LoRA methods only)."""
    seeds: tuple[int, ...] = (42,)
    """Seeds; every (task, family, method, rank) runs once per seed."""
    params: dict = field(default_factory=dict)
    """Settings shared by every run (`TrainConfig` fields)."""
    per_method: dict = field(default_factory=dict)
    """Settings for one method only, by method name; they win over `params`."""
    teacher_choice: str = "best"
    """The file's `teacher` key: which FFT run a distilling method learns from (`TEACHERS`): `best`, the configuration
    with the best dev score among FFT's runs of the same (task, family, seed), or `first`, FFT's first configuration."""
    by_precision: dict = field(default_factory=dict)
    """Settings by the precision in effect (fp32, bf16, fp16; `auto` resolved here); `per_method` wins over them."""

    def configurations(self, method: str) -> list[dict]:
        """The method's settings, one dict per configuration: the product of every list-valued setting."""
        values = self.settings(method)
        axes = [name for name, value in values.items() if isinstance(value, list)]
        return [{**values, **dict(zip(axes, point, strict=True))}
                for point in itertools.product(*(values[name] for name in axes))]

    def settings(self, method: str) -> dict:
        """`params`, then what `by_precision` says for the precision these runs resolve to, then `per_method`."""
        values = {**self.params, **self.per_method.get(method, {})}
        if self.by_precision and isinstance(values.get("precision", "fp32"), str):
            precision = resolve_precision(values.get("precision", "fp32"), values.get("device"))
            values = {**self.params, **self.by_precision.get(precision, {}), **self.per_method.get(method, {})}
        return values

    def axes(self, method: str) -> tuple[str, ...]:
        """The settings the method's configurations differ in."""
        values = self.settings(method)
        return tuple(name for name, value in values.items() if isinstance(value, list) and len(value) > 1)


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment file."""

    name: str
    description: str = ""
    train: TrainGrid | None = None
    bench: dict | None = None
    """`BenchSettings` fields; `families` splits it into one bench run per family."""
    resources: Resources = Resources()
    tasks: dict = field(default_factory=dict)
    """Tasks from files or datasets by name: `TrainConfig` settings (train_file or dataset, text_columns, ...),
    paths absolute."""
    source: str = ""
    """Where it was read from (for messages)."""
    search: tuple | None = None
    """`[search]`: the ranges of a hyper-parameter search (`kdlora.search_space.Range`s), if any."""


BUNDLED = ("default", "paper")


def bundled_path(name: str):
    return resources.files("kdlora").joinpath("experiments", f"{name}.toml")


def load_experiment(name_or_path: str | Path | None = None) -> Experiment:
    """Read an experiment file, or a bundled one by name (`default`, `paper`)."""
    name_or_path = str(name_or_path or "default")
    path = Path(name_or_path)
    if path.is_file():
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: cannot read experiment file ({exc})") from None
    elif name_or_path in BUNDLED:
        text, source = bundled_path(name_or_path).read_text(encoding="utf-8"), f"{name_or_path} (bundled)"
    else:
        raise UserError(f"{name_or_path}: no such experiment file (bundled: {', '.join(BUNDLED)})")
    return parse_experiment(text, source)


def parse_experiment(text: str, source: str = "<experiment>") -> Experiment:
    """Parse and validate experiment TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: not valid TOML ({exc})") from None
    where = _Where(source)
    where.check_keys(data, ("name", "description", "train", "bench", "resources", "tasks", "search"), "")
    train = data.get("train")
    bench = data.get("bench")
    if train is None and bench is None:
        raise UserError(f"{source}: the experiment has neither a [train] nor a [bench] section")
    return Experiment(
        name=where.string(data, "name", "", default=Path(source.split(" ")[0]).stem),
        description=where.string(data, "description", "", default=""),
        train=_train_grid(train, where) if train is not None else None,
        bench=dict(where.table(data, "bench", "")) if bench is not None else None,
        resources=_resources(data.get("resources", {}), where),
        tasks=_file_tasks(where.table(data, "tasks", "", default={}), where),
        source=source,
        search=parse_space(where.table(data, "search", ""), source) if "search" in data else None,
    )


def _train_grid(train, where: _Where) -> TrainGrid:
    where.table({"train": train}, "train", "")
    where.check_keys(train, ("tasks", "families", "methods", "ranks", "seeds", "teacher", "params", "per_method",
                             "by_precision"), "train")
    for required in ("tasks", "families"):
        if required not in train:
            raise UserError(f"{where.source}: [train] needs `{required}`")
    tasks, families = where.strings(train, "tasks", "train"), where.strings(train, "families", "train")
    for name in families:
        where.wrap("train.families", lambda n=name: get_family(n))
    methods = [where.wrap("train.methods", lambda m=m: get_method(m)).name
               for m in where.strings(train, "methods", "train", default=paper_methods())]
    params = dict(where.table(train, "params", "train", default={}))
    per_method = {}
    for method_name, values in where.table(train, "per_method", "train", default={}).items():
        method = where.wrap("train.per_method", lambda m=method_name: get_method(m)).name
        per_method[method] = dict(where.table({method_name: values}, method_name, "train.per_method"))
    by_precision = {}
    for name, values in where.table(train, "by_precision", "train", default={}).items():
        if name not in PRECISIONS:
            raise UserError(f"{where.source}: [train.by_precision] unknown precision {name!r} (choose from "
                            f"{', '.join(PRECISIONS)})")
        by_precision[name] = dict(where.table({name: values}, name, "train.by_precision"))
        if "precision" in by_precision[name]:
            raise UserError(f"{where.source}: [train.by_precision.{name}] may not set `precision` itself")
    for section, values in (("train.params", params), *((f"train.per_method.{m}", v) for m, v in per_method.items()),
                            *((f"train.by_precision.{p}", v) for p, v in by_precision.items())):
        for key in GRID_KEYS:
            if key in values:
                raise UserError(f"{where.source}: [{section}] `{key}` is set by the grid, not here")
        for key, value in values.items():
            if isinstance(value, list) and not value:
                raise UserError(f"{where.source}: [{section}] {key} = [] is an empty grid axis")
    return TrainGrid(
        tasks=tasks, families=families, methods=tuple(dict.fromkeys(methods)),
        ranks=where.integers(train, "ranks", "train", default=(8,), positive=True),
        seeds=where.integers(train, "seeds", "train", default=(42,)),
        params=params, per_method=per_method, teacher_choice=_teacher(train, where), by_precision=by_precision,
    )


def _teacher(train: dict, where: _Where) -> str:
    value = where.string(train, "teacher", "train", default="best")
    if value not in TEACHERS:
        raise UserError(f"{where.source}: [train] teacher = {value!r} is not one of {', '.join(TEACHERS)}")
    return value


def _file_tasks(tables: dict, where: _Where) -> dict[str, dict]:
    """`[tasks.NAME]` tables: the `kdlora train --train-file ...` (or `--dataset ...`) settings of a task from files
    (or a dataset), by name."""
    folder = Path(where.source.split(" ")[0]).resolve().parent
    tasks = {}
    for name, values in tables.items():
        section = f"tasks.{name}"
        where.table({name: values}, name, "tasks")
        from_dataset = "dataset" in values
        where.check_keys(values, ("dataset", *DATASET_SETTINGS, *SHARED_SETTINGS) if from_dataset else FILE_SETTINGS,
                         section)
        if name.strip().lower() in TASKS:
            raise UserError(f"{where.source}: [{section}] {name!r} is a built-in task; give yours another name")
        required = ("text_columns",) if from_dataset else ("train_file", "validation_file", "text_columns",
                                                          "label_column")
        for key in required:
            if key not in values:
                raise UserError(f"{where.source}: [{section}] needs `{key}`")
        task = {}
        for key, value in values.items():
            if key == "text_columns" and isinstance(value, list):
                value = ",".join(map(str, value))
            value = where.string(values | {key: value}, key, section)
            local = key.endswith("_file") or (key == "dataset" and (folder / value).exists())
            task[key] = str(folder / value) if local else value
        tasks[name] = task
    return tasks


def _resources(values, where: _Where) -> Resources:
    where.table({"resources": values}, "resources", "")
    where.check_keys(values, ("num_cpus", "num_gpus"), "resources")
    found = {}
    for key in ("num_cpus", "num_gpus"):
        if key in values:
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise UserError(f"{where.source}: [resources] {key} = {value!r} is not a number >= 0")
            found[key] = value
    return Resources(**found)


class _Where:
    """Validation helpers whose errors name the file, the section and the key."""

    def __init__(self, source: str):
        self.source = source

    def _name(self, section: str, key: str) -> str:
        return f"[{section}] {key}" if section else key

    def check_keys(self, values: dict, known, section: str) -> None:
        for key in values:
            if key not in known:
                raise UserError(f"{self.source}: unknown key {self._name(section, key)!r} "
                                f"(known: {', '.join(known)})")

    def wrap(self, section: str, check):
        try:
            return check()
        except UserError as exc:
            raise UserError(f"{self.source}: [{section}] {exc}") from None

    def string(self, values, key, section, default=None) -> str:
        value = values.get(key, default)
        if not isinstance(value, str):
            raise UserError(f"{self.source}: {self._name(section, key)} = {value!r} is not a string")
        return value

    def table(self, values, key, section, default=None) -> dict:
        value = values.get(key, default)
        if not isinstance(value, dict):
            raise UserError(f"{self.source}: {self._name(section, key)} = {value!r} is not a table")
        return value

    def strings(self, values, key, section, default=None) -> tuple[str, ...]:
        value = values.get(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) and v for v in value):
            raise UserError(f"{self.source}: {self._name(section, key)} = {value!r} is not a non-empty list of names")
        return tuple(dict.fromkeys(value))

    def integers(self, values, key, section, default=None, positive=False) -> tuple[int, ...]:
        value = values.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        ok = isinstance(value, list | tuple) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and (v > 0 or not positive) for v in value)
        if not ok:
            kind = "positive integers" if positive else "integers"
            raise UserError(f"{self.source}: {self._name(section, key)} = {value!r} is not a non-empty list of {kind}")
        return tuple(dict.fromkeys(value))
