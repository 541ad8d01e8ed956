"""What a training run starts from: the model its method fine-tunes (a named family's, any encoder given by
`--model`/`--student`, a tiny random build, or a student cut from a teacher), its tokenizer, and its teacher (a
kdlora run folder or any sequence-classification checkpoint).

It reads run folders (`kdlora.rundir`) and builds with `kdlora.modeling`; neither imports this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kdlora.data.encode import tiny_tokenizer
from kdlora.data.tasks import get_task
from kdlora.errors import UserError
from kdlora.families import weights_folders
from kdlora.files import inside, read_json, unreadable_is_damage
from kdlora.modeling import (
    default_source,
    derive_student,
    encoder_layers,
    layers_to_keep,
    load_pretrained,
    parse_student,
)
from kdlora.rundir import base_source, check_run, is_run_folder, load_model, load_tokenizer


@dataclass
class Start:
    """The model a run fine-tunes and where it came from."""

    model: object
    tokenizer: object
    base: str | None
    """The weights a LoRA adapter sits on, as run.json names them (a hub name, or a weights package's folder), or
    None when the run must keep them in its own folder: they exist only in memory (tiny builds, derived students),
    or in a local folder a run may not name (`kdlora.rundir`)."""
    missing: tuple[str, ...] = ()
    """Parameters the checkpoint did not provide: they train (see `modeling.new_modules`)."""
    description: str = ""
    """What was built, for the run's record: `bert-base-uncased`, `derived: layers 0,2,4 of runs/fft`."""
    kept: tuple[int, ...] | None = None
    """A student cut from a teacher: the teacher's encoder layers it kept (0-based), else None."""


def adapter_base(source: str) -> str | None:
    """How a run names the base weights it loaded from `source`: a hub name as it is, a weights package's folder
    as an absolute path; None for any other local folder (the run keeps a copy: it names nothing outside itself)."""
    if not Path(source).is_dir():
        return source
    return str(Path(source).resolve()) if Path(source).resolve() in weights_folders() else None


def label_names(model_config) -> tuple[str, ...] | None:
    """The class names a model config carries, or None when they are transformers' placeholders (LABEL_0)."""
    id2label = getattr(model_config, "id2label", None) or {}
    names = tuple(str(id2label[i]) for i in sorted(id2label, key=int))
    if not names or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return None
    return names


def load_teacher(ref: str, task=None, tokenizer_only: bool = False):
    """(model, tokenizer) of a teacher: a kdlora run folder (its merged model) or any sequence-classification
    checkpoint, hub name or folder, fine-tuned on the task. With `task`, labels must match (count and, where both
    have names, the names in order). `tokenizer_only` returns (None, tokenizer)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if is_run_folder(ref):
        tokenizer = load_tokenizer(ref)
        model = None if tokenizer_only else load_model(ref, merged=True)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(ref)
            model = None if tokenizer_only else AutoModelForSequenceClassification.from_pretrained(ref).eval()
        except (OSError, ValueError) as exc:
            raise UserError(f"--teacher {ref}: neither a kdlora run folder nor a loadable sequence-classification "
                            f"checkpoint ({str(exc).splitlines()[0]})") from None
    if model is not None and task is not None:
        check_teacher(ref, *teacher_identity(ref), task)
    return model, tokenizer


def teacher_config(ref: str):
    """The teacher's transformers config (labels included) without loading its weights."""
    from transformers import AutoConfig

    if is_run_folder(ref):
        info = check_run(ref, verify_files=False)  # checked whole before training starts (train.check_before_work)
        if info.get("kind") not in ("full", "adapter"):
            raise UserError(f"--teacher {ref}: the run kept no model (run.json kind {info.get('kind')!r})")
        folder = inside(ref, "model", f"{ref} holds") if info["kind"] == "full" else base_source(ref, info)
        with unreadable_is_damage(Path(folder), "teacher's model config"):
            config = AutoConfig.from_pretrained(str(folder), num_labels=info["num_labels"])
        if info.get("id2label") and info["kind"] != "full":
            config.id2label = {int(i): n for i, n in info["id2label"].items()}
        return config
    try:
        return AutoConfig.from_pretrained(ref)
    except (OSError, ValueError) as exc:
        raise UserError(f"--teacher {ref}: neither a kdlora run folder nor a loadable checkpoint "
                        f"({str(exc).splitlines()[0]})") from None


def check_teacher(teacher: str, teacher_task: str | None, teacher_labels: tuple, task) -> None:
    """UserError, one line naming both, when a teacher's task, number of labels or label names are not the run's.

    `teacher_labels` are the teacher's class names in label order (only their count matters when unnamed);
    `teacher_task` may be None for a checkpoint that does not say which task it was trained on.
    """
    mine = tuple(task.label_names) or ("value",) * task.num_labels
    problems = []
    if teacher_task is not None and teacher_task != task.name:
        problems.append(f"task {teacher_task}")
    if len(teacher_labels) != len(mine):
        problems.append(f"{len(teacher_labels)} labels")
    elif any(not _generic(name) for name in teacher_labels) and tuple(teacher_labels) != mine and task.label_names:
        problems.append(f"labels {', '.join(teacher_labels)}")
    if problems:
        raise UserError(f"--teacher {teacher}: teacher has {' and '.join(problems)}; this run is task {task.name} "
                        f"with {task.num_labels} labels ({', '.join(mine)})")


def _generic(name: str) -> bool:
    return name.upper().startswith("LABEL_") or name == "value"


def teacher_identity(ref: str) -> tuple[str | None, tuple[str, ...]]:
    """(task, label names) of a teacher: a kdlora run folder's task from its metrics.json (None for any other
    checkpoint), and its class names from its config (`LABEL_i` where unnamed; a run folder's task names them)."""
    config = teacher_config(ref)
    names = label_names(config) or tuple(f"LABEL_{i}" for i in range(config.num_labels))
    task_name = read_json(ref, "metrics.json").get("task") if is_run_folder(ref) else None
    if task_name is not None and label_names(config) is None:
        try:
            known = get_task(task_name).label_names
        except UserError:  # a task from files: its names are in the config when it had any
            known = ()
        if len(known) == len(names):
            names = tuple(known)
    return task_name, names


def teacher_files(ref: str) -> list[Path]:
    """The files that decide a teacher's logits, for the logit cache's fingerprint."""
    folder = Path(ref)
    if is_run_folder(folder):
        return sorted(folder.glob("*/*.safetensors")) + [folder / "run.json"]
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(ref, local_files_only=True))
    return sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin"), folder / "config.json"])


def starting_model(config, task, family, method) -> Start:
    """The model `config`'s method fine-tunes, with a `task.num_labels` head."""
    if config.model is not None:
        return _any_encoder(config, task, method)

    architecture = family.architecture(method.role)
    num_labels = task.num_labels
    if architecture.derived:
        missing = ()
        if config.student_init == "trained":
            if not config.teacher:
                raise UserError(f"the {family.name} student is cut from the trained FFT teacher: pass --teacher "
                                "RUN_DIR (or --student-init pretrained)")
            teacher, tokenizer = load_teacher(config.teacher, task)
            origin = config.teacher
        elif config.tiny:
            teacher, tokenizer, origin = family.teacher.build(num_labels, tiny=True), tiny_tokenizer(), "tiny"
        else:
            origin = config.pretrained or default_source(family.teacher)
            teacher, tokenizer, missing = load_pretrained(origin, num_labels, family.teacher)
        return _cut(teacher, tokenizer, None, missing, origin)
    if config.tiny:
        return Start(architecture.build(num_labels, tiny=True), tiny_tokenizer(), None, (), "tiny random build")
    source = config.pretrained or default_source(architecture)
    model, tokenizer, missing = load_pretrained(source, num_labels, architecture)
    return Start(model, tokenizer, adapter_base(source), missing, source)


def _cut(teacher, tokenizer, keep, missing, origin: str) -> Start:
    kept = layers_to_keep(len(encoder_layers(teacher)), keep)
    student = derive_student(teacher, kept)
    return Start(student, tokenizer, None, missing, f"layers {','.join(map(str, kept))} of {origin}", tuple(kept))


def _any_encoder(config, task, method) -> Start:
    """--model (what FFT and LoRA train, the teacher) and --student (what KD-LoRA trains)."""
    if config.tiny:
        raise UserError("--tiny builds a named family's model; with --model pass a small model's folder")
    if method.role == "teacher":
        model, tokenizer, missing = load_pretrained(config.model, task.num_labels, flag="--model")
        return Start(model, tokenizer, adapter_base(config.model), missing, config.model)
    how = parse_student(config.student)
    if isinstance(how, str):
        model, tokenizer, missing = load_pretrained(how, task.num_labels, flag="--student")
        return Start(model, tokenizer, adapter_base(how), missing, how)
    if config.teacher and config.student_init == "trained":
        teacher, tokenizer = load_teacher(config.teacher, task)
        return _cut(teacher, tokenizer, how, (), config.teacher)
    teacher, tokenizer, missing = load_pretrained(config.model, task.num_labels, flag="--model")
    return _cut(teacher, tokenizer, how, missing, config.model)
