"""Which model and tokenizer a run starts from: pretrained weights, a tiny random build, or a derived student."""

from __future__ import annotations

import contextlib

from kdlora.errors import UserError


@contextlib.contextmanager
def new_head_expected():
    """Silence transformers' load report while loading an encoder whose task head is new by design."""
    from transformers.utils import logging

    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


def load_pretrained(source: str, num_labels: int, architecture=None):
    """(model, tokenizer) from a hub name or folder, with a fresh `num_labels` head; errors name the source."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        with new_head_expected():
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels)
    except OSError as exc:
        hint = f" (the {architecture.display_name} weights)" if architecture else ""
        raise UserError(f"cannot load {source}{hint}: {str(exc).splitlines()[0]}; pass --pretrained with a local "
                        "folder") from None
    return model, tokenizer


def default_source(architecture) -> str:
    """Where an architecture's pretrained weights come from: its pip package when it has one, else the hub."""
    return architecture.weights_path() if architecture.weights_package else architecture.hub_name


def starting_model(config, task, family, method):
    """(model, tokenizer, base) for `config`: `base` names the weights a LoRA adapter sits on, or is None when
    they exist only in memory (tiny random builds, derived students) and the run must save them."""
    from kdlora.data.encode import tiny_tokenizer

    architecture = family.architecture(method.role)
    num_labels = task.num_labels
    if architecture.derived:
        from kdlora.families import derive_student

        if config.student_init == "trained":
            if not config.teacher:
                raise UserError(f"the {family.name} student is cut from the trained FFT teacher: pass --teacher "
                                "RUN_DIR (or --student-init pretrained)")
            from kdlora.rundir import load_model, load_tokenizer

            teacher, tokenizer = load_model(config.teacher, merged=True), load_tokenizer(config.teacher)
            if teacher.config.num_labels != num_labels:
                raise UserError(f"{config.teacher}: teacher has {teacher.config.num_labels} labels, task "
                                f"{task.name} needs {num_labels}")
        elif config.tiny:
            teacher, tokenizer = family.teacher.build(num_labels, tiny=True), tiny_tokenizer()
        else:
            teacher, tokenizer = load_pretrained(config.pretrained or default_source(family.teacher), num_labels,
                                                 family.teacher)
        return derive_student(teacher), tokenizer, None
    if config.tiny:
        return architecture.build(num_labels, tiny=True), tiny_tokenizer(), None
    source = config.pretrained or default_source(architecture)
    model, tokenizer = load_pretrained(source, num_labels, architecture)
    return model, tokenizer, source
