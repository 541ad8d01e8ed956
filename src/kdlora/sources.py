"""What a training run starts from: the model its method fine-tunes (pretrained, tiny random, or a student cut
from a teacher) and the tokenizer it encodes with.

It reads trained teacher runs (`kdlora.rundir`) and builds with `kdlora.modeling`; neither imports this module.
"""

from __future__ import annotations

from kdlora.errors import UserError
from kdlora.modeling import default_source, derive_student, load_pretrained
from kdlora.rundir import load_model, load_tokenizer


def starting_model(config, task, family, method):
    """(model, tokenizer, base) for `config`: `base` names the weights a LoRA adapter sits on, or is None when
    they exist only in memory (tiny random builds, derived students) and the run must save them."""
    from kdlora.data.encode import tiny_tokenizer

    architecture = family.architecture(method.role)
    num_labels = task.num_labels
    if architecture.derived:
        if config.student_init == "trained":
            if not config.teacher:
                raise UserError(f"the {family.name} student is cut from the trained FFT teacher: pass --teacher "
                                "RUN_DIR (or --student-init pretrained)")
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
